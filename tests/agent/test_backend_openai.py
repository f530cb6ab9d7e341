"""The OpenAI-compatible backend against the local fake server: retries, timeouts, n, streaming, tools."""

from __future__ import annotations

import asyncio
import time

import pytest
from fakeserver import FakeOpenAIServer, Reply, closed_port
from mathagent.agent.backends.base import Backend, BackendError, GenerationParams
from mathagent.agent.backends.continuation import ChatTemplate
from mathagent.agent.backends.openai_backend import OpenAIBackend
from mathagent.agent.backends.retry import RetryPolicy

pytestmark = pytest.mark.server

CHAT = [{"role": "user", "content": "What is 6*7?"}]


@pytest.fixture
def srv():
    with FakeOpenAIServer(completions=["The answer is 42.\n```output\nignored"]) as s:
        yield s


def run(coro):
    return asyncio.run(coro)


def test_is_a_backend_and_uses_placeholder_key(srv):
    b = OpenAIBackend(base_url=srv.base_url)
    assert isinstance(b, Backend)
    assert b.api_key and b.default_format == "markdown"
    out = run(b.generate(CHAT, GenerationParams(stop=("```output",))))
    assert b.model == "fake-model"  # resolved from /v1/models
    assert out[0].text == "The answer is 42.\n" and out[0].finish_reason == "stop"
    assert out[0].prompt_tokens > 0 and out[0].completion_tokens > 0
    assert srv.requests[-1]["stop"] == ["```output"]


