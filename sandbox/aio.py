"""Async convenience for the agent loop: sandbox calls in worker threads, and enough of those threads.

Every blocking sandbox call of a trajectory (``provider.acquire``, :meth:`Sandbox.run`,
:meth:`Sandbox.close`) runs through ``asyncio.to_thread``, i.e. in the running loop's *default
executor*, which asyncio sizes by the CPUs (``min(32, cpus + 4)``: 6 threads on 2 cores), not by the
trajectories. With more trajectories than threads, the acquires that wait for a kernel (up to the
pool's acquire timeout) hold every thread, and the cells of trajectories that already hold a kernel
queue behind them: on a cold pool, no sample finished until every waiting acquire had its kernel.
:func:`reserve_threads` gives the loop one thread per trajectory (made only when needed).
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

from mathagent.sandbox.base import ExecResult, Sandbox


async def arun(sandbox: Sandbox, code: str, timeout: float | None = None) -> ExecResult:
    """``await arun(sb, code, timeout)``: :meth:`Sandbox.run` without blocking the event loop."""
    return await asyncio.to_thread(sandbox.run, code, timeout)


def executor_threads(trajectories: int) -> int:
    """Threads for ``trajectories`` trajectories at once: one each (a trajectory makes one blocking
    sandbox call at a time), plus asyncio's own default for everything else that uses threads."""
    return max(1, trajectories) + min(32, (os.cpu_count() or 1) + 4)


def reserve_threads(trajectories: int) -> ThreadPoolExecutor:
    """Make the running loop's default executor large enough for ``trajectories`` trajectories at once
    (call it before the first ``to_thread``; ``asyncio.run`` shuts the executor down at its end).
    Threads are started only when no idle one is free, so a large bound costs nothing unused."""
    executor = ThreadPoolExecutor(
        max_workers=executor_threads(trajectories), thread_name_prefix="sandbox-call"
    )
    asyncio.get_running_loop().set_default_executor(executor)
    return executor
