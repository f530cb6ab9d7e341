"""Async convenience for the agent loop: run a cell in a worker thread."""

from __future__ import annotations

import asyncio

from mathagent.sandbox.base import ExecResult, Sandbox


async def arun(sandbox: Sandbox, code: str, timeout: float | None = None) -> ExecResult:
    """``await arun(sb, code, timeout)``: :meth:`Sandbox.run` without blocking the event loop."""
    return await asyncio.to_thread(sandbox.run, code, timeout)
