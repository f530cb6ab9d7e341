"""A model server that exits on its own (a crash) is the run's failure, not one sample's.

The backend tells it from a dropped connection at once (``ServerGone``, no retries); the REPL says so
and starts the server again for the next question. The eval side is in tests/evals/test_eval_server_gone.py.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal

import pytest
from fakeserver import closed_port
from mathagent.agent.backends.base import BackendError, GenerationParams, ServerGone
from mathagent.agent.backends.openai_backend import OpenAIBackend
from mathagent.agent.backends.scripted import ScriptedBackend
from mathagent.agent.llama_server import LlamaServer, describe_exit
from mathagent.agent.repl import runtime as repl_runtime
from mathagent.agent.repl.app import Repl
from mathagent.agent.repl.settings import ReplSettings
from rich.console import Console

CHAT = [{"role": "user", "content": "What is 6*7?"}]


class ExitedServer:
    """What the backend asks of the server it keeps alive: why it is gone (None while it runs)."""

    def __init__(self, reason: str | None) -> None:
        self.reason, self.asked = reason, 0

    def exit_reason(self, wait: float = 0.0) -> str | None:
        self.asked += 1
        return self.reason


def test_exit_statuses_read_as_signals():
    assert describe_exit(-11) == "signal 11 (SIGSEGV)"  # Popen: killed by a signal
    assert describe_exit(139) == "signal 11 (SIGSEGV)"  # a wrapper's 128 + signal
    assert describe_exit(-9) == "signal 9 (SIGKILL)"
    assert describe_exit(1) == "exit status 1" and describe_exit(0) == "exit status 0"


def test_a_dropped_connection_to_an_exited_server_is_not_retried():
    server = ExitedServer("the llama-cpp-python server of m (pid 1) exited with signal 11 (SIGSEGV)")
    b = OpenAIBackend(base_url=f"http://127.0.0.1:{closed_port()}/v1", model="m", server=server)
    with pytest.raises(ServerGone, match=r"signal 11 \(SIGSEGV\)"):
        asyncio.run(b.generate(CHAT, GenerationParams()))
    assert list(b.retry_log) == [] and server.asked == 1  # one try, then the reason


def test_a_dropped_connection_to_a_running_server_is_retried():
    server = ExitedServer(None)  # still running: the drop may pass
    b = OpenAIBackend(base_url=f"http://127.0.0.1:{closed_port()}/v1", model="m", server=server)
    with pytest.raises(BackendError, match="after 5 tries") as err:
        asyncio.run(b.generate(CHAT, GenerationParams()))
    assert not isinstance(err.value, ServerGone) and len(b.retry_log) == 4


@pytest.mark.server
@pytest.mark.model
def test_a_crashed_llama_server_is_reported_with_its_signal():
    """The real bundled server, crashed the way a bad build crashes (SIGSEGV): the next request
    fails at once with how it ended and its log; a server we stopped ourselves is not "gone"."""
    from mathagent.agent.backends import server_backend

    with LlamaServer("qwen2.5-coder-0.5b", n_ctx=512) as server:
        b = server_backend(server)
        params = GenerationParams(max_tokens=4, temperature=0.0)
        assert asyncio.run(b.generate("1 + 1 =", params))[0].completion_tokens > 0
        assert server.exit_reason() is None
        assert server.proc is not None
        os.killpg(server.proc.pid, signal.SIGSEGV)
        with pytest.raises(ServerGone) as err:
            asyncio.run(b.generate("2 + 2 =", params))
        msg = str(err.value)
        assert "signal 11 (SIGSEGV)" in msg and server.base_url in msg and str(server.log_path) in msg
        assert list(b.retry_log) == []
    assert server.exit_reason() is None  # stopped: no longer a crash to report


class GoneBackend(ScriptedBackend):
    """A backend whose server has just died: every request says so."""

    async def generate(self, prompt, params, *, on_text=None):  # type: ignore[override]
        raise ServerGone("the llama-cpp-python server of m (pid 1) exited with signal 11 (SIGSEGV)")


@pytest.mark.kernel
def test_the_repl_reports_a_gone_server_and_starts_a_new_one_for_the_next_question(monkeypatch):
    answer = "We add.\n```python\nprint(1 + 1)\n```\n"
    built: list[ScriptedBackend] = []

    def build(_settings):
        b = GoneBackend([]) if not built else ScriptedBackend([answer, "The answer is \\boxed{2}."])
        built.append(b)
        return b

    monkeypatch.setattr(repl_runtime, "build_backend", build)
    out = io.StringIO()
    repl = Repl(ReplSettings(script="unused.json"), Console(file=out, width=120))

    async def session() -> None:
        try:
            await repl.solve("What is 1 + 1?")
            first = out.getvalue()
            assert "the model server stopped" in first and "SIGSEGV" in first
            assert "next question starts it again" in first and repl.traces == []
            await repl.solve("What is 1 + 1?")
            assert len(built) == 2  # the second question built a new backend
            assert [t.final_answer for t in repl.traces] == ["2"]
        finally:
            await repl.runtime.aclose()

    asyncio.run(session())


@pytest.mark.kernel
def test_solve_says_the_server_stopped_and_exits_1(monkeypatch, capsys):
    from mathagent.agent import cli_solve

    monkeypatch.setattr(cli_solve, "build_backend", lambda args, fmt: GoneBackend([]))
    assert cli_solve.main(["What is 1 + 1?", "--k", "2", "--json"]) == 1
    captured = capsys.readouterr()
    assert "mathagent solve: the model server stopped:" in captured.err and "SIGSEGV" in captured.err
    assert "Traceback" not in captured.err and captured.out == ""
