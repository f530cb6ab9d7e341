"""Trace formats: render -> parse round trips, generation splitting, and the published traces."""

from __future__ import annotations

import json

import pytest
from mathagent.agent.backends.base import Completion, ToolCall
from mathagent.agent.formats import FormatError, get_format, parse_mathcoder, steps_from_debug_result
from mathagent.agent.trace import Step, StepKind

T, C, E, U = StepKind.TEXT, StepKind.CODE, StepKind.EXECUTION, StepKind.USER

STEPS = [
    Step(T, "First, the number of eggs sold.\nThen the money."),
    Step(C, "from sympy import Rational\n\ndef f(x):\n    return x * 2\n\nprint(f(9))"),
    Step(E, "18"),
    Step(C, "print(1/0)"),
    Step(E, "Traceback (most recent call last):\nZeroDivisionError: division by zero"),
    Step(T, "So she makes $\\boxed{18}$ dollars."),
]


def kinds(steps):
    return [(s.kind, s.content) for s in steps]


@pytest.mark.parametrize("name", ["markdown", "mathcoder", "tools"])
def test_round_trip(name):
    fmt = get_format(name)
    rendered = fmt.render_steps("How much?", STEPS, "system text")
    assert kinds(fmt.parse(rendered)) == kinds(STEPS)


@pytest.mark.parametrize("name", ["markdown", "mathcoder", "tools"])
def test_round_trip_with_harness_message_and_empty_output(name):
    fmt = get_format(name)
    steps = [
        Step(C, "x = 1"),
        Step(E, ""),
        Step(T, "\\boxed{1}"),
        Step(U, "Verify 1 with code."),
        Step(T, "ok"),
    ]
    assert kinds(fmt.parse(fmt.render_steps("p", steps))) == kinds(steps)


def test_unknown_format():
    with pytest.raises(ValueError, match="known: markdown"):
        get_format("latex")


def test_markdown_generation_split():
    fmt = get_format("markdown")
    g = fmt.parse_generation("We compute.\n```python\nprint(2+2)\n```\nThis prints 4 so \\boxed{4}")
    assert (g.text, g.code, g.finished) == ("We compute.", "print(2+2)", False)
    g = fmt.parse_generation("Therefore the answer is \\boxed{4}.")
    assert g.finished and g.code is None
    g = fmt.parse_generation(Completion("Try:\n```python\nwhile True:\n    pass", finish_reason="length"))
    assert g.unclosed_code and g.code is None
    # EOS right after the code without a closing fence: run what was written
    g = fmt.parse_generation(Completion("```py\nprint(3)\n", finish_reason="stop"))
    assert g.code == "print(3)"


def test_markdown_prompt_raw_and_chat():
    fmt = get_format("markdown")
    steps = STEPS[:3]
    raw = fmt.build_prompt("P?", steps, "SYS", render_chat=lambda m: f"<{len(m)} msgs>")
    assert raw.startswith("<2 msgs>") and raw.endswith("```output\n18\n```\n")
    chat = fmt.build_prompt("P?", steps, "SYS")
    assert [m["role"] for m in chat] == ["system", "user", "assistant", "user"]
    assert chat[-1]["content"] == "```output\n18\n```"


def test_mathcoder_generation_split():
    fmt = get_format("mathcoder")
    assert fmt.stop_strings == ("<|endofblock|>", "<|endofmessage|>")
    g = fmt.parse_generation(Completion("<|text|>Let us compute", stop_string="<|endofblock|>"))
    assert (g.text, g.code, g.finished) == ("Let us compute", None, False)
    g = fmt.parse_generation(Completion("<|code|>print(1)", stop_string="<|endofblock|>"))
    assert g.code == "print(1)"
    g = fmt.parse_generation(Completion("", stop_string="<|endofmessage|>"))
    assert g.finished
    # a model that ignores stop strings: the hallucinated execution is dropped
    g = fmt.parse_generation("<|text|>a<|endofblock|><|code|>x=2<|endofblock|><|execution|>99<|endofblock|>")
    assert (g.text, g.code) == ("a", "x=2")
    g = fmt.parse_generation(Completion("<|code|>for i in", finish_reason="length"))
    assert g.unclosed_code


def test_mathcoder_prompt_shape():
    fmt = get_format("mathcoder")
    p = fmt.build_prompt("What?", [Step(T, "hi"), Step(C, "1+1"), Step(E, "2")], "Sys.")
    assert p == (
        "<|system|><|text|>Sys.<|endofblock|><|endofmessage|><|user|><|text|>What?<|endofblock|>"
        "<|endofmessage|><|assistant|><|text|>hi<|endofblock|><|code|>1+1<|endofblock|>"
        "<|execution|>2<|endofblock|>"
    )


def test_tools_generation_and_malformed_calls():
    fmt = get_format("tools")
    ok = Completion("", tool_calls=(ToolCall("a", "python", json.dumps({"code": "print(5)"})),))
    assert fmt.parse_generation(ok).code == "print(5)"
    text_call = '<tool_call>\n{"name": "python", "arguments": {"code": "print(6)"}}\n</tool_call>'
    assert fmt.parse_generation(text_call).code == "print(6)"
    for bad in ("{not json", json.dumps({"language": "py", "x": 1}), json.dumps({"code": ""})):
        with pytest.raises(FormatError):
            fmt.parse_generation(Completion("", tool_calls=(ToolCall("a", "python", bad),)))
    assert fmt.parse_generation("The answer is \\boxed{3}").finished


def test_tools_messages_pair_calls_with_results():
    msgs = get_format("tools").build_prompt("P", STEPS, "S")
    calls = [m["tool_calls"][0]["id"] for m in msgs if m.get("tool_calls")]
    results = [m["tool_call_id"] for m in msgs if m["role"] == "tool"]
    assert calls == results == ["call_0", "call_1"]


def test_tora_traces_parse(shared_data):
    fmt = get_format("markdown")
    lines = (shared_data / "traces" / "traces_tora70b_gsm8k_test.jsonl").read_text().splitlines()[:200]
    for line in lines:
        body = json.loads(line)["code"][0]
        steps = fmt.parse(body)
        assert any(s.kind is C for s in steps)
        assert kinds(fmt.parse(fmt.render_steps("", steps))) == kinds(steps)


def test_mathcoder_debug_result(shared_data):
    path = shared_data / "traces" / "traces_mathcoderL70b_gsm8k_test_correct.jsonl"
    fmt = get_format("mathcoder")
    with_code = 0
    for line in path.read_text().splitlines()[:200]:
        row = json.loads(line)
        problem, steps = steps_from_debug_result(row["debug_result"])
        assert problem == row["messages"][1]["content"][0]["content"]
        with_code += any(s.kind is C for s in steps)
        assert steps and len(steps) <= len(row["debug_result"]) - 2  # system, user, answer-only item
        assert kinds(parse_mathcoder(fmt.render_steps(problem, steps, "sys"))) == kinds(steps)
    assert with_code >= 180  # a few published rows solved without code
