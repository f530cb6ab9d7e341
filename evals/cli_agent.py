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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mathagent.agent.backends import make_backend
from mathagent.agent.backends.base import Backend, BackendError, ServerGone, server_slots
from mathagent.agent.backends.scripted import ScriptBook
from mathagent.agent.config import AgentConfig
from mathagent.agent.flags import add_agent_flags, given
from mathagent.agent.loop import solve_k
from mathagent.agent.modes import args_mode
from mathagent.agent.presets import Preset, PresetError, apply_preset, load_preset
from mathagent.agent.prompts import load_prompt, prompt_hashes
from mathagent.agent.trace import Trace
from mathagent.evals.datasets import Problem
from mathagent.evals.limits import Limits, derive_limits, machine
from mathagent.evals.runner import (
    EvalConfig,
    make_provider,
    run_eval_async,
    run_eval_by_problem,
    solve_with_loop,
)
from mathagent.evals.runs import Key, RunDir, RunWriteError, git_revision, package_versions, stop_message
from mathagent.evals.summary import regrade
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

AGENT_FLAGS = (
    "backend",
    "model",
    "base_url",
    "request_timeout",
    "continue_mode",
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
    "preset",
    "system_prompt",
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
            "max_rounds": f"most code executions (code calls) per sample (default {AgentConfig().max_rounds})",
            "concurrency": "trajectories solved at the same time (default: --max-inflight plus a quarter)",
            **(helps or {}),
        },
    )


def backend_from_args(args: argparse.Namespace) -> Backend:
    """The backend ``--model`` / ``--base-url`` / ``--backend`` name (no flags: the bundled model)."""
    backend = None if args.backend in (None, "", "auto") else args.backend
    return make_backend(
        args.model or None,
        args.base_url or None,
        backend=backend,
        request_timeout=args.request_timeout,
        continue_mode=getattr(args, "continue_mode", None) or "auto",
    )


def describe_backend(backend: Backend | None, prog: str = "mathagent") -> dict[str, Any]:
    """Probe how ``backend`` continues a partial assistant turn and its context length (OpenAI-compatible
    backends), print one line about it to stderr, and return it for the run header. A server that
    cannot be probed ends the command (exit 2) with the reason."""
    prepare = getattr(backend, "prepare", None)
    if backend is None or not callable(prepare):
        return {}
    try:
        cont = prepare()
    except BackendError as e:
        print(f"{prog}: cannot probe the model server: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    where = getattr(backend, "base_url", None) or "OpenAI"
    print(f"{prog}: {backend.model or 'default model'} at {where}: {cont.describe()}", file=sys.stderr)
    return {
        "continuation": cont.to_dict(),
        "context_window": getattr(backend, "context_window", None),
        "context_source": getattr(backend, "context_source", ""),
    }


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
    preset: Preset | None = None
    """The preset the config runs (``--preset``), else None."""

    def header_fields(self) -> dict[str, Any]:
        """What the run header records about the preset and the system prompt (besides the identity)."""
        out: dict[str, Any] = {}
        if self.preset is not None:
            p = self.preset
            out["preset"] = {"name": p.name, "path": p.path, "sha256": p.sha256, "source": p.source}
        if self.config.system_prompt:
            sp = load_prompt(self.config.system_prompt)
            out["system_prompt"] = {"name": sp.name, "sha256": sp.sha256}
        return out

    backend_info: dict[str, Any] = field(default_factory=dict)
    """How the backend continues a partial assistant turn and its context length (run header)."""
    verify_note: str | None = None
    """Why verification is off when a measured default turned it off (``modes.default_verify``)."""

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
    """The backend and ``AgentConfig`` the flags describe. Raises ``ValueError`` (before any backend
    starts) for an unknown ``--preset``, a ``--format`` it does not write, or a missing ``--system-prompt``."""
    preset_name = getattr(args, "preset", None)
    preset = load_preset(preset_name) if preset_name else None
    if preset is not None and args.format and preset.format and args.format != preset.format:
        raise PresetError(f"--format {args.format} conflicts with preset {preset.name} ({preset.format})")
    system_prompt = getattr(args, "system_prompt", None)
    if system_prompt:
        load_prompt(system_prompt)
    scripted = args.backend == "scripted"
    book = ScriptBook(args.script) if scripted else None
    backend = None if scripted else backend_from_args(args)
    info = describe_backend(backend)
    fmt = (
        args.format
        or (preset.format if preset is not None else None)
        or (getattr(backend, "default_format", None) if backend else "markdown")
        or "markdown"
    )
    model = args.model or (getattr(backend, "model", "") if backend else "scripted")
    mode, args.verify, why = args_mode(args)
    cfg = AgentConfig(format=fmt, temperature=temperature, seed=args.seed, verify=args.verify, mode=mode)
    if getattr(args, "verify_prompt", None):
        cfg = cfg.with_(verify_prompt=args.verify_prompt)
    if system_prompt:
        cfg = cfg.with_(system_prompt=system_prompt)
    cfg = apply_preset(
        cfg,
        preset_name,
        format=fmt,
        max_rounds=given(args.max_rounds),
        max_tokens=given(getattr(args, "max_tokens", None)),
    )
    limits = run_limits(args, backend)
    args.concurrency = limits.concurrency
    return AgentSetup(
        book, backend, fmt, model, cfg, limits, preset=preset, backend_info=info, verify_note=why
    )


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
        server_slots=server_slots(backend),
    )
    if backend is not None and hasattr(backend, "max_concurrency"):
        # OpenAIBackend builds its semaphore from this attribute at the first request
        backend.max_concurrency = limits.max_inflight
    return limits


