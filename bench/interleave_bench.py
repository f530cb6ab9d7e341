"""Trajectories interleaved on a one-request-at-a-time server: does a second trajectory pay?

    python bench/interleave_bench.py [--model qwen2.5-coder-0.5b] [--dataset gsm8k-train] [--problems 6]
        [--concurrency 1 2] [--reps 2] [--mode loop+verify] [--threads 1] [--json FILE]

The bundled llama-cpp-python server decodes one request at a time and keeps ONE KV state: a request
whose prompt extends the last one evaluated reads only its new tokens, any other request re-reads
its whole prompt past the part it shares with the last one (for two different problems: the system
prompt). ``mathagent eval`` runs ``max-inflight + 1/4`` trajectories by default (2 for such a server),
so that one trajectory's model call overlaps the other's code cells; the price is that the two
trajectories take turns on the server and each call re-reads its conversation.

This runs the real ``mathagent eval`` (real sandboxed kernels, the bundled model at temperature 0,
``MATHAGENT_LLAMA_THREADS`` decode threads) on the same seeded problems once per concurrency, in
alternating order over ``--reps`` repetitions (1 2, 2 1, ...), each in a fresh run folder with its own
server, and prints wall seconds, samples/s, tokens in/out, and whether the answers are the same. The
method study's evals are paused meanwhile (``throughput_bench.pause_study``) and always resumed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput_bench import pause_study, resume_study, save_json  # noqa: E402


def run_once(args: argparse.Namespace, concurrency: int, run_dir: Path) -> dict[str, Any]:
    cmd = [
        sys.executable, "-m", "mathagent.agent.cli", "eval", "--dataset", args.dataset,
        "--limit", str(args.problems), "--shuffle", "--seed", str(args.seed), "--k", "1",
        "--temperature", "0", "--model", args.model, "--mode", args.mode,
        "--concurrency", str(concurrency), "--run-dir", str(run_dir), "--json",
    ]  # fmt: skip
    env = {**os.environ, "MATHAGENT_LLAMA_THREADS": str(args.threads)}
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"eval failed (rc {proc.returncode}):\n{proc.stderr[-2000:]}")
    recs = [json.loads(x) for x in (run_dir / "samples.jsonl").read_text().splitlines() if x.strip()]
    return {
        "concurrency": concurrency,
        "wall_s": round(wall, 2),
        "samples": len(recs),
        "samples_per_s": round(len(recs) / wall, 4),
        "tokens_in": sum(int(r.get("tokens_in") or 0) for r in recs),
        "tokens_out": sum(int(r.get("tokens_out") or 0) for r in recs),
        "correct": sum(bool(r.get("correct")) for r in recs),
        "answers": {f"{r['problem_id']}": r.get("answer") for r in recs},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--dataset", default="gsm8k-train")
    ap.add_argument("--problems", type=int, default=6)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--mode", default="loop+verify")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-pause-study", dest="pause_study", action="store_false")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="interleave-") as tmp:
        try:
            if args.pause_study:
                pause_study()
            for rep in range(args.reps):
                order = args.concurrency if rep % 2 == 0 else list(reversed(args.concurrency))
                for c in order:
                    r = run_once(args, c, Path(tmp) / f"c{c}-r{rep}")
                    r["rep"] = rep
                    results.append(r)
                    print(
                        f"rep {rep} concurrency {c}: {r['wall_s']} s, {r['samples']} samples, "
                        f"tokens in {r['tokens_in']} out {r['tokens_out']}, correct {r['correct']}",
                        flush=True,
                    )
        finally:
            resume_study()
    print(
        f"\n{args.model} {args.mode} on {args.problems} {args.dataset} problems, T=0, {args.threads} thread(s)"
    )
    print("| concurrency | runs | wall s (each) | median samples/s | tokens out | answers same as first |")
    print("|---|---|---|---|---|---|")
    first = results[0]["answers"]
    by_c: dict[int, list[dict[str, Any]]] = {}
    for r in results:
        by_c.setdefault(r["concurrency"], []).append(r)
    for c, rs in by_c.items():
        same = sum(r["answers"] == first for r in rs)
        print(
            f"| {c} | {len(rs)} | {', '.join(str(r['wall_s']) for r in rs)} | "
            f"{statistics.median(r['samples_per_s'] for r in rs):.4f} | "
            f"{', '.join(str(r['tokens_out']) for r in rs)} | {same}/{len(rs)} |"
        )
    if len(by_c) == 2:
        (a, ra), (b, rb) = by_c.items()
        ratio = statistics.median(r["wall_s"] for r in rb) / statistics.median(r["wall_s"] for r in ra)
        print(f"\nmedian wall, concurrency {b} / concurrency {a}: x{ratio:.2f}")
    save_json(args, runs=results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
