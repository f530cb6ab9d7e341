"""Waiting on servers: request and stall timeouts, slow-but-working streams, Retry-After, fault mixes.

All against the loopback fake server (tests/agent/fakeserver.py), which streams event by event.
Retry waits are scaled to zero by the test fixture unless a test sets ``MATHAGENT_RETRY_WAIT_SCALE``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest
from backend_helpers import ANSWER, CHAT, errors, run
from fakeserver import FakeOpenAIServer, Reply
from mathagent.agent.backends import make_backend
from mathagent.agent.backends.base import BackendError, GenerationParams
from mathagent.agent.backends.openai_backend import (
    DEFAULT_STALL_TIMEOUT,
    OpenAIBackend,
    default_request_timeout,
    positive_seconds,
)
from mathagent.agent.backends.retry import RetryPolicy, retry_after_of

pytestmark = pytest.mark.server


# -- timeouts -------------------------------------------------------------------------------------


def test_default_request_timeout_grows_with_the_token_limit(monkeypatch):
    assert default_request_timeout(1024) == 1084.0 and default_request_timeout(256) == 316.0
    b = OpenAIBackend(base_url="http://127.0.0.1:9/v1", model="m")
    assert b.request_timeout is None and b.stall_timeout == DEFAULT_STALL_TIMEOUT
    assert b.first_token_timeout(2048) == default_request_timeout(2048)
    monkeypatch.setenv("MATHAGENT_REQUEST_TIMEOUT", "7.5")
    monkeypatch.setenv("MATHAGENT_STALL_TIMEOUT", "12")
    b = OpenAIBackend(base_url="http://127.0.0.1:9/v1", model="m")
    assert b.first_token_timeout(2048) == 7.5 and b.stall_timeout == 12.0
    b = OpenAIBackend(base_url="http://127.0.0.1:9/v1", model="m", request_timeout=3)  # explicit wins
    assert b.request_timeout == 3.0 and b.timeout == 3.0


@pytest.mark.parametrize("bad", ["abc", "0", "-5", "nan", "inf"])
def test_bad_timeouts_are_clear_errors(monkeypatch, bad):
    monkeypatch.setenv("MATHAGENT_REQUEST_TIMEOUT", bad)
    with pytest.raises(BackendError, match="MATHAGENT_REQUEST_TIMEOUT must be a"):
        OpenAIBackend(base_url="http://127.0.0.1:9/v1", model="m")
    with pytest.raises(argparse.ArgumentTypeError, match="seconds"):
        positive_seconds(bad)
    with pytest.raises(BackendError, match="stall_timeout"):
        OpenAIBackend(base_url="http://127.0.0.1:9/v1", model="m", stall_timeout=bad, request_timeout=1)


def test_hang_before_any_byte_hits_the_request_timeout(srv):
    b = OpenAIBackend(base_url=srv.base_url, model="m", request_timeout=2)
    srv.queue(Reply(delay=30.0))
    out = run(b.generate(CHAT, GenerationParams()))
    assert out[0].text == ANSWER and srv.hits == 2
    assert len(b.retry_log) == 1 and "RequestTimeout: no token within 2 s" in errors(b)[0]


def test_stall_in_the_middle_of_a_stream_is_retried(srv):
    b = OpenAIBackend(base_url=srv.base_url, model="m", request_timeout=30, stall_timeout=2)
    srv.queue(Reply(stall=30.0))
    pieces: list[str] = []
    out = run(b.generate(CHAT, GenerationParams(), on_text=pieces.append))
    assert out[0].text == ANSWER and out[0].finish_reason == "stop" and srv.hits == 2
    assert len(b.retry_log) == 1 and "StallTimeout" in errors(b)[0]
    # the stalled try streamed its first half before the retry streamed everything again
    assert "".join(pieces).endswith(ANSWER) and len("".join(pieces)) > len(ANSWER)


def test_slow_but_steady_stream_is_not_killed(srv):
    """A generation that takes 4x its request timeout and 4x its stall timeout, but keeps producing."""
    b = OpenAIBackend(base_url=srv.base_url, model="m", request_timeout=2.0, stall_timeout=2.0)
    text = "x" * 64  # 16 events + the final one, 0.5 s apart: ~8 s in all
    srv.queue(Reply(text=text, piece_delay=0.5))
    t0 = time.monotonic()
    out = run(b.generate(CHAT, GenerationParams()))
    took = time.monotonic() - t0
    assert out[0].text == text and out[0].finish_reason == "stop"
    assert srv.hits == 1 and not b.retry_log  # never cut off, never retried
    assert took > 7.5  # it really outlived both timeouts (a lower bound: sleeps cannot be shorter)


def test_keepalive_pings_are_not_progress():
    """llama.cpp pings silent streams; pings must not hide a stalled generation."""
    with FakeOpenAIServer(completions=[ANSWER], ping_s=0.1) as s:
        b = OpenAIBackend(base_url=s.base_url, model="m", request_timeout=30, stall_timeout=1.5)
        s.queue(Reply(stall=30.0))
        out = run(b.generate(CHAT, GenerationParams()))
        assert out[0].text == ANSWER and s.hits == 2 and "StallTimeout" in errors(b)[0]


def test_pings_before_the_first_token_do_not_extend_the_request_timeout():
    with FakeOpenAIServer(completions=[ANSWER], ping_s=0.1) as s:
        b = OpenAIBackend(base_url=s.base_url, model="m", request_timeout=1.5, stall_timeout=30)
        s.queue(Reply(prefill=30.0))  # headers, then 30 s of pings before the first event
        out = run(b.generate(CHAT, GenerationParams()))
        assert out[0].text == ANSWER and s.hits == 2


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "plain"])
@pytest.mark.parametrize(
    "bad", [Reply(truncated=True), Reply(reset=True), Reply(status=502)], ids=["truncated", "reset", "502"]
)
def test_broken_answers_are_retried(srv, stream, bad):
    b = OpenAIBackend(base_url=srv.base_url, model="m", stream=stream, request_timeout=10)
    srv.queue(bad)
    out = run(b.generate(CHAT, GenerationParams()))
    assert out[0].text == ANSWER and srv.hits == 2 and len(b.retry_log) == 1


def test_a_stream_cut_short_is_not_accepted(srv):
    """[DONE] without a finish_reason (llama.cpp's interrupt_requests does this) is a failed try."""
    b = OpenAIBackend(base_url=srv.base_url, model="m", retry=RetryPolicy(attempts=1))
    srv.queue(Reply(truncated=True))
    with pytest.raises(BackendError, match="unparseable stream event|before the answer was complete"):
        run(b.generate(CHAT, GenerationParams()))


def test_plain_requests_are_bounded_by_the_request_timeout(srv):
    b = OpenAIBackend(base_url=srv.base_url, model="m", stream=False, request_timeout=2)
    srv.queue(Reply(delay=30.0))
    assert run(b.generate(CHAT, GenerationParams()))[0].text == ANSWER
    assert srv.hits == 2 and "RequestTimeout" in errors(b)[0]
    assert "stream" not in srv.requests[-1]


def test_every_request_is_streamed_and_usage_is_counted(srv):
    b = OpenAIBackend(base_url=srv.base_url, model="m")
    out = run(b.generate(CHAT, GenerationParams(n=2, seed=1)))
    assert all(r["stream"] is True for r in srv.requests) and len(out) == 2
    assert all(c.completion_tokens > 0 and c.prompt_tokens > 0 for c in out)


def test_streamed_requests_reuse_their_connection(srv):
    """The body is read to its end after [DONE], so keep-alive works (no handshake per request)."""
    b = OpenAIBackend(base_url=srv.base_url, model="m")

    async def five():
        for _ in range(5):
            await b.generate(CHAT, GenerationParams())

    run(five())
    assert srv.hits == 5 and srv.connections == 1


# -- Retry-After -------------------------------------------------------------------------------------


def test_retry_after_is_requested_wait_scaled(srv):
    """Under the test fixture (scale 0) the wait is zero, but what the server asked is recorded."""
    b = OpenAIBackend(base_url=srv.base_url, model="m")
    srv.queue(Reply(status=429, retry_after="3"))
    run(b.generate(CHAT, GenerationParams()))
    (ev,) = b.retry_log
    assert ev.retry_after_s == 3.0 and ev.wait_s == 0.0 and "HTTP 429" in ev.error


def test_retry_after_is_actually_waited(srv, monkeypatch):
    monkeypatch.setenv("MATHAGENT_RETRY_WAIT_SCALE", "1")
    b = OpenAIBackend(base_url=srv.base_url, model="m")
    srv.queue(Reply(status=429, retry_after="1.5"))
    t0 = time.monotonic()
    out = run(b.generate(CHAT, GenerationParams()))
    took = time.monotonic() - t0
    assert out[0].text == ANSWER and srv.hits == 2
    (ev,) = b.retry_log
    assert ev.retry_after_s == 1.5 and ev.wait_s == 1.5  # the jittered wait would be 0..0.5 s
    assert took >= 1.5


def test_retry_after_is_capped(srv, monkeypatch):
    monkeypatch.setenv("MATHAGENT_RETRY_WAIT_SCALE", "1")
    b = OpenAIBackend(base_url=srv.base_url, model="m", retry=RetryPolicy(max_retry_after=0.2))
    srv.queue(Reply(status=503, retry_after="3600"))
    run(b.generate(CHAT, GenerationParams()))
    (ev,) = b.retry_log
    assert ev.retry_after_s == 3600.0 and ev.wait_s == 0.2


def test_without_retry_after_the_wait_is_jittered_backoff(srv, monkeypatch):
    monkeypatch.setenv("MATHAGENT_RETRY_WAIT_SCALE", "1")
    b = OpenAIBackend(base_url=srv.base_url, model="m", retry=RetryPolicy(initial_wait=0.01, max_wait=0.05))
    srv.queue(Reply(status=500), Reply(status=500), Reply(status=500))
    run(b.generate(CHAT, GenerationParams()))
    assert len(b.retry_log) == 3
    assert all(e.retry_after_s is None and 0.0 <= e.wait_s <= 0.05 for e in b.retry_log)


def test_retry_after_header_forms():
    def exc(headers):
        return SimpleNamespace(response=SimpleNamespace(headers=headers))

    assert retry_after_of(exc({"retry-after": "3"})) == 3.0
    assert retry_after_of(exc({"retry-after-ms": "250", "retry-after": "9"})) == 0.25
    date = "Sun, 29 Nov 2026 23:00:10 GMT"
    now = datetime(2026, 11, 29, 23, 0, 0, tzinfo=timezone.utc).timestamp()
    assert retry_after_of(exc({"retry-after": date}), now=now) == pytest.approx(10.0)
    assert retry_after_of(exc({"retry-after": "soon"})) is None
    assert retry_after_of(exc({"retry-after": "-4"})) is None
    assert retry_after_of(ValueError("no response")) is None


# -- the fault mix ----------------------------------------------------------------------------------


def test_a_fault_mix_loses_nothing():
    """30% of requests fail in every way of issue 17; every one of 40 calls still gets its answer."""
    with FakeOpenAIServer(
        responder=lambda body: f"echo {body['messages'][-1]['content']}",
        fault_rate=0.3,
        hang_s=30.0,
        seed=3,
    ) as s:
        b = OpenAIBackend(base_url=s.base_url, model="m", request_timeout=3, max_concurrency=8)

        async def all_calls():
            params = GenerationParams()
            return await asyncio.gather(
                *(b.generate([{"role": "user", "content": f"q{i}"}], params) for i in range(40))
            )

        outs = run(all_calls())
        assert [o[0].text for o in outs] == [f"echo q{i}" for i in range(40)]
        assert set(s.faults) == {"500", "429", "hang", "truncated", "reset"}
        # a retry per fault (a loaded machine may add a timeout of its own; the answers stay right)
        assert s.hits >= 40 + sum(s.faults.values())


# -- the flag ---------------------------------------------------------------------------------------


def test_request_timeout_flag_reaches_the_backend(srv):
    from mathagent.agent import cli_solve
    from mathagent.agent.repl import app
    from mathagent.evals import cli_agent, cli_eval
    from mathagent.training import cli_generate

    args = cli_eval.build_parser().parse_args(["--base-url", srv.base_url, "--request-timeout", "4"])
    assert cli_agent.backend_from_args(args).request_timeout == 4.0
    args = cli_solve.build_parser().parse_args(["--base-url", srv.base_url, "--request-timeout", "5"])
    assert cli_solve.build_backend(args).request_timeout == 5.0
    args = cli_generate.build_parser().parse_args(["--problems", "x", "--out", "o", "--request-timeout", "6"])
    assert args.request_timeout == 6.0
    assert app.build_parser().parse_args(["--request-timeout", "7"]).request_timeout == 7.0
    # the scripted backend ignores it
    assert make_backend(backend="scripted", turns=["a"], request_timeout=3).name == "scripted"


@pytest.mark.parametrize("cli", ["eval", "solve", "generate"])
def test_bad_request_timeout_flag_is_a_usage_error(cli, capsys):
    from mathagent.agent.cli import main

    argv = {
        "eval": ["eval"],
        "solve": ["solve", "1+1"],
        "generate": ["generate", "--problems", "x", "--out", "o"],
    }
    with pytest.raises(SystemExit) as e:
        main([*argv[cli], "--request-timeout", "0"])
    assert e.value.code == 2
    assert "--request-timeout" in capsys.readouterr().err


def test_eval_through_a_fault_injecting_server(tmp_path):
    """``mathagent eval`` end to end: 12 problems, 40% faults (hangs included), every one answered."""
    from mathagent.agent.cli import main

    problems = tmp_path / "p.jsonl"
    problems.write_text(
        "".join(
            json.dumps({"id": f"p{i}", "question": f"Compute {i} + 1.", "answer": str(i + 1)}) + "\n"
            for i in range(12)
        )
    )

    def responder(body):
        text = body["messages"][-1]["content"] if body.get("messages") else body["prompt"]
        i = int(text.rsplit("Compute ", 1)[1].split(" ")[0])
        return f"So the answer is $\\boxed{{{i + 1}}}$."

    with FakeOpenAIServer(responder=responder, fault_rate=0.4, hang_s=60.0, seed=20) as s:
        rc = main(
            ["eval", "--dataset", str(problems), "--base-url", s.base_url, "--model", "fake", "--no-verify",
             "--concurrency", "2", "--run-dir", str(tmp_path / "run"), "--json", "--request-timeout", "3"]
        )  # fmt: skip
        assert set(s.faults) == {"500", "429", "hang", "truncated", "reset"}
    assert rc == 0
    records = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert sorted(r["problem_id"] for r in records) == sorted(f"p{i}" for i in range(12))
    assert all(r["status"] == "ok" and r["correct"] for r in records)


def test_no_headers_within_the_stall_timeout_is_a_hang(srv):
    """Streaming servers answer with headers at once; silence before them ends at the stall timeout,
    long before the (default, token-derived) request timeout."""
    b = OpenAIBackend(base_url=srv.base_url, model="m", stall_timeout=2)
    assert b.first_token_timeout(1024) == 1084.0
    srv.queue(Reply(delay=30.0))
    assert run(b.generate(CHAT, GenerationParams(max_tokens=1024)))[0].text == ANSWER
    assert srv.hits == 2 and "StallTimeout: no response within 2 s" in errors(b)[0]


def test_a_slow_prompt_after_the_headers_waits_for_the_request_timeout(srv):
    """Headers came (the server took the request): a long silence before the first token is the
    server reading the prompt or queueing, bounded by the request timeout, not the stall timeout."""
    b = OpenAIBackend(base_url=srv.base_url, model="m", request_timeout=30, stall_timeout=1.5)
    srv.queue(Reply(prefill=4.0))
    assert run(b.generate(CHAT, GenerationParams()))[0].text == ANSWER
    assert srv.hits == 1 and not b.retry_log
