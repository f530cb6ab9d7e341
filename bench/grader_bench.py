"""Grader throughput and agreement on real model answers, beside math-verify, plus hostile worst case.

Usage: python bench/grader_bench.py [--data ../shared/data] [--limit N]
Prints pairs/second for our grader (extract + is_equivalent) and for math_verify (parse + verify) on the
same pairs, their agreement, and the worst time over the hostile cases from tests/agent/test_grading.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_pairs(data: Path, limit: int | None) -> list[tuple[str, str, str]]:
    """(source, model text, gold) for ToRA-70B and MathCoder-L-70B GSM8K traces; ``limit``: at most
    that many of each source."""
    tora = []
    for line in (data / "traces" / "traces_tora70b_gsm8k_test.jsonl").read_text().splitlines():
        r = json.loads(line)
        tora.append(("tora", r["code"][0], str(r["gt"])))
    mathcoder = []
    for name in ("correct", "wrong"):
        path = data / "traces" / f"traces_mathcoderL70b_gsm8k_test_{name}.jsonl"
        for line in path.read_text().splitlines():
            r = json.loads(line)
            text = "\n".join(
                m["content"] for m in r["debug_result"] if m["role"] in ("text", "code", "execution")
            )
            mathcoder.append(("mathcoder", text, str(r["ground_truth"]["answer"])))
    return tora[:limit] + mathcoder[:limit] if limit else tora + mathcoder


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--limit", type=int, default=None, help="at most this many pairs of each source")
    args = ap.parse_args(argv)

    from mathagent.agent.grading import extract_answer, gold_answer, is_equivalent
    from mathagent.agent.grading.equivalence import clear_cache

    pairs = load_pairs(args.data, args.limit)
    golds = [gold_answer({"answer": "#### " + g}, "gsm8k") for _, _, g in pairs]
    is_equivalent("1", "1.0", "gsm8k")  # warm imports

    clear_cache()
    t0 = time.perf_counter()
    ours = [
        is_equivalent(extract_answer(text, "gsm8k"), g, "gsm8k")
        for (_, text, _), g in zip(pairs, golds, strict=True)
    ]
    t_ours = time.perf_counter() - t0

    try:
        from math_verify import parse, verify
    except ImportError:
        print("math_verify not installed; skipping the comparison")
        parse = verify = None
    mv: list[bool] = []
    t_mv = float("nan")
    if parse is not None:
        t0 = time.perf_counter()
        for (_, text, _), g in zip(pairs, golds, strict=True):
            try:
                mv.append(bool(verify(parse(g), parse(text))))
            except Exception:  # noqa: BLE001
                mv.append(False)
        t_mv = time.perf_counter() - t0

    n = len(pairs)
    print(f"pairs: {n} (ToRA-70B + MathCoder-L-70B GSM8K traces)")
    print(f"ours:        {n / t_ours:9.1f} pairs/s   accuracy {sum(ours) / n:.4f}")
    for src in ("tora", "mathcoder"):
        idx = [i for i, p in enumerate(pairs) if p[0] == src]
        print(f"  {src:10s} accuracy {sum(ours[i] for i in idx) / len(idx):.4f} over {len(idx)}")
    if mv:
        agree = sum(a == b for a, b in zip(ours, mv, strict=True)) / n
        print(f"math-verify: {n / t_mv:9.1f} pairs/s   accuracy {sum(mv) / n:.4f}")
        print(f"speed ratio ours / math-verify: {t_mv / t_ours:.2f}x   agreement: {agree:.4f}")
        diff = [i for i in range(n) if ours[i] != mv[i]]
        for i in diff[:10]:
            print(
                f"  differs #{i}: ours={ours[i]} mv={mv[i]} gold={golds[i]} ours_pred={extract_answer(pairs[i][1], 'gsm8k')!r}"
            )

    sys.path.insert(0, str(REPO / "tests" / "agent"))
    from test_grading import HOSTILE

    worst = 0.0
    for a, b in HOSTILE:
        box: list[float] = []

        def run(a=a, b=b, box=box):
            t = time.perf_counter()
            is_equivalent(a, b, "math")
            extract_answer(r"\boxed{" + a + "}", "math")
            box.append(time.perf_counter() - t)

        th = threading.Thread(target=run, daemon=True)
        th.start()
        th.join(timeout=300)
        worst = max(worst, box[0] if box else float("inf"))
    print(f"hostile cases: {len(HOSTILE)}, worst time from a thread: {worst:.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
