"""Decode speed of the bundled model by llama.cpp thread count, on an idle or a busy machine.

    python bench/threads_bench.py [--model qwen2.5-coder-0.5b] [--threads 1 2] [--load 0] [--reps 3]

llama.cpp's threads meet at a barrier for every layer: one that is off its CPU stalls the rest, so
the best thread count depends on what else the machine runs (the kernels of a run, other jobs).
``--load N`` starts N busy-looping processes at nice 10 for the measurement (a shared machine);
the thread counts are alternated within each repetition so that a change of load hits both alike.
Prints tokens/s per repetition, the medians and their ratio to the first thread count; figures go to
``MATHAGENT_LLAMA_THREADS`` (agent/llama_server.py).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time

PROMPT = "Write a short Python function that checks whether a number is prime, with comments.\n"


def _spin() -> None:
    os.nice(10)
    while True:
        pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--load", type=int, default=0, help="busy processes at nice 10 while measuring")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=64)
    args = ap.parse_args(argv)

    from llama_cpp import Llama
    from mathagent.agent.models import model_path

    path = str(model_path(args.model))
    models = {
        n: Llama(model_path=path, n_threads=n, n_threads_batch=n, n_ctx=1024, verbose=False)
        for n in args.threads
    }
    spinners = [mp.Process(target=_spin, daemon=True) for _ in range(args.load)]
    for p in spinners:
        p.start()
    speeds: dict[int, list[float]] = {n: [] for n in args.threads}
    try:
        for rep in range(args.reps):
            for n, m in models.items():
                m.reset()
                t0 = time.perf_counter()
                out = m(PROMPT, max_tokens=args.tokens, temperature=0)
                dt = time.perf_counter() - t0
                speeds[n].append(out["usage"]["completion_tokens"] / dt)
                print(f"rep {rep} threads {n}: {speeds[n][-1]:.1f} tokens/s ({dt:.1f} s)", flush=True)
    finally:
        for p in spinners:
            p.kill()
    base = statistics.median(speeds[args.threads[0]])
    print(
        f"{args.model}, {os.cpu_count()} CPUs, {args.load} busy processes at nice 10, load {os.getloadavg()[0]:.1f}:"
    )
    for n, xs in speeds.items():
        med = statistics.median(xs)
        print(f"  threads {n}: median {med:.1f} tokens/s, x{med / base:.2f} of threads {args.threads[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
