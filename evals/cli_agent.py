"""What ``mathagent eval`` and ``mathagent generate`` share: the agent built from their flags and the
one sequence that runs it over a run folder (sandbox pool, per-sample solve, progress bar, resumable
run, close).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mathagent.agent.backends import make_backend
from mathagent.agent.backends.base import Backend
from mathagent.agent.backends.scripted import ScriptBook
from mathagent.agent.config import AgentConfig
from mathagent.agent.flags import add_agent_flags
from mathagent.agent.modes import split_mode
from mathagent.agent.prompts import prompt_hashes
from mathagent.agent.trace import Trace
from mathagent.evals.datasets import Problem
from mathagent.evals.limits import Limits, derive_limits, machine
from mathagent.evals.runner import EvalConfig, make_provider, run_eval_async, solve_with_loop
from mathagent.evals.runs import RunDir, git_revision, package_versions
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

AGENT_FLAGS = (
    "backend",
    "model",
    "base_url",
    "request_timeout",
    "format",
    "script",
    "k",
    "temperature",
    "concurrency",
    "limit",
    "shuffle",
    "seed",
    "max_rounds",
    "max_tokens",
    "max_inflight",
    "pool_size",
    "verify",
)
"""The shared agent flags (:mod:`mathagent.agent.flags`) that ``eval`` and ``generate`` take."""


def add_run_agent_flags(
    parser: argparse.ArgumentParser,
    names: Sequence[str] = AGENT_FLAGS,
    *,
    defaults: dict[str, Any] | None = None,
    helps: dict[str, str] | None = None,
) -> None:
    """The agent flags with the defaults ``eval`` and ``generate`` have always had: the environment's
    backend, model and server, seed 0, and no round limit recorded unless given."""
    base = {
        "backend": os.environ.get("MATHAGENT_BACKEND"),
        "model": os.environ.get("MATHAGENT_MODEL", ""),
        "base_url": os.environ.get("OPENAI_BASE_URL"),
        "seed": 0,
        "max_rounds": None,
        "concurrency": None,
    }
    add_agent_flags(
        parser,
        names,
        defaults={k: v for k, v in {**base, **(defaults or {})}.items() if k in names},
        helps={
            "seed": "base seed: sample i of a problem uses seed+i; also seeds --shuffle (default 0)",
            "max_rounds": "most code executions (code calls) per sample (default 6)",
            "concurrency": "trajectories solved at the same time (default: --max-inflight plus a quarter)",
            **(helps or {}),
        },
    )


def backend_from_args(args: argparse.Namespace) -> Backend:
    """The backend ``--model`` / ``--base-url`` / ``--backend`` name (no flags: the bundled model)."""
    backend = None if args.backend in (None, "", "auto") else args.backend
    return make_backend(
        args.model or None, args.base_url or None, backend=backend, request_timeout=args.request_timeout
    )


@dataclass(frozen=True)
class AgentSetup:
    """What ``eval`` and ``generate`` build from their shared flags before solving."""

    book: ScriptBook | None
    """Scripted turns per problem (``--backend scripted``), else None."""
    backend: Backend | None
    """The real backend, else None (scripted runs build one per problem from ``book``)."""
    format: str
    model: str
    config: AgentConfig
    """The ``AgentConfig`` every sample is solved with."""
    limits: Limits
    """Requests in flight, trajectories at once and ready kernels (given or derived)."""

    def eval_config(self, args: argparse.Namespace, temperature: float, **fields: Any) -> EvalConfig:
        """The run's ``EvalConfig`` from the flags ``eval`` and ``generate`` share; ``fields`` adds the rest."""
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

    def backend_for(self, problem_id: str, sample_index: int) -> Backend:
        """The backend that solves one sample."""
        if self.book is not None:
            return self.book.backend(problem_id, self.format, sample_index)
        assert self.backend is not None
        return self.backend

    async def aclose(self) -> None:
        if self.backend is not None:
            await self.backend.aclose()


