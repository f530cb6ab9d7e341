"""``mathagent eval``: evaluate the agent on a data set in a resumable run folder.

Examples::

    mathagent eval --dataset gsm8k --limit 50 --k 4 --temperature 0.7 --base-url http://127.0.0.1:8080/v1
    mathagent eval --dataset math500 --run-dir runs/m500      # run again: resumes
    mathagent eval --replay traces.jsonl                       # same as `mathagent replay`
    mathagent eval --config eval.toml --limit 20               # flags from a file (or a run's header.json)
    mathagent eval --dataset math500 --shard 0/4 --run-dir runs/s0   # one machine's quarter
    mathagent eval merge runs/s0 runs/s1 runs/s2 runs/s3 --out runs/all

``--backend scripted --script FILE.jsonl`` replays given turns (one line per problem:
``{"problem_id": ..., "turns": [...], "error": "...", "latency_s": 0.1}``) for tests and demos.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from mathagent.agent.choose import resolve_weights
from mathagent.agent.configfile import add_config_flag, parse_args, recorded_settings
from mathagent.agent.flags import default_temperature
from mathagent.agent.grading import grader_version
from mathagent.agent.grading.voting import Weights
from mathagent.agent.modes import add_mode_arg, config_mode, run_mode
from mathagent.evals import cli_replay
from mathagent.evals.cli_agent import (
    add_run_agent_flags,
    agent_setup,
    header_extra,
    run_agent,
    todays_records,
)
from mathagent.evals.datasets import DatasetError, dataset_info, load_problems
from mathagent.evals.runs import (
    RunDir,
    RunError,
    RunWriteError,
    busy_error,
    default_run_dir,
    run_holder,
    stop_message,
)
from mathagent.evals.shards import Shard
from mathagent.evals.summary import eval_summary, run_counts, summary_rows
from mathagent.evals.validate import check_args


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mathagent eval", description="Evaluate on a data set (resumable).")
    p.add_argument(
        "--dataset",
        default="gsm8k",
        help="gsm8k, math, math500, aime24, amc23, svamp, gsm-hard, or a JSONL file (default gsm8k)",
    )
    p.add_argument(
        "--replay", metavar="FILE", nargs="+", help="replay published traces instead (see `replay`)"
    )
    add_run_agent_flags(
        p,
        helps={
            "script": "scripted backend: JSONL of {problem_id, turns, error?, latency_s?} (with --backend scripted)"
        },
    )
    p.add_argument(
        "--weights", default=None, help="verification vote weights w_T,w_U,w_F (default 1,0.3,0.1)"
    )
    add_mode_arg(p)
    p.add_argument("--verify-prompt", default=None, help="shipped verification prompt (default: verify)")
    p.add_argument(
        "--verify-contested",
        action="store_true",
        help="with k > 1: solve a problem's k samples together and verify them only when their answers "
        "disagree, as `solve --k --verify` does (turns verification on; default: verify every sample)",
    )
    p.add_argument(
        "--prune",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="votes drop samples with no answer, no executed code or invented outputs (summary only)",
    )
    p.add_argument(
        "--shard",
        default=None,
        help="i/n: only the problems whose id hashes to shard i of n (see `eval merge`)",
    )
    p.add_argument("--run-dir", default=None, help="run folder (default: $MATHAGENT_RUNS_DIR/<name>)")
    p.add_argument("--retry-failed", action="store_true", help="re-run samples that ended in a backend error")
    p.add_argument("--force", action="store_true", help="start afresh when the folder holds another config")
    p.add_argument("--json", action="store_true", help="print the summary as JSON (no progress bar)")
    add_config_flag(p)
    return p


def recorded_mode(run_dir: Path) -> str | None:
    """The mode a run folder was started with (its ``header.json``), None for a new or unreadable folder."""
    try:
        header = json.loads((run_dir / "header.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return run_mode(header) if isinstance(header, dict) else None


def main(argv: list[str]) -> int:
    if argv and argv[0] == "merge":
        from mathagent.evals.cli_merge import main as merge_main  # lazy: only `eval merge` needs it

        return merge_main(argv[1:])
    args = parse_args(build_parser(), argv)
    settings = recorded_settings(args)
    err = check_args(args, script_required=args.backend == "scripted" and not args.replay)
    if err:
        print(f"mathagent eval: {err}", file=sys.stderr)
        return 2
    if args.replay:
        return cli_replay.main(
            [*args.replay]
            + (["--concurrency", str(args.concurrency)] if args.concurrency else [])
            + (["--pool-size", str(args.pool_size)] if args.pool_size else [])
            + (["--limit", str(args.limit)] if args.limit else [])
            + (["--json"] if args.json else [])
        )
    temperature = default_temperature(args)
    if args.weights is None:
        args.weights = str(Weights())
    try:
        shard = Shard.parse(args.shard)
        problems = load_problems(args.dataset, limit=args.limit, seed=args.seed, shuffle=args.shuffle)
        info = dataset_info(args.dataset)
    except (DatasetError, ValueError) as e:
        print(f"mathagent eval: {e}", file=sys.stderr)
        return 2
    n_total = len(problems)
    problems = [p for p in problems if shard.holds(p.id)]
    if args.run_dir and (holder := run_holder(Path(args.run_dir))):
        # refused again by RunDir.open below; saying it now spares starting a model server for nothing
        print(f"mathagent eval: {busy_error(Path(args.run_dir), holder)}", file=sys.stderr)
        return 2
    if args.mode is None and args.verify is None and args.run_dir:
        # resuming without --mode/--verify: the folder's own mode, not today's default for the model
        # (a run started before a measured default changed would otherwise refuse to resume)
        args.mode = recorded_mode(Path(args.run_dir))
    try:
        setup = agent_setup(args, temperature)
    except ValueError as e:  # an unknown preset or system prompt, a conflicting --format
        print(f"mathagent eval: {e}", file=sys.stderr)
        return 2
    model, agent_cfg, fmt = setup.model, setup.config, setup.format
    contested = bool(args.verify_contested and args.k > 1 and agent_cfg.verify)
    # The run's identity keeps the weights string (default unless --weights); calibrated weights for
    # the model are used for an extra weighted column and recorded in the header and summary.
    vote_weights = resolve_weights(
        args.weights if args.weights != str(Weights()) else None,
        model=model,
        config=agent_cfg,
        format_name=fmt,
    )
    cfg = setup.eval_config(
        args,
        temperature,
        dataset=args.dataset,
        weights=args.weights,
        extra={
            "shuffle": args.shuffle,
            "script": args.script,
            "agent": agent_cfg.to_dict(),
            **({"shard": str(shard)} if args.shard else {}),  # unsharded runs keep their identity
            **({"verify_contested": True} if contested else {}),  # likewise runs that verify every sample
        },
    )
    run_dir = (
        Path(args.run_dir)
        if args.run_dir
        else default_run_dir(
            f"{info['name']}-{(model or args.backend or 'auto').replace('/', '_')}-k{args.k}", cfg.identity()
        )
    )
    identity = {
        "config": cfg.identity(),
        "dataset": info,
        "grading_dataset": problems[0].dataset if problems else "",
    }
    extra = {
        **header_extra(argv, settings),
        **setup.header_fields(),
        "backend": setup.backend_info,
        "mode": config_mode(agent_cfg),
        "vote_weights": vote_weights.to_dict(),
        "problems": {"total": n_total, "ids": [p.id for p in problems]},
        "limits": setup.limits.to_dict(),
    }
    try:
        run = RunDir.open(run_dir, identity, extra, force=args.force)
    except RunError as e:
        print(f"mathagent eval: {e}", file=sys.stderr)
        return 2
    with run:  # the folder stays this process's (run.lock) until the summary is written
        t0 = time.perf_counter()
        counts = run_agent(
            problems,
            run,
            setup,
            k=args.k,
            concurrency=args.concurrency,
            seed=args.seed,
            retry_failed=args.retry_failed,
            progress=not args.json,
            verify_contested=contested,
            prog="mathagent eval",
            argv=argv,
        )
        if counts is None:  # the run folder could not be written; what is saved and how to resume are printed
            return 1
        keys = {(p.id, i) for p in problems for i in range(args.k)}
        # samples judged by an earlier grader (a run resumed after an upgrade) are judged again
        judged = todays_records(run, keys, prog="mathagent eval", argv=argv)
        if judged is None:
            return 1
        records, regraded = judged
        dataset = problems[0].dataset if problems else "math"
        summary = eval_summary(
            records,
            k=args.k,
            weights=args.weights,
            dataset=dataset,
            prune=args.prune,
            vote_weights=vote_weights.to_dict(),
            mode=config_mode(agent_cfg),
        )
        counts = run_counts(records, len(keys), counts, run.invocations)
        summary.update(run_dir=str(run.path), wall_s=round(time.perf_counter() - t0, 2), counts=counts)
        summary["grading"] = {"grader": grader_version(), "regraded": regraded}
        try:
            run.write_summary(summary)
        except RunWriteError as e:
            print(stop_message("mathagent eval", e, argv), file=sys.stderr)
            return 1
        if args.json:
            print(json.dumps(summary, indent=2, default=str))
        else:
            print_summary(summary)
        return 0


def print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    k = summary["overall"].get("k", 1)
    t = Table(title=f"{summary['n_samples']} samples, {summary['n_failed']} failed")
    for col in ("group", "problems", "accuracy", f"maj@{k}", f"weighted@{k}", f"pass@{k}"):
        t.add_column(col, justify="left" if col == "group" else "right")
    for row in summary_rows(summary):
        t.add_row(*row)
    ex = summary["exec"]
    c = Console()
    c.print(t)
    by_k = summary["overall"].get("by_k") or []
    if len(by_k) > 1:
        kt = Table(title="voting by k")
        for col in ("k", "maj@k", "weighted@k", "pass@k"):
            kt.add_column(col, justify="right")
        for row in by_k:
            kt.add_row(
                str(row["k"]), *(f"{100 * row[key]:.1f}" for key in ("majority", "weighted", "pass_at_k"))
            )
        c.print(kt)
    ver = summary.get("verification") or {}
    if ver.get("total"):
        parts = []
        for state, name in (("T", "True"), ("U", "Uncertain"), ("F", "False"), ("none", "not verified")):
            if ver["counts"].get(state):
                prec = ver["precision"][state]
                parts.append(f"{name} {100 * ver['share'][state]:.0f}% (precision {100 * prec:.0f}%)")
        c.print("verification: " + ", ".join(parts))
    pr = summary.get("prune") or {}
    if pr.get("reasons") or pr.get("on"):
        why = ", ".join(f"{k} {v}" for k, v in sorted(pr.get("reasons", {}).items())) or "none"
        verb = "votes dropped" if pr.get("on") else "pruning (off; --prune) would drop"
        c.print(f"{verb}: {why}")
    vw = summary.get("vote_weights") or {}
    if vw.get("source") == "calibrated":
        acc = summary["overall"].get("weighted_calibrated_at_k")
        c.print(f"calibrated weights {vw['weights']}: weighted@{k} {_pct(acc)} ({vw.get('calibration')})")
    c.print(
        f"tokens in {summary['tokens_in']} out {summary['tokens_out']} · sample time {summary['sample_time_s']:.1f}s"
        f" · wall {summary.get('wall_s', 0)}s · code cells {ex['cells']} (errors {ex['errors']}, timeouts "
        f"{ex['timeouts']}, restarts {ex['restarts']})"
    )
    if summary["failed_reasons"]:
        c.print(f"failed: {summary['failed_reasons']}")
    c.print(f"run folder: {summary.get('run_dir')}")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"
