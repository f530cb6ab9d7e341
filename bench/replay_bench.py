"""Replay benchmark: wall time of replaying published traces through the real loop and kernel pool.

    python bench/replay_bench.py                      # full 1319-problem ToRA replay
    python bench/replay_bench.py --limit 100 --concurrency 4 --pool-size 4

Prints wall time, traces/s, our accuracy vs the published score, and the output-match share; writes
bench/out/replay_report.json. (Agent overhead against the fake OpenAI server is not measured yet.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path

from mathagent.evals.replay import build_report, load_replay_file, replay_async, write_replay_report
from mathagent.evals.runner import make_provider

DATA = Path(os.environ.get("MATHAGENT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--file", default=str(DATA / "traces" / "traces_tora70b_gsm8k_test.jsonl"))
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--pool-size", type=int, default=4)
    args = p.parse_args()
    items = load_replay_file(args.file, limit=args.limit)
    provider = make_provider(args.pool_size)
    t0 = time.perf_counter()
    try:
        results = asyncio.run(replay_async(items, provider, concurrency=args.concurrency))
    finally:
        provider.close()
    wall = time.perf_counter() - t0
    report = build_report(results, wall)
    write_replay_report(report, results, Path(__file__).parent / "out")
    for s in report["sources"].values():
        s.pop("diff_rows")
        print(json.dumps(s, indent=1))
    print(
        f"wall {wall:.1f} s for {len(items)} traces ({len(items) / wall:.2f} traces/s; target 1319 in <= 60 s)"
        f" on {os.cpu_count()} cores, load avg {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
