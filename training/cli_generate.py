"""``mathagent generate``: SFT traces by rejection sampling, problem interpolation, and shard merges.

    mathagent generate --problems gsm8k_train.jsonl --model qwen2.5-coder-1.5b --k 4 --out gen/gsm8k
    mathagent generate --problems FILE --base-url http://host:8080/v1 --shard 0/4 --out gen/s0
    mathagent generate interpolate --easy gsm8k_train.jsonl --hard math_train.jsonl --n 100 --out gen/d1
    mathagent generate merge gen/s0 gen/s1 gen/s2 gen/s3 --out gen/all

Re-running a command resumes it (finished samples are kept; the data set is rebuilt). See docs/generate.md.
``--backend scripted --script FILE.jsonl`` replays given turns (rows ``{"problem_id", "turns": [...]}``
for every sample, or ``"samples": [[...], [...]]`` one list per sample, or ``"error": "..."``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from mathagent.agent.backends.scripted import ScriptedBackend
from mathagent.agent.configfile import add_config_flag, parse_args, recorded_settings
from mathagent.agent.flags import add_agent_flags, default_temperature, given, plain
from mathagent.agent.modes import add_mode_arg, config_mode
from mathagent.evals.cli_agent import (
    add_run_agent_flags,
    agent_setup,
    backend_from_args,
    header_extra,
    run_agent,
    run_limits,
    todays_records,
)
from mathagent.evals.datafiles import DatasetError, sha256_file
from mathagent.evals.datasets import STANDARD, dataset_info
from mathagent.evals.runs import RunDir, RunError, RunWriteError, stop_message
from mathagent.evals.shards import Shard
from mathagent.evals.summary import run_counts
from mathagent.evals.testsets import ALLOW_TEST_HELP, refuse_test_data
from mathagent.evals.validate import check_args
from mathagent.training import dedup
from mathagent.training import interpolate as I
from mathagent.training.filters import FilterConfig
from mathagent.training.generate import (
    DatasetInfo,
    build_dataset,
    dedup_problems,
    load_generation_problems,
)
from mathagent.training.merge import KIND, MergeError, merge_runs


def _common(p: argparse.ArgumentParser) -> None:
    add_run_agent_flags(
        p,
        (
            "backend",
            "model",
            "base_url",
            "request_timeout",
            "format",
            "script",
            "seed",
            "concurrency",
            "temperature",
            "max_rounds",
            "max_tokens",
            "max_inflight",
            "pool_size",
            "verify",
            "preset",
            "system_prompt",
        ),
        defaults={"verify": False},
        helps={
            "script": "scripted backend: JSONL of {problem_id, turns | samples | error} (with --backend scripted)",
            "verify": "code-based self-verification after an answer (default: off for generation)",
            "format": "trace format the model writes (default: the backend's own)",
        },
    )
    p.add_argument("--out", required=True, help="output folder (run folder + data/ + README.md)")
    add_mode_arg(p)
    p.add_argument("--agree", type=int, default=3, help="no gold: samples that must share the answer")
    p.add_argument(
        "--max-trace-tokens",
        type=int,
        default=4096,
        help="length budget of a kept trace, problem and all steps, as characters / 4 (default 4096); "
        "not --max-tokens, the model's limit per call",
    )
    p.add_argument(
        "--max-per-problem", type=int, default=None, help="most traces kept per problem (default: all)"
    )
    p.add_argument(
        "--allow-test",
        action="store_true",
        help=ALLOW_TEST_HELP,
    )
    p.add_argument("--force", action="store_true", help="start afresh when OUT holds another configuration")
    p.add_argument("--json", action="store_true", help="print the summary as JSON (no progress bar)")
    add_config_flag(p)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mathagent generate", description=plain(__doc__.split("\n\n")[0]))
    p.add_argument(
        "--problems", required=True, help="data set name or JSONL (question/problem, answer/gold?)"
    )
    add_agent_flags(p, ("k", "limit", "shuffle"))
    p.add_argument("--shard", default=None, help="i/n: only the problems whose id hashes to shard i of n")
    p.add_argument("--problem-jaccard", type=float, default=dedup.PROBLEM_JACCARD, help="0 disables")
    _common(p)
    return p


def _filters(args: argparse.Namespace) -> FilterConfig:
    return FilterConfig(
        agree=args.agree, max_tokens=args.max_trace_tokens, max_per_problem=args.max_per_problem
    )


RENAMED_NOTE = (
    "note: --max-tokens is the model's limit per call (as in eval and solve); the kept-trace length "
    "filter it named before is now --max-trace-tokens"
)


def _warn_renamed(argv: list[str]) -> None:
    """``--max-tokens`` changed meaning in ``generate``: say so when it is given (not an error: the
    spelling is the per-call limit everywhere now, and a run with it is valid)."""
    if any(a == "--max-tokens" or a.startswith("--max-tokens=") for a in argv):
        print(RENAMED_NOTE, file=sys.stderr)


def run_main(argv: list[str], *, warn: bool = True) -> int:
    args = parse_args(build_parser(), argv)
    settings = recorded_settings(args)
    if warn:
        _warn_renamed(argv)
    err = check_args(args)
    if err:
        print(f"mathagent generate: {err}", file=sys.stderr)
        return 2
    temperature = default_temperature(args)
    try:
        shard = Shard.parse(args.shard)
        problems = load_generation_problems(
            args.problems, limit=args.limit, seed=args.seed, shuffle=args.shuffle
        )
        info = (
            dataset_info(args.problems)
            if args.problems in STANDARD
            else {
                "name": Path(args.problems).stem,
                "path": str(Path(args.problems).resolve()),
                "sha256": sha256_file(Path(args.problems)),
            }
        )
        if not args.allow_test:
            refuse_test_data(args.problems, (p.question for p in problems), file_sha256=info["sha256"])
    except (DatasetError, ValueError) as e:
        print(f"mathagent generate: {e}", file=sys.stderr)
        return 2
    n_loaded = len(problems)
    dup_problems = 0
    if args.problem_jaccard > 0:
        problems, dup_problems = dedup_problems(problems, args.problem_jaccard)
    problems = [p for p in problems if shard.holds(p.id)]
    try:
        setup = agent_setup(args, temperature)
    except ValueError as e:  # an unknown preset or system prompt, a conflicting --format
        print(f"mathagent generate: {e}", file=sys.stderr)
        return 2
    model, agent_cfg = setup.model, setup.config
    cfg = setup.eval_config(
        args,
        temperature,
        dataset=args.problems if args.problems in STANDARD else info["name"],
        extra={
            "shuffle": args.shuffle,
            "script": args.script,
            "shard": str(shard) if args.shard else None,
            "problem_jaccard": args.problem_jaccard,
            "agent": agent_cfg.to_dict(),
        },
    )
    identity = {"kind": KIND, "config": cfg.identity(), "dataset": info}
    filters = _filters(args)
    extra = {
        **header_extra(argv, settings),
        **setup.header_fields(),
        "backend": setup.backend_info,
        "models": [model],
        "filters": filters.to_dict(),
        "mode": config_mode(agent_cfg),
        "limits": setup.limits.to_dict(),
        "allow_test": args.allow_test,
    }
    try:
        run = RunDir.open(args.out, identity, extra, force=args.force)
    except RunError as e:
        print(f"mathagent generate: {e}", file=sys.stderr)
        return 2
    keys = {(p.id, i) for p in problems for i in range(args.k)}
    t0 = time.perf_counter()
    counts = run_agent(
        problems,
        run,
        setup,
        k=args.k,
        concurrency=args.concurrency,
        seed=args.seed,
        retry_failed=True,
        progress=not args.json,
        prog="mathagent generate",
        argv=argv,
    )
    if counts is None:  # the run folder could not be written; what is saved and how to resume are printed
        return 1
    judged = todays_records(run, keys, prog="mathagent generate", argv=argv)  # a job resumed after an
    if judged is None:  # upgrade: the samples an earlier grader judged are judged again
        return 1
    records = judged[0]
    problem_stats = {
        "loaded": n_loaded,
        "duplicates_dropped": dup_problems,
        "in_shard": len(problems),
        "shard": str(shard),
    }
    try:
        data = build_dataset(
            run.path, records, filters, DatasetInfo(models=(model,), extra={"problems": problem_stats})
        )
        summary = {
            "run_dir": str(run.path),
            "wall_s": round(time.perf_counter() - t0, 2),
            "counts": run_counts(records, len(keys), counts, run.invocations),
            "problems": problem_stats,
            "dataset": data,
        }
        run.write_summary(summary)
    except (RunWriteError, OSError) as e:
        if not isinstance(e, RunWriteError):
            e = RunWriteError(
                f"cannot write the data set in {run.path} ({e.strerror or e}); all {len(records)} samples are "
                "saved; free some space and run the same command again (nothing re-runs)",
                path=run.path,
                saved=len(records),
                os_error=e,
            )
        print(stop_message("mathagent generate", e, argv), file=sys.stderr)
        return 1
    _print(summary, args.json)
    return 0


def _print(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    data = summary["dataset"]
    t = Table(
        title=f"kept {data['kept']} of {data['samples']} traces ({data['problems_kept']}/{data['problems']} problems)"
    )
    t.add_column("dropped because")
    t.add_column("samples", justify="right")
    for k, v in data["dropped"].items():
        t.add_row(k, str(v))
    c = Console()
    c.print(t)
    for key in ("problems", "merge", "interpolation"):
        if key in summary:
            c.print(f"{key}: {json.dumps(summary[key], default=str)}")
    out = summary.get("run_dir") or summary.get("out")
    c.print(f"data: {out}/data/train_chat.jsonl, {out}/data/train_mathcoder.jsonl · card: {out}/README.md")


def main(argv: list[str]) -> int:
    if argv and argv[0] == "interpolate":
        return interpolate_main(argv[1:])
    if argv and argv[0] == "merge":
        return merge_main(argv[1:])
    return run_main(argv)


def merge_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="mathagent generate merge", description="Validate and combine shards.")
    p.add_argument("dirs", nargs="+", help="shard folders written by `mathagent generate --shard i/n`")
    p.add_argument("--out", required=True, help="folder of the merged run and data set")
    p.add_argument("--agree", type=int, default=None, help="override the shards' filters")
    p.add_argument(
        "--max-trace-tokens", type=int, default=None, help="override the shards' kept-trace length budget"
    )
    p.add_argument("--max-tokens", dest="old_max_tokens", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--force", action="store_true", help="start afresh when OUT holds another merge")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = p.parse_args(argv)
    if args.old_max_tokens is not None:
        print(
            "mathagent generate merge: --max-tokens was renamed --max-trace-tokens (the kept-trace length "
            "budget; --max-tokens now means the model's limit per call, which a merge does not use)",
            file=sys.stderr,
        )
        return 2
    if args.max_trace_tokens is not None and args.max_trace_tokens < 1:
        print("mathagent generate merge: --max-trace-tokens must be a whole number >= 1", file=sys.stderr)
        return 2
    filters = None
    if args.agree is not None or args.max_trace_tokens is not None:
        filters = FilterConfig(agree=args.agree or 3, max_tokens=args.max_trace_tokens or 4096)
    try:
        summary = merge_runs(args.dirs, args.out, filters=filters, force=args.force)
    except (MergeError, RunError, FileNotFoundError) as e:
        print(f"mathagent generate merge: {e}", file=sys.stderr)
        return 2
    summary["out"] = args.out
    _print(summary, args.json)
    return 0


def interpolate_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="mathagent generate interpolate", description=plain(I.__doc__.split("\n\n")[0])
    )
    p.add_argument("--easy", required=True, help="easy seed problems (GSM8K train JSONL or a data set name)")
    p.add_argument("--hard", required=True, help="hard seed problems (MATH train JSONL or a data set name)")
    p.add_argument("--n", type=int, required=True, help="candidate problems to ask for")
    p.add_argument("--k", type=int, default=3, help="samples per new problem when solving them")
    p.add_argument(
        "--interp-temperature",
        type=float,
        default=0.8,
        help="sampling temperature of the interpolation calls",
    )
    p.add_argument(
        "--interp-script", help="scripted backend for the interpolation calls: JSONL {problem_id, text}"
    )
    p.add_argument("--no-solve", action="store_true", help="only write OUT/problems.jsonl")
    _common(p)
    args = parse_args(p, argv)
    _warn_renamed(argv)
    err = check_args(args, script_required=False)
    if err:
        print(f"mathagent generate interpolate: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    try:
        easy = load_generation_problems(args.easy)
        hard = load_generation_problems(args.hard)
        if not args.allow_test:
            refuse_test_data(args.easy, (p.question for p in easy), flag="--easy")
            refuse_test_data(args.hard, (p.question for p in hard), flag="--hard")
    except DatasetError as e:
        print(f"mathagent generate interpolate: {e}", file=sys.stderr)
        return 2
    cfg = I.InterpolationConfig(n=args.n, seed=args.seed, temperature=args.interp_temperature)
    scripted = args.backend == "scripted"
    backend = None if scripted else backend_from_args(args)
    model = args.model or (getattr(backend, "model", "") if backend else "scripted")
    try:
        candidate_limits = run_limits(args, backend)
    except ValueError as e:
        print(f"mathagent generate interpolate: {e}", file=sys.stderr)
        return 2
    texts: dict[str, str] = {}
    if args.interp_script:
        for line in Path(args.interp_script).read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                texts[str(row["problem_id"])] = row["text"]

    def backend_for(cid: str) -> Any:
        if backend is not None:
            return backend
        return ScriptedBackend([texts.get(cid, "")], on_exhausted="empty")

    def digest(spec: str) -> str:
        return sha256_file(Path(spec)) if Path(spec).is_file() else spec

    identity = {
        "kind": "mathagent-interpolate",
        "config": cfg.to_dict(),
        "easy": digest(args.easy),
        "hard": digest(args.hard),
        "model": model,
        "backend": args.backend,
        "prompt": I.prompt_hash(),
    }
    try:
        cand_run = RunDir.open(
            out / I.CANDIDATES_DIR, identity, {"interp_script": args.interp_script}, force=args.force
        )
    except RunError as e:
        print(f"mathagent generate interpolate: {e}", file=sys.stderr)
        return 2
    pairs = I.draw_pairs(easy, hard, args.n, args.seed)
    try:
        asyncio.run(
            I.generate_candidates(pairs, backend_for, cand_run, cfg, concurrency=candidate_limits.concurrency)
        )
    finally:
        if backend is not None and hasattr(backend, "aclose"):
            asyncio.run(backend.aclose())
    test_index, test_sizes = I.test_set_index(cfg.leak_ngram)
    seed_index = dedup.NearDupIndex().add_all(
        [(f"easy:{q.id}", q.question) for q in easy] + [(f"hard:{q.id}", q.question) for q in hard]
    )
    keys = {(f"i{i:06d}", 0) for i in range(args.n)}
    cands = [r for r in cand_run.records() if (r["problem_id"], 0) in keys]
    accepted, stats = I.decide(cands, test_index, seed_index, cfg)
    stats["test_sets"] = test_sizes
    stats["model"] = model
    problems_file = I.write_problems(out, accepted, stats)
    if args.no_solve or not accepted:
        print(json.dumps({"interpolation": stats, "problems": str(problems_file)}, indent=2))
        return 0
    # solve the new problems with the agreement filter, in OUT itself
    rest = ["--problems", str(problems_file), "--out", str(out), "--k", str(args.k)]
    for flag in (
        "backend",
        "model",
        "base_url",
        "format",
        "script",
        "seed",
        "concurrency",
        "temperature",
        "max_rounds",
        "preset",
        "system_prompt",
        "max_tokens",
        "max_inflight",
        "pool_size",
        "agree",
        "max_trace_tokens",
        "max_per_problem",
    ):
        v = given(getattr(args, flag))  # an untyped limit stays untyped (a preset may set it)
        if v not in (None, ""):
            rest += [f"--{flag.replace('_', '-')}", str(v)]
    rest += ["--verify" if args.verify else "--no-verify"] + (["--force"] if args.force else [])
    rest += ["--allow-test"] if args.allow_test else []
    rest += ["--json"] if args.json else []
    if not args.json:
        print(f"interpolation: {json.dumps(stats, default=str)}")
    return run_main(rest, warn=False)