def test_env_base_url(srv, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
    b = OpenAIBackend(model="m")
    run(b.generate("Q: 1+1\nA:", GenerationParams()))
    assert srv.requests[-1]["prompt"] == "Q: 1+1\nA:"  # str prompt -> /v1/completions


def test_no_key_and_no_url_is_a_clear_error():
    with pytest.raises(BackendError, match="OPENAI_API_KEY"):
        OpenAIBackend(model="gpt-4o-mini")


@pytest.mark.parametrize(
    "bad",
    [Reply(status=429), Reply(status=500), Reply(status=503), Reply(garbage=True), Reply(empty=True)],
    ids=["429", "500", "503", "garbage", "no-choices"],
)
def test_retries_then_succeeds(srv, bad):
    b = OpenAIBackend(base_url=srv.base_url, model="m")
    srv.queue(bad, bad)
    out = run(b.generate(CHAT, GenerationParams()))
    assert out[0].text.startswith("The answer is 42.")
    assert srv.hits == 3  # two failures, one success: the client's own retries are off


def test_hung_server_times_out_and_retries(srv):
    b = OpenAIBackend(base_url=srv.base_url, model="m", timeout=0.5)
    srv.queue(Reply(delay=3.0))
    out = run(b.generate(CHAT, GenerationParams()))
    assert out[0].text.startswith("The answer is 42.")
    assert srv.hits == 2


def test_client_errors_are_not_retried(srv):
    b = OpenAIBackend(base_url=srv.base_url, model="m")
    srv.queue(Reply(status=400))
    with pytest.raises(BackendError, match="not retried.*400"):
        run(b.generate(CHAT, GenerationParams()))
    assert srv.hits == 1


def test_gives_up_after_the_last_try(srv):
    b = OpenAIBackend(base_url=srv.base_url, model="m", retry=RetryPolicy(attempts=3))
    srv.queue(*[Reply(status=500)] * 5)
    with pytest.raises(BackendError, match="after 3 tries.*HTTP 500"):
        run(b.generate(CHAT, GenerationParams()))
    assert srv.hits == 3


def test_dead_server_fails_fast_with_clear_message():
    url = f"http://127.0.0.1:{closed_port()}/v1"
    b = OpenAIBackend(base_url=url, model="m")
    t0 = time.monotonic()
    with pytest.raises(BackendError) as err:
        run(b.generate(CHAT, GenerationParams()))
    assert time.monotonic() - t0 < 30  # sanity bound only; waits are scaled to zero
    msg = str(err.value)
    assert "after 5 tries" in msg and "Connection" in msg and url in msg


def test_injected_wait_is_used_and_scaled(srv, monkeypatch):
    calls = []

    def wait(state):
        calls.append(state.attempt_number)
        return 0.0

    b = OpenAIBackend(base_url=srv.base_url, model="m", wait=wait)
    srv.queue(Reply(status=429), Reply(status=429))
    run(b.generate(CHAT, GenerationParams()))
    assert calls == [1, 2]


def test_k_samples_by_parallel_requests_with_seeds(srv):
    b = OpenAIBackend(base_url=srv.base_url, model="m")
    out = run(b.generate(CHAT, GenerationParams(n=3, seed=7, temperature=0.8)))
    assert len(out) == 3
    assert sorted(r["seed"] for r in srv.requests) == [7, 8, 9]
    assert all("n" not in r for r in srv.requests)


def test_native_n_is_topped_up_when_server_returns_fewer(srv):
    b = OpenAIBackend(base_url=srv.base_url, model="m", native_n=True)
    out = run(b.generate(CHAT, GenerationParams(n=3)))
    assert len(out) == 3  # the server ignored n=3 and answered once; two more requests were made
    assert srv.requests[0]["n"] == 3 and srv.hits == 3


def test_native_n_when_honoured():
    with FakeOpenAIServer(completions=["a", "b", "c"], honour_n=True) as s:
        b = OpenAIBackend(base_url=s.base_url, model="m", native_n=True)
        out = run(b.generate(CHAT, GenerationParams(n=3)))
        assert [c.text for c in out] == ["a", "b", "c"] and s.hits == 1


@pytest.mark.parametrize("prompt", [CHAT, "raw prompt"], ids=["chat", "completion"])
def test_streaming_calls_on_text(srv, prompt):
    b = OpenAIBackend(base_url=srv.base_url, model="m")
    pieces: list[str] = []
    out = run(b.generate(prompt, GenerationParams(stop=("```output",)), on_text=pieces.append))
    assert len(pieces) > 1 and "".join(pieces) == out[0].text == "The answer is 42.\n"
    assert srv.requests[-1]["stream"] is True
    assert out[0].completion_tokens > 0  # estimated: the fake server reports no usage when streaming


def test_tool_calls(srv):
    tools = ({"type": "function", "function": {"name": "python", "parameters": {"type": "object"}}},)
    srv.queue(Reply(tool_calls=({"name": "python", "arguments": '{"code": "print(6*7)"}'},)))
    b = OpenAIBackend(base_url=srv.base_url, model="m")
    out = run(b.generate(CHAT, GenerationParams(tools=tools)))
    assert out[0].finish_reason == "tool_calls"
    assert out[0].tool_calls[0].name == "python" and "6*7" in out[0].tool_calls[0].arguments
    assert srv.requests[-1]["tools"][0]["function"]["name"] == "python"


def test_concurrency_limit(srv):
    srv.latency = 0.2
    b = OpenAIBackend(base_url=srv.base_url, model="m", max_concurrency=2)
    active = {"now": 0, "peak": 0}
    orig = srv._handle

    def counting(h, body, chat):
        active["now"] += 1
        active["peak"] = max(active["peak"], active["now"])
        try:
            orig(h, body, chat=chat)
        finally:
            active["now"] -= 1

    srv._handle = counting
    out = run(b.generate(CHAT, GenerationParams(n=5)))
    assert len(out) == 5 and active["peak"] <= 2


def test_partial_assistant_turn_continues_through_completions(srv):
    chatml = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    b = OpenAIBackend(
        base_url=srv.base_url, model="m", chat_template=ChatTemplate(chatml), continue_mode="completions"
    )
    msgs = [*CHAT, {"role": "assistant", "content": "Let me compute.\n", "partial": True}]
    run(b.generate(msgs, GenerationParams()))
    assert srv.requests[-1]["prompt"] == (
        "<|im_start|>user\nWhat is 6*7?<|im_end|>\n<|im_start|>assistant\nLet me compute.\n"
    )


def test_backend_survives_several_event_loops(srv):
    b = OpenAIBackend(base_url=srv.base_url, model="m")
    for _ in range(2):
        assert run(b.generate(CHAT, GenerationParams()))[0].text
    run(b.aclose())


def test_count_tokens_estimate():
    b = OpenAIBackend(base_url="http://127.0.0.1:1/v1", model="m")
    assert b.count_tokens("") == 0 and b.count_tokens("x" * 35) == 10