def header_extra(argv: Sequence[str], settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a run header records besides its identity: code revision, versions, prompts, command, and
    the parsed flags (``settings``: ``--config header.json`` reads them back)."""
    return {
        "git_revision": git_revision(),
        "package_versions": package_versions(),
        "prompt_hashes": prompt_hashes(),
        "argv": list(argv),
        **({"settings": settings} if settings is not None else {}),
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
    prog: str,
    argv: Sequence[str],
    **solve: Any,
) -> dict[str, int] | None:
    """Solve every pending (problem, sample) of ``run`` with the agent (``solve``: the keywords of
    :func:`_run_agent`), then close the sandboxes and the backend; returns the runner's counts. When the
    run folder cannot be written (a full disk), or the model server exited, it prints what is saved and
    the command that resumes (``prog`` + ``argv``) and returns None."""
    try:
        return _run_agent(problems, run, setup, **solve)
    except RunWriteError as e:
        print(stop_message(prog, e, argv), file=sys.stderr)
        return None
    except ServerGone as e:
        print(stop_message(prog, e, argv), file=sys.stderr)
        print(
            f"{prog}: {len(run.done())} samples are saved in {run.path}; the samples in flight when the "
            "server went away were not recorded (the resume runs them)",
            file=sys.stderr,
        )
        return None


def todays_records(
    run: RunDir, keys: Iterable[Key], *, prog: str, argv: Sequence[str]
) -> tuple[list[dict[str, Any]], int] | None:
    """The run's records of ``keys`` with today's verdicts (:func:`mathagent.evals.summary.regrade`) and
    how many changed. Changed records are appended to the folder (the latest line of a key counts), so
    the folder agrees with the summary; on a failed write it prints what to do and returns None."""
    records, changed = regrade(run.records_of(keys))
    try:
        for rec in changed:
            run.append(rec)
    except RunWriteError as e:
        print(stop_message(prog, e, argv), file=sys.stderr)
        return None
    return records, len(changed)


def _run_agent(
    problems: Sequence[Problem],
    run: RunDir,
    setup: AgentSetup,
    *,
    k: int,
    concurrency: int,
    seed: int | None,
    retry_failed: bool,
    progress: bool,
    verify_contested: bool = False,
) -> dict[str, int]:
    provider = make_provider(setup.limits.pool_size)
    print(setup.limits.describe(), file=sys.stderr)
    for warning in setup.limits.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if setup.verify_note:
        print(setup.verify_note, file=sys.stderr)
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

    async def solve_problem(problem: Problem) -> list[Trace]:
        first = setup.backend_for(problem.id, 0)
        return await solve_k(
            problem.question,
            first,
            provider,
            setup.config,
            k=k,
            problem_id=problem.id,
            at_once=None if server_slots(first) == 1 else max(1, min(k, concurrency)),
            verify_contested=True,
            dataset=problem.dataset or "math",
            backend_for=lambda i: setup.backend_for(problem.id, i),
        )

    keys = {(p.id, i) for p in problems for i in range(k)}
    bar = EvalProgress(len(keys), len(run.done(retry_failed=retry_failed) & keys)) if progress else None
    try:
        with bar if bar is not None else contextlib.nullcontext():
            if verify_contested:
                return asyncio.run(
                    run_eval_by_problem(
                        problems,
                        solve_problem,
                        run,
                        k=k,
                        problems_at_once=max(1, concurrency // k),
                        retry_failed=retry_failed,
                        on_record=bar.update if bar is not None else None,
                    )
                )
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
