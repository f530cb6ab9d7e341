"""Evaluation orchestration: problems x k samples -> graded records in a resumable run folder.

:func:`run_eval_async` is independent of how a trace is produced: it awaits ``solve_fn(problem,
sample_index, seed) -> Trace``; :func:`solve_with_loop` runs the real agent loop for one sample. A sample whose solve raises, or whose trace stopped with
``StopReason.ERROR`` (the harness could not run it), is recorded with ``status="failed"`` and its reason,
and the run goes on; one the model ended without an answer (``NO_ANSWER``, its code block cut by max_tokens
too) is ``ok`` and graded wrong. A
:class:`~mathagent.agent.backends.base.ServerGone` (the model server exited) is the run's failure,
not a sample's: the run stops on it with nothing recorded for the samples in flight, which a resume
runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from mathagent.agent.backends.base import Backend, ServerGone
from mathagent.agent.config import AgentConfig
from mathagent.agent.grading import grader_version, is_equivalent
from mathagent.agent.grading.voting import Weights, trace_fabricates_output, trace_ran_code
from mathagent.agent.loop import solve
from mathagent.agent.trace import StepKind, StopReason, Trace
from mathagent.evals.datasets import Problem
from mathagent.evals.runs import RunDir
from mathagent.sandbox.aio import reserve_threads
from mathagent.sandbox.base import SandboxProvider
from mathagent.sandbox.pool import KernelPool

log = logging.getLogger(__name__)

SolveFn = Callable[[Problem, int, "int | None"], Awaitable[Trace]]
"""``solve_fn(problem, sample_index, seed)``: one sample's trace."""
ProgressFn = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class EvalConfig:
    """What defines an evaluation run (stored in the header; a resume must match it)."""

    dataset: str
    """Data set name or path."""
    k: int = 1
    """Samples per problem."""
    temperature: float = 0.0
    concurrency: int = 4
    """Samples solved at the same time."""
    limit: int | None = None
    seed: int = 0
    """Base seed: sample ``i`` of a problem gets ``seed + i``; also reaches data shuffles."""
    verify: bool = True
    """Run code-based self-verification."""
    weights: str = str(Weights())
    """Verification vote weights ``w_T,w_U,w_F``."""
    backend: str = "openai"
    model: str = ""
    base_url: str | None = None
    format: str | None = None
    max_rounds: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Anything else that identifies the run (prompt hashes, sandbox level...)."""

    def identity(self) -> dict[str, Any]:
        """The part compared on resume (concurrency does not change results, so it is left out)."""
        d = asdict(self)
        d.pop("concurrency")
        return d


def sample_seed(seed: int | None, sample_index: int) -> int | None:
    return None if seed is None else seed + sample_index


def exec_counts(trace: Trace) -> dict[str, int]:
    out = {"cells": 0, "errors": 0, "timeouts": 0, "restarts": 0}
    for s in trace.steps:
        if s.kind is StepKind.EXECUTION and s.execution is not None:
            ex = s.execution
            out["cells"] += 1
            out["errors"] += ex.error is not None
            out["timeouts"] += ex.timed_out
            out["restarts"] += ex.kernel_restarted
    return out


def sample_record(problem: Problem, sample_index: int, trace: Trace | None, error: str | None = None) -> dict:
    """One line of ``samples.jsonl``: the trace plus its grading."""
    rec: dict[str, Any] = {
        "problem_id": problem.id,
        "sample_index": sample_index,
        "dataset": problem.dataset,
        "level": problem.level,
        "subject": problem.subject,
        "question": problem.question,
        "gold": problem.gold,
    }
    if trace is None or trace.stop_reason is StopReason.ERROR:
        reason = error or (trace.error if trace else None) or "unknown error"
        rec.update(status="failed", error=reason, answer=None, correct=False)
    else:
        rec.update(status="ok", error=None, answer=trace.final_answer)
        rec["correct"] = bool(
            trace.final_answer is not None
            and is_equivalent(trace.final_answer, problem.gold, problem.dataset or "generic")
        )
        rec["grader"] = grader_version()  # which grader judged it (summaries re-judge other graders')
    if trace is not None:
        rec.update(
            verification_state=trace.verification_state.value if trace.verification_state else None,
            ran_code=trace_ran_code(trace),
            fabricated_output=trace_fabricates_output(trace),
            stop_reason=trace.stop_reason.value,
            tokens_in=trace.tokens_in,
            tokens_out=trace.tokens_out,
            time_s=float(trace.timings.get("total", 0.0)),
            exec=exec_counts(trace),
            trace=trace.to_dict(),
        )
    else:
        rec.update(verification_state=None, ran_code=False, stop_reason="error", exec={}, trace=None)
    return rec


async def run_eval_async(
    problems: Sequence[Problem],
    solve_fn: SolveFn,
    run: RunDir,
    *,
    k: int = 1,
    concurrency: int = 4,
    seed: int | None = 0,
    retry_failed: bool = False,
    on_record: ProgressFn | None = None,
) -> dict[str, int]:
    """Solve every pending (problem, sample) and append its record. Returns counts. The running loop
    gets a thread per trajectory for blocking sandbox calls (:func:`~mathagent.sandbox.aio.reserve_threads`)."""
    reserve_threads(concurrency)
    keys = [(p.id, i) for p in problems for i in range(k)]
    pending = run.pending(keys, retry_failed=retry_failed)
    by_id = {p.id: p for p in problems}
    sem = asyncio.Semaphore(max(1, concurrency))
    counts = {"total": len(keys), "skipped": len(keys) - len(pending), "ran": 0, "failed": 0}
    log.info("run %s: %d samples, %d already done", run.path, len(keys), counts["skipped"])

    async def one(pid: str, i: int) -> None:
        problem = by_id[pid]
        async with sem:
            t0 = time.perf_counter()
            try:
                trace = await solve_fn(problem, i, sample_seed(seed, i))
                rec = sample_record(problem, i, trace)
            except (asyncio.CancelledError, ServerGone):
                raise
            except Exception as e:  # a failed sample is recorded; the run goes on
                log.warning("sample %s#%d failed: %s", pid, i, e)
                rec = sample_record(problem, i, None, f"{type(e).__name__}: {e}")
                rec["time_s"] = time.perf_counter() - t0
            run.append(rec)
        counts["ran"] += 1
        counts["failed"] += rec["status"] == "failed"
        if on_record:
            on_record(rec)

    await asyncio.gather(*(one(pid, i) for pid, i in pending))
    return counts


async def run_eval_by_problem(
    problems: Sequence[Problem],
    solve_problem: Callable[[Problem], Awaitable[Sequence[Trace]]],
    run: RunDir,
    *,
    k: int,
    problems_at_once: int = 1,
    retry_failed: bool = False,
    on_record: ProgressFn | None = None,
) -> dict[str, int]:
    """Like :func:`run_eval_async`, but the ``k`` samples of a problem are solved together
    (``solve_problem`` returns them in sample order), as contested-only verification needs: a problem
    with any sample pending is solved again in full, and its new records supersede the old ones (the
    newest record of a sample is the one that counts). A failed ``solve_problem`` records all ``k``
    samples as failed; ``problems_at_once`` problems run at the same time."""
    keys = [(p.id, i) for p in problems for i in range(k)]
    pending = set(run.pending(keys, retry_failed=retry_failed))
    todo = [p for p in problems if any((p.id, i) in pending for i in range(k))]
    reserve_threads(max(1, problems_at_once) * k)
    sem = asyncio.Semaphore(max(1, problems_at_once))
    counts = {"total": len(keys), "skipped": len(keys) - k * len(todo), "ran": 0, "failed": 0}
    log.info(
        "run %s: %d problems of %d samples, %d samples already done",
        run.path,
        len(todo),
        k,
        counts["skipped"],
    )

    async def one(problem: Problem) -> None:
        async with sem:
            t0 = time.perf_counter()
            try:
                traces = list(await solve_problem(problem))
                if len(traces) != k:
                    raise RuntimeError(f"{len(traces)} samples came back, not {k}")
                recs = [sample_record(problem, i, t) for i, t in enumerate(traces)]
            except (asyncio.CancelledError, ServerGone):
                raise
            except Exception as e:  # a failed problem is recorded; the run goes on
                log.warning("problem %s failed: %s", problem.id, e)
                recs = [sample_record(problem, i, None, f"{type(e).__name__}: {e}") for i in range(k)]
                for rec in recs:
                    rec["time_s"] = (time.perf_counter() - t0) / k
            for rec in recs:
                run.append(rec)
                counts["ran"] += 1
                counts["failed"] += rec["status"] == "failed"
                if on_record:
                    on_record(rec)

    await asyncio.gather(*(one(p) for p in todo))
    return counts


# -- the real agent ------------------------------------------------------------------------------
def make_provider(size: int = 2) -> KernelPool:
    """The sandbox provider of a run: a kernel pool keeping ``size`` kernels ready."""
    return KernelPool(size=size)


async def solve_with_loop(
    problem: str,
    backend: Backend,
    provider: SandboxProvider,
    config: AgentConfig,
    *,
    problem_id: str = "",
    sample_index: int = 0,
) -> Trace:
    """Run the real agent loop (:func:`mathagent.agent.loop.solve`) for one sample."""
    return await solve(problem, backend, provider, config, problem_id=problem_id, sample_index=sample_index)
