"""``mathagent eval merge DIR... --out DIR``: join the shards of one evaluation (``eval --shard i/n``).

    mathagent eval merge runs/s0 runs/s1 runs/s2 runs/s3 --out runs/all

The shards must be the complete, disjoint shards of one run (see :mod:`mathagent.evals.shards`);
otherwise nothing is written and the error lists the missing or overlapping shards and samples. The
merged folder is an ordinary run folder (header, samples, summary; ``mathagent report`` reads it), and
its summary is computed as a single run's would be. Re-running the same merge writes the same folder.
"""

from __future__ import annotations

import argparse
import json
import sys

from mathagent.agent.grading import grader_version
from mathagent.evals.runs import RunDir, RunError, RunWriteError, config_digest
from mathagent.evals.shards import MergeError, check_eval_shards, merged_records
from mathagent.evals.summary import eval_summary, regrade, run_counts

PROG = "mathagent eval merge"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Validate and join the shards of one evaluation.")
    p.add_argument("dirs", nargs="+", help="run folders written by `mathagent eval --shard i/n`")
    p.add_argument("--out", required=True, help="folder of the merged run")
    p.add_argument(
        "--prune",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="votes drop pruned samples (default: as the shards were run)",
    )
    p.add_argument("--force", action="store_true", help="start afresh when OUT holds another merge")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        runs = [RunDir.read(d) for d in args.dirs]
        checked = check_eval_shards(runs)
        prune = args.prune if args.prune is not None else _prune_of(runs)
    except (MergeError, FileNotFoundError) as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    ident = checked["identity"]
    k = int(ident["config"]["k"])
    records = merged_records(runs, checked["problems"], k)
    first = runs[0].header
    extra = {
        key: first[key]
        for key in ("git_revision", "package_versions", "prompt_hashes", "mode", "vote_weights")
    }
    extra.update(
        merged_from=[str(r.path) for r in runs],
        shards=checked["shards"],
        config_digest=config_digest(ident),
        problems={"total": checked["total"], "ids": sorted(checked["problems"])},
    )
    try:
        merged = RunDir.open(args.out, {**ident, "merged": True}, extra, force=args.force)
        # shards judged by different graders are summarised under today's; a merge run again appends
        # only records whose verdict differs from the merged folder's
        records, regraded = regrade(records)
        have = {(str(r["problem_id"]), int(r.get("sample_index", 0))): r for r in merged.records()}
        for rec in records:
            old = have.get((str(rec["problem_id"]), int(rec.get("sample_index", 0))))
            if old is None or bool(old.get("correct")) != bool(rec.get("correct")):
                merged.append(rec)
        summary = eval_summary(
            records,
            k=k,
            weights=ident["config"]["weights"],
            dataset=ident.get("grading_dataset") or "math",
            prune=prune,
            vote_weights=first["vote_weights"],
            mode=first["mode"],
        )
        shard_summaries = [r.summary() or {} for r in runs]
        summary.update(
            run_dir=str(merged.path),
            wall_s=max((float(s.get("wall_s", 0.0)) for s in shard_summaries), default=0.0),
            counts=run_counts(
                records,
                checked["total"] * k,
                {
                    key: sum(int((s.get("counts") or {}).get(src, 0)) for s in shard_summaries)
                    for key, src in (
                        ("ran", "ran"),
                        ("skipped", "skipped"),
                        ("failed", "failed_this_invocation"),
                    )
                },
                sum(int((s.get("counts") or {}).get("invocations", 1)) for s in shard_summaries),
            ),
            grading={"grader": grader_version(), "regraded": len(regraded)},
            merge={
                "shards": checked["shards"],
                "from": [str(r.path) for r in runs],
                "config_digest": extra["config_digest"],
                "shard_wall_s": [s.get("wall_s") for s in shard_summaries],
            },
        )
        merged.write_summary(summary)
    except RunError as e:  # another merge in OUT (without --force), or a full disk
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2 if not isinstance(e, RunWriteError) else 1
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        from mathagent.evals.cli_eval import print_summary  # lazy: the rich tables

        print_summary(summary)
    return 0


def _prune_of(runs: list[RunDir]) -> bool:
    """``--prune`` as the shards were run (their recorded settings); they must agree."""
    values = {bool((r.header.get("settings") or {}).get("prune", False)) for r in runs}
    if len(values) > 1:
        raise MergeError("the shards were summarized with and without --prune; pass --prune or --no-prune")
    return values.pop()
