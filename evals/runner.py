"""Evaluation orchestration: problems x k samples -> graded records in a resumable run folder.

:func:`run_eval` is independent of how a trace is produced: it takes ``solve_fn(problem, sample_index,
seed) -> Trace`` (sync or async). :func:`make_solve_fn` builds the real one from the agent loop, a
backend and a sandbox provider. A sample whose solve raises, or whose trace stopped with
``StopReason.ERROR``, is recorded with ``status="failed"`` and its reason, and the run goes on.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from mathagent.agent.trace import StepKind, StopReason, Trace
from mathagent.evals.datasets import Problem
from mathagent.evals.runs import RunDir

log = logging.getLogger(__name__)

SolveFn = Callable[[Problem, int, "int | None"], "Trace | Awaitable[Trace]"]
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
    weights: str = field(default_factory=lambda: str(_default_weights()))
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
    from mathagent.evals.grading import is_equivalent

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
    if trace is not None:
        from mathagent.evals.voting import trace_fabricates_output, trace_ran_code

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


async def _call(solve_fn: SolveFn, problem: Problem, i: int, seed: int | None) -> Trace:
    if inspect.iscoroutinefunction(solve_fn):
        return await solve_fn(problem, i, seed)
    res = await asyncio.to_thread(solve_fn, problem, i, seed)
    if inspect.isawaitable(res):
        return await res
    return res


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
    """Solve every pending (problem, sample) and append its record. Returns counts."""
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
                trace = await _call(solve_fn, problem, i, sample_seed(seed, i))
                rec = sample_record(problem, i, trace)
            except asyncio.CancelledError:
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


def run_eval(problems: Sequence[Problem], solve_fn: SolveFn, run: RunDir, **kw: Any) -> dict[str, int]:
    """Synchronous wrapper around :func:`run_eval_async`."""
    return asyncio.run(run_eval_async(problems, solve_fn, run, **kw))


# -- the real agent ------------------------------------------------------------------------------
class _FreshSandboxes:
    """A minimal provider: a new :class:`JupyterSandbox` per trajectory (used when no pool exists)."""

    def __init__(self) -> None:
        from mathagent.sandbox.kernel import JupyterSandbox

        self._cls = JupyterSandbox
        self._level = None

    @property
    def level(self):
        return self._level

    def acquire(self):
        sb = self._cls()
        self._level = sb.level
        return sb

    def close(self) -> None:
        pass


MAX_POOL = 16
"""Most ready kernels a run keeps: each ready kernel holds a sandbox slot (~110 MB with its zygote)."""


def pool_size_for(concurrency: int) -> int:
    """Ready kernels for ``concurrency`` trajectories at once: one each, so none waits for a fork
    (measured: pool 8 for 16 trajectories cost 15% over the model's time, pool 16 cost 5%)."""
    return max(1, min(concurrency, MAX_POOL))


def make_provider(size: int = 2) -> Any:
    """The sandbox provider: the kernel pool when available, else fresh sandboxes."""
    try:
        from mathagent.sandbox import KernelPool  # type: ignore[attr-defined]
    except ImportError:
        log.warning("mathagent.sandbox.KernelPool not available; starting one kernel per sample")
        return _FreshSandboxes()
    try:
        return KernelPool(size=size)
    except TypeError:
        return KernelPool()


async def solve_with_loop(
    problem: str, backend: Any, provider: Any, config: Any, *, problem_id: str = "", sample_index: int = 0
) -> Trace:
    """Run the real agent loop (:func:`mathagent.agent.loop.solve`) for one sample."""
    from mathagent.agent import loop

    res = loop.solve(problem, backend, provider, config, problem_id=problem_id, sample_index=sample_index)
    if inspect.isawaitable(res):
        res = await res
    return res


def _default_weights() -> Any:
    from mathagent.evals.voting import Weights

    return Weights()
