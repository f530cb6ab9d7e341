"""``mathagent eval``: evaluate the agent on a data set in a resumable run folder.

Examples::

    mathagent eval --dataset gsm8k --limit 50 --k 4 --temperature 0.7 --base-url http://127.0.0.1:8080/v1
    mathagent eval --dataset math500 --run-dir runs/m500      # run again: resumes
    mathagent eval --replay traces.jsonl                       # same as `mathagent replay`

``--backend scripted --script FILE.jsonl`` replays given turns (one line per problem:
``{"problem_id": ..., "turns": [...], "error": "...", "latency_s": 0.1}``) for tests and demos.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mathagent eval", description="Evaluate on a data set (resumable).")
    p.add_argument(
        "--dataset", default="gsm8k", help="gsm8k|math|math500|aime24|amc23|svamp|gsm-hard|PATH.jsonl"
    )
    p.add_argument(
        "--replay", metavar="FILE", nargs="+", help="replay published traces instead (see `replay`)"
    )
    p.add_argument(
        "--backend",
        default=os.environ.get("MATHAGENT_BACKEND"),
        help="openai, transformers, llama or scripted (default: inferred from --model / --base-url)",
    )
    p.add_argument("--model", default=os.environ.get("MATHAGENT_MODEL", ""))
    p.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL"))
    p.add_argument("--format", default=None, help="trace format (markdown, mathcoder, tools)")
    p.add_argument("--script", help="scripted backend: JSONL of {problem_id, turns, error?, latency_s?}")
    p.add_argument("--k", type=int, default=1, help="samples per problem")
    p.add_argument("--temperature", type=float, default=None, help="default 0 for k=1, else 0.7")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--shuffle", action="store_true", help="shuffle problems (seeded) before --limit")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-rounds", type=int, default=None)
    p.add_argument("--verify", dest="verify", action="store_true", default=True)
    p.add_argument("--no-verify", dest="verify", action="store_false")
    p.add_argument("--weights", default=None, help="verification vote weights w_T,w_U,w_F")
    from mathagent.agent.modes import add_mode_arg

    add_mode_arg(p)
    p.add_argument("--verify-prompt", default=None, help="shipped verification prompt (default: verify)")
    p.add_argument(
        "--prune",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="votes drop samples with no answer, no executed code or invented outputs (summary only)",
    )
    p.add_argument("--run-dir", default=None, help="run folder (default: $MATHAGENT_RUNS_DIR/<name>)")
    p.add_argument("--retry-failed", action="store_true", help="re-run samples that ended in a backend error")
    p.add_argument("--force", action="store_true", help="start afresh when the folder holds another config")
    p.add_argument("--json", action="store_true", help="print the summary as JSON (no progress bar)")
    return p


def backend_from_args(args: argparse.Namespace) -> Any:
    """The backend ``--model`` / ``--base-url`` / ``--backend`` name (no flags: the bundled model)."""
    from mathagent.agent.backends import make_backend

    backend = None if args.backend in (None, "", "auto") else args.backend
    return make_backend(args.model or None, args.base_url or None, backend=backend)


@dataclass(frozen=True)
class AgentSetup:
    """What ``eval`` and ``generate`` build from their shared flags before solving."""

    book: Any
    """Scripted turns per problem (``--backend scripted``), else None."""
    backend: Any
    """The real backend, else None (scripted runs build one per problem from ``book``)."""
    format: str
    model: str
    config: Any
    """The ``AgentConfig`` every sample is solved with."""

    def eval_config(self, args: argparse.Namespace, temperature: float, **fields: Any) -> Any:
        """The run's ``EvalConfig`` from the flags ``eval`` and ``generate`` share; ``fields`` adds the rest."""
        from mathagent.evals.runner import EvalConfig

        return EvalConfig(
            k=args.k,
            temperature=temperature,
            concurrency=args.concurrency,
            limit=args.limit,
            seed=args.seed,
            verify=args.verify,
            backend=args.backend or getattr(self.backend, "name", "") or "auto",
            model=self.model,
            base_url=args.base_url,
            format=self.format,
            max_rounds=args.max_rounds,
            **fields,
        )


def agent_setup(args: argparse.Namespace, temperature: float) -> AgentSetup:
    from mathagent.agent.backends.scripted import ScriptBook
    from mathagent.agent.config import AgentConfig
    from mathagent.agent.modes import split_mode

    mode, args.verify = split_mode(getattr(args, "mode", None), args.verify)
    scripted = args.backend == "scripted"
    book = ScriptBook(args.script) if scripted else None
    backend = None if scripted else backend_from_args(args)
    fmt = args.format or (getattr(backend, "default_format", None) if backend else "markdown") or "markdown"
    model = args.model or (getattr(backend, "model", "") if backend else "scripted")
    cfg = AgentConfig(format=fmt, temperature=temperature, seed=args.seed, verify=args.verify, mode=mode)
    if getattr(args, "verify_prompt", None):
        cfg = cfg.with_(verify_prompt=args.verify_prompt)
    if args.max_rounds:
        cfg = cfg.with_(max_rounds=args.max_rounds)
    return AgentSetup(book, backend, fmt, model, cfg)


