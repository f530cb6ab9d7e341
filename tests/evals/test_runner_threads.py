"""The runner's loop has a thread for every trajectory's blocking sandbox call.

asyncio's default executor holds ``min(32, cpus + 4)`` threads (6 on 2 cores). Every blocking sandbox
call (acquire, run, close) goes through it, so with more trajectories than threads, the acquires that
wait for a kernel held every thread and the cells of trajectories that already had one waited behind
them: on a cold pool no sample finished before the last waiting acquire got its kernel."""

from __future__ import annotations

import asyncio
import os
import threading

from mathagent.agent.trace import StopReason, Trace
from mathagent.evals.datasets import Problem
from mathagent.evals.runner import run_eval_async
from mathagent.evals.runs import RunDir
from mathagent.sandbox.aio import executor_threads


def test_calls_that_wait_do_not_hold_back_the_call_they_wait_for(tmp_path):
    """More trajectories than asyncio's default threads block in ``to_thread`` (like acquires waiting
    for a kernel) until the last trajectory's own ``to_thread`` call (like a cell) has run."""
    waiting = min(32, (os.cpu_count() or 1) + 4) + 2  # more than the default executor's threads
    gate = threading.Event()
    problems = [Problem(id=f"p{i}", question="q", gold="1", dataset="generic") for i in range(waiting + 1)]

    async def solve_fn(problem: Problem, i: int, seed: int | None) -> Trace:
        if problem.id == f"p{waiting}":
            await asyncio.sleep(0.2)  # the others are blocked by now
            await asyncio.to_thread(gate.set)
        elif not await asyncio.to_thread(gate.wait, 30):
            raise TimeoutError("the call this one waits for never ran")
        return Trace(problem=problem.question, final_answer="1", stop_reason=StopReason.ANSWERED)

    run = RunDir.open(tmp_path / "run", {"test": "threads"})
    counts = asyncio.run(run_eval_async(problems, solve_fn, run, concurrency=len(problems)))
    assert counts["ran"] == len(problems) and counts["failed"] == 0, counts
    assert all(r["status"] == "ok" and r["correct"] for r in run.records())


def test_executor_threads_cover_every_trajectory():
    default = min(32, (os.cpu_count() or 1) + 4)
    assert executor_threads(1) == 1 + default
    assert executor_threads(256) == 256 + default
    assert executor_threads(0) == 1 + default
