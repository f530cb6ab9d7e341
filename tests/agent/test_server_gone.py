"""A model server that exits on its own (a crash) is the run's failure, not one sample's.

The backend tells it from a dropped connection at once (``ServerGone``, no retries); a server that
refuses every connection (a remote one that stopped) is gone once its patience has run out; the REPL
says so and starts the server again for the next question. The eval side is in tests/evals/test_eval_server_gone.py.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import threading
import time

import pytest
from fakeserver import FakeOpenAIServer, closed_port
from mathagent.agent.backends.base import BackendError, GenerationParams, ServerGone
from mathagent.agent.backends.openai_backend import OpenAIBackend
from mathagent.agent.backends.retry import RetryPolicy
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
    with pytest.raises(ServerGone, match="refused every connection") as err:
        asyncio.run(b.generate(CHAT, GenerationParams()))
    assert "exited" not in str(err.value) and len(b.retry_log) == 4 and server.asked == 5
    assert err.value.restarts  # our own server: a new backend starts it again


def test_a_server_that_refuses_every_connection_is_gone():
    """Not one sample's failure: nothing listens, so every later sample would fail the same way."""
    url = f"http://127.0.0.1:{closed_port()}/v1"
    b = OpenAIBackend(base_url=url, model="m")  # a server this process did not start
    with pytest.raises(ServerGone) as err:
        asyncio.run(b.generate(CHAT, GenerationParams()))
    msg = str(err.value)
    assert f"the model server at {url} refused every connection" in msg and "after 5 tries" in msg, msg
    assert len(b.retry_log) == 4  # waits scaled to zero here: no patience either
    assert not err.value.restarts  # someone else's server: only they can start it again


def test_a_refusing_server_gets_its_patience_before_it_is_gone():
    policy = RetryPolicy(attempts=2, initial_wait=0.01, wait_scale=1.0, unreachable_s=2.0)
    b = OpenAIBackend(base_url=f"http://127.0.0.1:{closed_port()}/v1", model="m", retry=policy)
    t0 = time.monotonic()
    with pytest.raises(ServerGone, match=r"refused every connection for 2 s \(4 tries\)"):
        asyncio.run(b.generate(CHAT, GenerationParams()))
    assert time.monotonic() - t0 >= 2.0 and len(b.retry_log) == 2  # one wait in each round of 2 tries


def test_the_patience_is_set_by_the_environment(monkeypatch):
    """``MATHAGENT_SERVER_PATIENCE`` (seconds, scaled like the waits) for a server that restarts
    slowly; a value that is not a positive number is refused when the backend is made."""
    monkeypatch.setenv("MATHAGENT_RETRY_WAIT_SCALE", "0.1")
    monkeypatch.setenv("MATHAGENT_SERVER_PATIENCE", "15")
    b = OpenAIBackend(base_url=f"http://127.0.0.1:{closed_port()}/v1", model="m")
    assert b.retry.unreachable_s == 15.0
    t0 = time.monotonic()
    with pytest.raises(ServerGone, match="refused every connection for [0-9]+ s"):
        asyncio.run(b.generate(CHAT, GenerationParams()))
    assert 1.5 <= time.monotonic() - t0 < 15  # 15 s x 0.1
    for bad in ("abc", "0", "-5"):
        monkeypatch.setenv("MATHAGENT_SERVER_PATIENCE", bad)
        with pytest.raises(BackendError, match="env MATHAGENT_SERVER_PATIENCE must be a"):
            OpenAIBackend(base_url="http://127.0.0.1:9/v1", model="m")


def test_the_patience_counts_from_the_first_refusal_not_from_the_request():
    """A generation that ran 2 s before its connection dropped (the server stopping under it), then
    refusals: the patience starts at the first refusal, so the long try does not use it up."""
    policy = RetryPolicy(attempts=2, initial_wait=0.01, wait_scale=1.0, unreachable_s=1.0)
    b = OpenAIBackend(base_url=f"http://127.0.0.1:{closed_port()}/v1", model="m", retry=policy)
    tries: list[float] = []

    async def attempt():
        tries.append(time.monotonic())
        if len(tries) == 1:
            await asyncio.sleep(2.0)
            raise ConnectionResetError("the server dropped the connection")
        raise ConnectionRefusedError("nothing listens")

    with pytest.raises(ServerGone, match=r"refused every connection for 1 s \(3 tries\)"):
        asyncio.run(b._while_reachable(attempt, "request"))
    assert len(tries) == 4 and tries[-1] - tries[1] >= 1.0


