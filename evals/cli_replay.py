"""``mathagent replay FILE...``: replay published traces through the real loop and our sandbox.

Prints our accuracy beside the published score, the disagreements with reasons, and the share of
code blocks whose output we re-derive identically; writes ``replay_report.json`` and
``replay_results.jsonl`` into ``--out``.

Each file's model and data set are read from its path (e.g. ``tora-code-34b-v1.0/math/...``,
``MathCoder-L-7b/GSM8K/...``) and, failing that, from its rows; the published score is looked up in a
table of cited results (``mathagent.evals.replay.PUBLISHED``). A model or data set that cannot be
identified, or has no cited score, is reported with none; ``--model``, ``--dataset`` and
``--published`` say it instead. MATH files are graded with the MATH policy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from mathagent.agent.flags import plain
from mathagent.evals.limits import derive_limits, machine
from mathagent.evals.replay import (
    REPORT_HEADER,
    build_report,
    load_replay_file,
    replay_async,
    report_table,
    write_replay_report,
)
from mathagent.evals.runner import make_provider


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mathagent replay", description=plain(__doc__.splitlines()[0]))
    p.add_argument("files", nargs="+", help="ToRA or MathCoder trace JSONL files (auto-detected)")
    p.add_argument("--limit", type=int, default=None, help="first N rows of each file")
    p.add_argument(
        "--concurrency",
        "--max-inflight",
        dest="concurrency",
        type=int,
        default=None,
        help="traces replayed at once (replay sends no model request, so --max-inflight is the same; "
        "default: derived from the machine, printed)",
    )
    p.add_argument(
        "--pool-size", type=int, default=None, help="pre-started kernels (default: derived from the machine)"
    )
    p.add_argument("--cell-timeout", type=float, default=10.0)
    p.add_argument("--out", default="replay_out", help="folder for replay_report.json")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--show-diffs", type=int, default=10, help="disagreements to list per source")
    p.add_argument("--model", default=None, help="the model that wrote the files (default: read from them)")
    p.add_argument(
        "--dataset",
        choices=("gsm8k", "math"),
        default=None,
        help="their data set, which also picks the grading policy (default: read from them)",
    )
    p.add_argument(
        "--published",
        type=float,
        default=None,
        help="the published accuracy (%%) to print beside ours (default: from the table of cited results)",
    )
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        limits = derive_limits(
            machine(), remote=False, concurrency=args.concurrency, pool_size=args.pool_size
        )
    except ValueError as e:
        print(f"mathagent replay: {e}", file=sys.stderr)
        return 2
    items = []
    try:
        for f in args.files:
            items += load_replay_file(f, limit=args.limit, model=args.model, dataset=args.dataset)
    except (OSError, ValueError) as e:
        print(f"mathagent replay: {e}", file=sys.stderr)
        return 2
    groups = {(i.source, i.model, i.dataset) for i in items}
    if args.published is not None and len(groups) > 1:
        print(
            "mathagent replay: --published names one score, but the files hold "
            f"{len(groups)} models / data sets; replay them one at a time",
            file=sys.stderr,
        )
        return 2
    print(limits.describe(), file=sys.stderr)
    for warning in limits.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    provider = make_provider(limits.pool_size)
    t0 = time.perf_counter()
    try:
        if args.json:
            results = asyncio.run(
                replay_async(items, provider, concurrency=limits.concurrency, cell_timeout=args.cell_timeout)
            )
        else:
            from rich.progress import Progress

            with Progress() as progress:
                task = progress.add_task("replay", total=len(items))
                results = asyncio.run(
                    replay_async(
                        items,
                        provider,
                        concurrency=limits.concurrency,
                        cell_timeout=args.cell_timeout,
                        on_result=lambda r: progress.advance(task),
                    )
                )
    finally:
        provider.close()
    report = build_report(results, time.perf_counter() - t0, published=args.published)
    path = write_replay_report(report, results, Path(args.out))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    c = Console()
    t = Table(title=f"replay of {len(items)} published traces ({report.get('wall_s')} s)")
    for h in REPORT_HEADER:
        left = h in ("model", "data set")
        t.add_column(h, justify="left" if left else "right", no_wrap=left)
    for row in report_table(report):
        t.add_row(*row)
    c.print(t)
    for key, s in report["sources"].items():
        cite = s["published_source"] or "none known (give it with --published)"
        c.print(f"[bold]{key}[/]: published score from {cite}")
        c.print(f"  output categories {s['output_categories']}; why they differ {s['why_counts']}")
        for d in s["diff_rows"][: args.show_diffs]:
            c.print(
                f"  #{d['problem_id']}: gold {d['gold']!r} ours {d['ours']!r} theirs {d['theirs']!r} — {d['why']}"
            )
    c.print(f"report: {path}")
    return 0
