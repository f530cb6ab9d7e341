"""The REPL's command handling around the runtime: a command that replaces the backend retires the
old one at once (its model server must not run on until the session ends)."""

from __future__ import annotations

import asyncio
import io

from mathagent.agent.repl.app import Repl
from mathagent.agent.repl.settings import ReplSettings
from rich.console import Console


class RecordingRuntime:
    """Stands in for the runtime's backend bookkeeping: what the REPL asked of it."""

    def __init__(self, warming: list[str]) -> None:
        self.warming, self.calls = warming, []

    def warm(self, settings: ReplSettings) -> list[str]:
        self.calls.append(("warm", settings.model))
        return self.warming

    def close_retired(self) -> None:
        self.calls.append(("close_retired", None))


def _repl(warming: list[str]) -> tuple[Repl, RecordingRuntime, io.StringIO]:
    out = io.StringIO()
    repl = Repl(ReplSettings(script="turns.json"), Console(file=out, width=120))
    runtime = RecordingRuntime(warming)
    repl.runtime = runtime  # type: ignore[assignment]
    return repl, runtime, out


def test_a_command_that_warms_a_new_backend_retires_the_old_one():
    repl, runtime, out = _repl(["bundled llama.cpp (qwen2.5-coder-0.5b)"])
    asyncio.run(repl.command("/model qwen2.5-coder-0.5b"))
    assert runtime.calls == [("warm", "qwen2.5-coder-0.5b"), ("close_retired", None)]
    assert "warming up: bundled llama.cpp (qwen2.5-coder-0.5b)" in out.getvalue()


def test_a_command_that_keeps_the_backend_retires_nothing():
    repl, runtime, out = _repl([])
    asyncio.run(repl.command("/temperature 0.5"))
    assert runtime.calls == [("warm", None)]
    assert "temperature = 0.5" in out.getvalue() and "warming up" not in out.getvalue()