def agent_setup(args: argparse.Namespace, temperature: float) -> AgentSetup:
    scripted = args.backend == "scripted"
    book = ScriptBook(args.script) if scripted else None
    backend = None if scripted else backend_from_args(args)
    fmt = args.format or (getattr(backend, "default_format", None) if backend else "markdown") or "markdown"
    model = args.model or (getattr(backend, "model", "") if backend else "scripted")
    mode, args.verify = split_mode(getattr(args, "mode", None), args.verify)
    cfg = AgentConfig(format=fmt, temperature=temperature, seed=args.seed, verify=args.verify, mode=mode)
    if getattr(args, "verify_prompt", None):
        cfg = cfg.with_(verify_prompt=args.verify_prompt)
    if args.max_rounds:
        cfg = cfg.with_(max_rounds=args.max_rounds)
    if getattr(args, "max_tokens", None):
        cfg = cfg.with_(max_tokens=args.max_tokens)
    limits = run_limits(args, backend)
    args.concurrency = limits.concurrency
    return AgentSetup(book, backend, fmt, model, cfg, limits)


def run_limits(args: argparse.Namespace, backend: Backend | None) -> Limits:
    """The run's limits from ``--max-inflight`` / ``--concurrency`` / ``--pool-size`` and this machine;
    the backend's request cap is set to ``max_inflight``. A backend that talks to a server this
    process did not start counts as remote (see :mod:`mathagent.evals.limits`)."""
    remote = (
        backend is not None and hasattr(backend, "max_concurrency") and getattr(backend, "server", 0) is None
    )
    limits = derive_limits(
        machine(),
        remote=remote,
        max_inflight=getattr(args, "max_inflight", None),
        concurrency=args.concurrency,
        pool_size=getattr(args, "pool_size", None),
    )
    if backend is not None and hasattr(backend, "max_concurrency"):
        # OpenAIBackend builds its semaphore from this attribute at the first request
        backend.max_concurrency = limits.max_inflight
    return limits


def header_extra(argv: Sequence[str]) -> dict[str, Any]:
    """What a run header records besides its identity: code revision, versions, prompts, command."""
    return {
        "git_revision": git_revision(),
        "package_versions": package_versions(),
        "prompt_hashes": prompt_hashes(),
        "argv": list(argv),
    }


class EvalProgress:
    """A rich progress bar with the running accuracy (first samples)."""

    def __init__(self, total: int, done: int) -> None:
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

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)


def run_agent(
    problems: Sequence[Problem],
    run: RunDir,
    setup: AgentSetup,
    *,
    k: int,
    concurrency: int,
    seed: int | None,
    retry_failed: bool,
    progress: bool,
) -> dict[str, int]:
    """Solve every pending (problem, sample) of ``run`` with the agent, then close the sandboxes and
    the backend; returns the runner's counts."""
    provider = make_provider(setup.limits.pool_size)
    print(setup.limits.describe(), file=sys.stderr)
    run.header["sandbox_level"] = str(getattr(getattr(provider, "level", None), "value", None))

    async def solve_fn(problem: Problem, i: int, seed: int | None) -> Trace:
        return await solve_with_loop(
            problem.question,
            setup.backend_for(problem.id, i),
            provider,
            setup.config,
            problem_id=problem.id,
            sample_index=i,
        )

    keys = {(p.id, i) for p in problems for i in range(k)}
    bar = EvalProgress(len(keys), len(run.done(retry_failed=retry_failed) & keys)) if progress else None
    try:
        with bar if bar is not None else contextlib.nullcontext():
            return asyncio.run(
                run_eval_async(
                    problems,
                    solve_fn,
                    run,
                    k=k,
                    concurrency=concurrency,
                    seed=seed,
                    retry_failed=retry_failed,
                    on_record=bar.update if bar is not None else None,
                )
            )
    finally:
        try:
            provider.close()
        except Exception:  # noqa: BLE001 - closing must not hide the run's own error
            pass
        asyncio.run(setup.aclose())
