"""The scripted backend: replay, stop strings like a server, recording, exhaustion."""

from __future__ import annotations

import asyncio

import pytest
from mathagent.agent.backends.base import Backend, BackendError, Completion, GenerationParams
from mathagent.agent.backends.scripted import ScriptedBackend, ScriptExhausted

TORA = "Compute.\n```python\nprint(18)\n```\n```output\n18\n```\nSo \\boxed{18}."


def gen(backend, prompt="p", **kw):
    return asyncio.run(backend.generate(prompt, GenerationParams(**kw)))[0]


def test_is_a_backend():
    assert isinstance(ScriptedBackend([]), Backend)


def test_cuts_at_stop_strings_and_skips_recorded_output():
    b = ScriptedBackend([TORA, "next turn"])
    first = gen(b, stop=("```output",))
    assert first.text == "Compute.\n```python\nprint(18)\n```\n" and first.stop_string == "```output"
    second = gen(b, stop=("```output",))
    assert second.text == "So \\boxed{18}." and second.stop_string is None
    assert gen(b).text == "next turn"
    assert b.remaining == 0


def test_mathcoder_turn_split_block_by_block():
    turn = "<|text|>a<|endofblock|><|code|>x=1<|endofblock|><|execution|>1<|endofblock|><|text|>b<|endofblock|><|endofmessage|>"
    b = ScriptedBackend([turn])
    stops = ("<|endofblock|>", "<|endofmessage|>")
    got = [gen(b, stop=stops) for _ in range(4)]
    assert [c.text for c in got] == ["<|text|>a", "<|code|>x=1", "<|text|>b", ""]
    assert got[-1].stop_string == "<|endofmessage|>"


def test_records_calls_and_callables():
    b = ScriptedBackend(
        [lambda prompt, params: f"echo {prompt} t={params.temperature}", Completion("c", "length")]
    )
    assert gen(b, "hi", temperature=0.5).text == "echo hi t=0.5"
    assert gen(b, "again").finish_reason == "length"
    assert [c.prompt for c in b.calls] == ["hi", "again"]
    assert b.calls[0].params.temperature == 0.5


def test_exhaustion_raises_or_returns_empty():
    b = ScriptedBackend(["only"])
    gen(b)
    with pytest.raises(ScriptExhausted) as e:
        gen(b)
    assert isinstance(e.value, BackendError)
    assert gen(ScriptedBackend([], on_exhausted="empty")).text == ""


def test_max_tokens_cuts_with_length():
    c = gen(ScriptedBackend(["word " * 100]), max_tokens=10)
    assert c.finish_reason == "length" and len(c.text) == 40


def test_streams_text_pieces():
    pieces: list[str] = []
    b = ScriptedBackend(["a b c"])
    asyncio.run(b.generate("p", GenerationParams(), on_text=pieces.append))
    assert "".join(pieces) == "a b c" and len(pieces) == 3
