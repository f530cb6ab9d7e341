"""Run the fake OpenAI-compatible server (tests/agent/fakeserver.py) standalone, or measure backend overhead.

    python bench/fake_openai_server.py serve --text "The answer is 42." --latency 0.05 [--port 8011]
    python bench/fake_openai_server.py overhead --requests 200 --latency 0.02 --concurrency 8

``overhead`` sends requests through :class:`OpenAIBackend` to the fake server and prints the mean
wall time per request against the server's fixed latency (the ratio is the client-side overhead:
HTTP, JSON, retries wrapper, semaphore). Figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "agent"))

from fakeserver import FakeOpenAIServer  # noqa: E402
from mathagent.agent.backends.base import GenerationParams  # noqa: E402
from mathagent.agent.backends.openai_backend import OpenAIBackend  # noqa: E402


def serve(args: argparse.Namespace) -> int:
    with FakeOpenAIServer(completions=[args.text], latency=args.latency, port=args.port) as srv:
        print(f"fake OpenAI server at {srv.base_url} (Ctrl-C stops)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0


async def _overhead(args: argparse.Namespace) -> None:
    with FakeOpenAIServer(completions=["The answer is \\boxed{42}."], latency=args.latency) as srv:
        b = OpenAIBackend(base_url=srv.base_url, model="fake", max_concurrency=args.concurrency)
        msgs = [{"role": "user", "content": "What is 6*7?"}]
        await b.generate(msgs, GenerationParams())  # warm up the connection pool
        per: list[float] = []
        t0 = time.perf_counter()

        async def one() -> None:
            t = time.perf_counter()
            await b.generate(msgs, GenerationParams(stop=("```output",)))
            per.append(time.perf_counter() - t)

        for start in range(0, args.requests, args.concurrency):
            await asyncio.gather(*(one() for _ in range(min(args.concurrency, args.requests - start))))
        wall = time.perf_counter() - t0
        await b.aclose()
    mean = statistics.mean(per)
    print(
        f"requests={args.requests} concurrency={args.concurrency} server latency={args.latency * 1000:.1f} ms"
    )
    print(
        f"mean per request={mean * 1000:.2f} ms  p50={statistics.median(per) * 1000:.2f} ms  wall={wall:.2f} s"
    )
    print(
        f"client overhead per request={(mean - args.latency) * 1000:.2f} ms  ratio={mean / args.latency:.3f}"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--text", default="The answer is 42.")
    s.add_argument("--latency", type=float, default=0.0)
    s.add_argument("--port", type=int, default=0)
    o = sub.add_parser("overhead")
    o.add_argument("--requests", type=int, default=200)
    o.add_argument("--latency", type=float, default=0.02)
    o.add_argument("--concurrency", type=int, default=8)
    args = p.parse_args()
    if args.cmd == "serve":
        return serve(args)
    asyncio.run(_overhead(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
