"""Trace exports: TRL tool-calling rows and MathCoder text, written as JSONL that `datasets` loads."""

from __future__ import annotations

import json

import pytest
from mathagent.agent.trace import Trace
from mathagent.training import export
from mathagent.training.masking import mathcoder_spans


def test_chat_row_puts_code_in_tool_calls_and_output_in_tool_turns(traces):
    row = export.trace_to_chat(traces[0], system="SYS")
    roles = [m["role"] for m in row["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant"]
    call = row["messages"][2]["tool_calls"][0]
    assert call["function"] == {"name": "python", "arguments": {"code": "print(2 + 3)"}}
    assert row["messages"][2]["content"] == "Let me compute it with Python."
    assert row["messages"][3] == {
        "role": "tool",
        "name": "python",
        "tool_call_id": call["id"],
        "content": "5",
    }
    assert row["messages"][4]["content"] == "The answer is \\boxed{5}."
    assert row["tools"][0]["function"]["name"] == "python"
    assert row["tools"][0]["function"]["parameters"]["required"] == ["code"]
    assert (row["problem_id"], row["source"], row["model"], row["verification"], row["seed"]) == (
        "add-2-3",
        "unit",
        "hand-made",
        "T",
        7,
    )


def test_mathcoder_text_layout(traces):
    text = export.render_mathcoder(traces[0], system="SYS")
    assert text == (
        "<|system|><|text|>SYS<|endofblock|><|endofmessage|>"
        "<|user|><|text|>What is 2 + 3?<|endofblock|><|endofmessage|>"
        "<|assistant|><|text|>Let me compute it with Python.<|endofblock|>"
        "<|code|>print(2 + 3)<|endofblock|><|execution|>5<|endofblock|>"
        "<|text|>The answer is \\boxed{5}.<|endofblock|><|endofmessage|>"
    )


def test_auto_system_prompt_is_the_agents_own(traces):
    from mathagent.agent.prompts import load_prompt

    row = export.trace_to_chat(traces[0])
    assert row["messages"][0]["content"] == load_prompt("tools").text
    assert export.render_mathcoder(traces[0]).startswith(f"<|system|><|text|>{load_prompt('mathcoder').text}")


@pytest.mark.parametrize("fmt", ["chat", "mathcoder"])
def test_jsonl_loads_with_datasets(tmp_path, traces, fmt):
    from datasets import load_dataset

    path = tmp_path / f"{fmt}.jsonl"
    assert export.export_traces(traces, path, fmt) == len(traces)
    ds = load_dataset("json", data_files=str(path), split="train")
    assert len(ds) == len(traces)
    assert set(ds.column_names) >= {"problem_id", "source", "model", "verification", "seed"}
    if fmt == "chat":
        assert ds[0]["messages"][2]["tool_calls"][0]["function"]["arguments"]["code"] == "print(2 + 3)"
        assert ds[0]["tools"][0]["function"]["name"] == "python"
    else:
        assert ds[1]["text"].endswith("<|endofmessage|>")


def test_read_traces_skips_headers_and_torn_lines(tmp_path, traces):
    path = tmp_path / "run" / "samples.jsonl"
    path.parent.mkdir()
    lines = [json.dumps({"header": True})] + [t.to_json() for t in traces[:3]] + ['{"problem": "torn']
    path.write_text("\n".join(lines), encoding="utf-8")
    got = list(export.read_traces(tmp_path / "run"))
    assert got == traces[:3]


def test_trailing_code_without_execution_and_no_system(traces):
    t = Trace(problem="p", steps=traces[0].steps[:2])
    row = export.trace_to_chat(t, system=None)
    assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
    assert row["messages"][1]["tool_calls"][0]["function"]["arguments"]["code"] == "print(2 + 3)"


SPAN_TABLE = [
    # (text, [(span text, trained)])
    (
        "<|user|><|text|>Q<|endofblock|><|endofmessage|><|assistant|><|code|>x<|endofblock|>"
        "<|execution|>1<|endofblock|><|text|>A<|endofblock|><|endofmessage|>",
        [
            ("<|user|><|text|>Q<|endofblock|><|endofmessage|><|assistant|>", False),
            ("<|code|>x<|endofblock|>", True),
            ("<|execution|>1<|endofblock|>", False),
            ("<|text|>A<|endofblock|><|endofmessage|>", True),
        ],
    ),
    (
        "<|system|><|text|>S<|endofblock|><|endofmessage|>",
        [("<|system|><|text|>S<|endofblock|><|endofmessage|>", False)],
    ),
]


@pytest.mark.parametrize("text,expected", SPAN_TABLE)
def test_mathcoder_spans_table(text, expected):
    assert [(s.text, s.trained) for s in mathcoder_spans(text)] == expected


def test_verification_turn_becomes_a_user_turn_and_is_masked(traces):
    from mathagent.agent.trace import Step, StepKind

    base = traces[0]
    verify = (
        Step(StepKind.USER, "Check your answer with code.", phase="verify"),
        Step(StepKind.CODE, "print(5 - 3 == 2)", phase="verify"),
        Step(StepKind.EXECUTION, "True", phase="verify"),
        Step(StepKind.TEXT, "VERDICT: True", phase="verify"),
    )
    trace = base.with_(steps=base.steps + verify)
    roles = [m["role"] for m in export.trace_to_chat(trace, system="SYS")["messages"]]
    assert roles == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
        "assistant",
        "tool",
        "assistant",
    ]
    text = export.render_mathcoder(trace, system="SYS")
    assert (
        "<|endofmessage|><|user|><|text|>Check your answer with code.<|endofblock|><|endofmessage|><|assistant|>"
        in text
    )
    trained = "".join(s.text for s in mathcoder_spans(text) if s.trained)
    assert "Check your answer" not in trained  # the harness's words are never trained
    assert "print(5 - 3 == 2)" in trained and "VERDICT: True" in trained