def _prompt_hashes() -> dict[str, str]:
    out = {}
    try:
        from importlib import resources

        for f in (resources.files("mathagent.agent") / "prompts").iterdir():
            if f.name.endswith((".md", ".txt", ".jinja")):
                out[f.name] = hashlib.sha256(f.read_bytes()).hexdigest()[:16]
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        pass
    return out


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.replay:
        from mathagent.evals import cli_replay

        return cli_replay.main(
            [*args.replay, "--concurrency", str(args.concurrency)]
            + (["--limit", str(args.limit)] if args.limit else [])
            + (["--json"] if args.json else [])
        )
    from mathagent.agent.modes import config_mode
    from mathagent.evals.datasets import DatasetError, dataset_info, load_problems
    from mathagent.evals.runner import make_provider, pool_size_for, run_eval_async, solve_with_loop
    from mathagent.evals.runs import RunDir, RunMismatch, default_runs_dir, git_revision, package_versions
    from mathagent.evals.summary import summarize

    temperature = args.temperature if args.temperature is not None else (0.0 if args.k == 1 else 0.7)
    from mathagent.evals.voting import Weights

    if args.weights is None:
        args.weights = str(Weights())
    try:
        problems = load_problems(args.dataset, limit=args.limit, seed=args.seed, shuffle=args.shuffle)
        info = dataset_info(args.dataset)
    except DatasetError as e:
        print(f"mathagent eval: {e}", file=sys.stderr)
        return 2
    setup = agent_setup(args, temperature)
    book, backend, fmt, model, agent_cfg = setup.book, setup.backend, setup.format, setup.model, setup.config
    from mathagent.evals.choose import resolve_weights

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
        extra={"shuffle": args.shuffle, "script": args.script, "agent": agent_cfg.to_dict()},
    )
    run_dir = (
        Path(args.run_dir)
        if args.run_dir
        else default_runs_dir()
        / (
            f"{info['name']}-{(model or args.backend or 'auto').replace('/', '_')}-k{args.k}-"
            + hashlib.sha256(json.dumps(cfg.identity(), sort_keys=True, default=str).encode()).hexdigest()[:8]
        )
    )
    identity = {
        "config": cfg.identity(),
        "dataset": info,
        "grading_dataset": problems[0].dataset if problems else "",
    }
    extra = {
        "git_revision": git_revision(),
        "package_versions": package_versions(),
        "prompt_hashes": _prompt_hashes(),
        "argv": argv,
        "mode": config_mode(agent_cfg),
        "vote_weights": vote_weights.to_dict(),
    }
    try:
        run = RunDir.open(run_dir, identity, extra, force=args.force)
    except RunMismatch as e:
        print(f"mathagent eval: {e}", file=sys.stderr)
        return 2
    provider = make_provider(pool_size_for(args.concurrency))
    run.header["sandbox_level"] = str(getattr(getattr(provider, "level", None), "value", None))

    async def solve_fn(problem: Any, i: int, seed: int | None) -> Any:
        b = book.backend(problem.id, fmt) if book is not None else backend
        return await solve_with_loop(
            problem.question, b, provider, agent_cfg, problem_id=problem.id, sample_index=i
        )

    import asyncio

    t0 = time.perf_counter()
    total = len(problems) * args.k
    progress = None
    if not args.json:
        progress = EvalProgress(
            total,
            len(
                run.done(retry_failed=args.retry_failed)
                & {(p.id, i) for p in problems for i in range(args.k)}
            ),
        )
    try:
        with progress if progress else _null():
            counts = asyncio.run(
                run_eval_async(
                    problems,
                    solve_fn,
                    run,
                    k=args.k,
                    concurrency=args.concurrency,
                    seed=args.seed,
                    retry_failed=args.retry_failed,
                    on_record=progress.update if progress else None,
                )
            )
    finally:
        try:
            provider.close()
        except Exception:  # noqa: BLE001
            pass
        if backend is not None and hasattr(backend, "aclose"):
            asyncio.run(backend.aclose())
    keys = {(p.id, i) for p in problems for i in range(args.k)}
    records = [r for r in run.records() if (str(r["problem_id"]), int(r.get("sample_index", 0))) in keys]
    dataset = problems[0].dataset if problems else "math"
    summary = summarize(records, k=args.k, weights=args.weights, dataset=dataset, prune=args.prune)
    summary["vote_weights"] = vote_weights.to_dict()
    summary["mode"] = config_mode(agent_cfg)
    if vote_weights.source == "calibrated":
        cal = summarize(records, k=args.k, weights=vote_weights.weights, dataset=dataset, prune=args.prune)
        summary["overall"]["weighted_calibrated_at_k"] = cal["overall"].get("weighted_at_k")
    summary.update(run_dir=str(run.path), wall_s=round(time.perf_counter() - t0, 2), counts=counts)
    run.write_summary(summary)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print_summary(summary)
    return 0


class EvalProgress:
    """A rich progress bar with the running accuracy (first samples)."""

    def __init__(self, total: int, done: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]eval"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[acc]}"),
            TimeRemainingColumn(),
            transient=False,
        )
        self.task = self.progress.add_task("eval", total=total, completed=done, acc="")
        self.n = self.correct = self.failed = 0

    def update(self, rec: dict[str, Any]) -> None:
        self.n += 1
        self.correct += bool(rec.get("correct"))
        self.failed += rec.get("status") == "failed"
        acc = f"acc {100 * self.correct / self.n:.1f}% ({self.correct}/{self.n})"
        if self.failed:
            acc += f" failed {self.failed}"
        self.progress.update(self.task, advance=1, acc=acc)

    def __enter__(self) -> EvalProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)


def print_summary(summary: dict[str, Any]) -> None:
    from mathagent.evals.summary import summary_rows
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


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: object) -> None:
        return None