def test_a_server_that_comes_back_within_the_patience_answers():
    """A restart (a remote server's, between two tries) costs a wait, not the sample."""
    port = closed_port()
    policy = RetryPolicy(attempts=2, initial_wait=0.01, wait_scale=1.0, unreachable_s=60.0)
    b = OpenAIBackend(base_url=f"http://127.0.0.1:{port}/v1", model="m", retry=policy)
    back = FakeOpenAIServer(completions=["The answer is 42."], port=port)
    timer = threading.Timer(1.5, back.start)
    timer.start()
    try:
        t0 = time.monotonic()
        out = asyncio.run(b.generate(CHAT, GenerationParams()))
        assert out[0].text == "The answer is 42." and back.hits == 1
        assert 1.5 <= time.monotonic() - t0 < 30 and len(b.retry_log) >= 1
    finally:
        timer.join()
        back.stop()


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

    restarts = True

    async def generate(self, prompt, params, *, on_text=None):  # type: ignore[override]
        if not self.restarts:
            raise ServerGone(
                "the model server at http://10.0.0.9/v1 refused every connection", restarts=False
            )
        raise ServerGone("the llama-cpp-python server of m (pid 1) exited with signal 11 (SIGSEGV)")


class GoneRemoteBackend(GoneBackend):
    restarts = False


@pytest.mark.kernel
def test_the_repl_does_not_promise_to_restart_a_server_it_did_not_start(monkeypatch):
    monkeypatch.setattr(repl_runtime, "build_backend", lambda _settings: GoneRemoteBackend([]))
    out = io.StringIO()
    repl = Repl(ReplSettings(script="unused.json"), Console(file=out, width=120))

    async def session() -> None:
        try:
            await repl.solve("What is 1 + 1?")
        finally:
            await repl.runtime.aclose()

    asyncio.run(session())
    text = out.getvalue()
    assert "refused every connection" in text and "next question tries it again (start it first)" in text
    assert "starts it again" not in text


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


def test_eval_stops_when_its_remote_server_goes_away_and_resumes(tmp_path, capsys):
    """``mathagent eval --base-url``: the server goes away after two answers; the eval stops (exit 1)
    with the reason and the command that resumes, records no sample as failed, and the same command
    finishes the run once the server is back. Before, each remaining sample became a failure."""
    from mathagent.agent.cli import main

    problems = tmp_path / "p.jsonl"
    problems.write_text(
        "".join(
            json.dumps({"id": f"p{i}", "question": f"Compute {i} + 1.", "answer": str(i + 1)}) + "\n"
            for i in range(6)
        )
    )
    server = FakeOpenAIServer(port=closed_port())
    answered = []

    def responder(body):
        text = body["messages"][-1]["content"] if body.get("messages") else body["prompt"]
        i = int(text.rsplit("Compute ", 1)[1].split(" ")[0])
        answered.append(i)
        if len(answered) == 2:
            threading.Thread(target=server.go_away).start()
        return f"So the answer is $\\boxed{{{i + 1}}}$."

    server.responder = responder
    run_dir = tmp_path / "run"
    argv = ["eval", "--dataset", str(problems), "--base-url", server.base_url, "--model", "fake",
            "--no-verify", "--concurrency", "1", "--run-dir", str(run_dir), "--json"]  # fmt: skip
    server.start()
    try:
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert f"the model server at {server.base_url} refused every connection" in err, err
        assert "to resume: mathagent eval" in err, err
        recs = [json.loads(x) for x in (run_dir / "samples.jsonl").read_text().splitlines()]
        assert 2 <= len(recs) < 6 and all(r["status"] == "ok" and r["correct"] for r in recs), recs
        server.start()  # back on the same port
        assert main(argv) == 0
    finally:
        server.stop()
    summary = json.loads(capsys.readouterr().out)  # the resumed run's --json summary
    assert summary["n_failed"] == 0 and summary["counts"]["pending"] == 0, summary
    latest = {}
    for line in (run_dir / "samples.jsonl").read_text().splitlines():
        rec = json.loads(line)
        latest[rec["problem_id"]] = rec
    assert sorted(latest) == [f"p{i}" for i in range(6)] and all(r["correct"] for r in latest.values())
