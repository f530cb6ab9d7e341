"""Each shipped preset sends, call by call, what its authors' own evaluation code sends.

The real loop runs one GSM8K problem (test row 0) against a scripted model and a fixed sandbox; every
prompt the backend receives is compared character for character with the string the authors' harness
builds for the same model completions. The expected strings are written here from reading that code
(never copied); each test cites repository, path and commit. Where the authors' code reads the model's
chat template, the template the authors ship is quoted as well.

Chat-message prompts (a final ``{"role": "assistant", "partial": True}`` message) are turned into the
raw string a server renders with :func:`continue_chatml` -- what transformers' ``apply_chat_template``
with ``continue_final_message=True`` gives for Qwen's ChatML template -- and, separately, through the
backend's own ``render_chat`` path (``ScriptedBackend(chat_template=True)``).
"""

from __future__ import annotations

import asyncio
import json

import pytest
from mathagent.agent.backends.base import Completion, ToolCall
from mathagent.agent.backends.scripted import ScriptedBackend
from mathagent.agent.config import AgentConfig
from mathagent.agent.loop import solve
from mathagent.agent.presets import apply_preset, load_preset
from mathagent.agent.prompts import load_prompt
from mathagent.agent.trace import StopReason
from mathagent.sandbox.base import ExecResult

# GSM8K test split, row 0 (openai/grade-school-math grade_school_math/data/test.jsonl).
GSM8K_0 = (
    "Janet\u2019s ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins "
    "for her friends every day with four. She sells the remainder at the farmers' market daily for $2 per "
    "fresh duck egg. How much in dollars does she make every day at the farmers' market?"
)
CODE = "eggs = 16 - 3 - 4\nprint(eggs * 2)"


class FixedSandbox:
    """Runs nothing: every cell prints ``stdout`` (the model-facing output is what is compared)."""

    def __init__(self, stdout: str) -> None:
        self.stdout, self.cells = stdout, []

    def run(self, code, timeout=None):
        self.cells.append(code)
        return ExecResult(stdout=self.stdout)

    def close(self):
        pass


class FixedProvider:
    level = None

    def __init__(self, stdout: str = "18\n") -> None:
        self.sandbox = FixedSandbox(stdout)

    def acquire(self):
        return self.sandbox

    def close(self):
        pass


def run(preset, turns, *, stdout="18\n", chat_template=False, **cfg):
    backend = ScriptedBackend(turns, chat_template=chat_template)
    config = apply_preset(AgentConfig(verify=False, **cfg), preset)
    trace = asyncio.run(solve(GSM8K_0, backend, FixedProvider(stdout), config))
    return trace, backend.calls


def continue_chatml(messages) -> str:
    """ChatML rendering; a final partial assistant message is left open for the model to continue."""
    out, last = "", messages[-1]
    body = messages[:-1] if last.get("partial") else messages
    for m in body:
        out += f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n"
    out += "<|im_start|>assistant\n"
    return out + (last["content"] if last.get("partial") else "")


# --- Qwen2.5-Math-Instruct TIR ---------------------------------------------------------------------

QWEN_TIR_SYSTEM = (
    "Please integrate natural language reasoning with programs to solve the problem above, "
    "and put your final answer within \\boxed{}."
)


def qwen_harness(completions: list[str], outputs: list[str]) -> list[str]:
    """The prompts QwenLM/Qwen2.5-Math sends for these completions and execution results.

    Prompt: the README's TIR example (README.md @0454f607824c1a84d53391121ceba140ec9968dd) renders
    [system: TIR instruction, user: question] with the model's ChatML chat template and the generation
    prompt. Loop: evaluation/math_eval.py @ab5097e42776099b57d59fe8541ce67e98d2b54a -- each output is
    right-stripped and appended; when it ends with a code fence (and has no "boxed") the result
    (evaluation/python_executor.py @04cfa2dc0a76b5385fb0020fe2dbf122fcf23bd7: stdout stripped, "Done"
    when empty, 200 + "..." + 200 characters past 400) is appended as "\\n```output\\n{r}\\n```\\n".
    """
    query = (
        f"<|im_start|>system\n{QWEN_TIR_SYSTEM}<|im_end|>\n"
        f"<|im_start|>user\n{GSM8K_0}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    prompts = [query]
    for output, result in zip(completions, outputs, strict=True):
        output = output.rstrip()
        query += output
        res = result.strip()
        if len(res) > 400:
            res = res[:200] + "..." + res[-200:]
        query += f"\n```output\n{res or 'Done'}\n```\n"
        prompts.append(query)
    return prompts


QWEN_TURN_1 = (
    "To find how much Janet makes, we count the eggs she sells and multiply by the price.\n\n"
    f"```python\n{CODE}\n```\n"
)
QWEN_TURN_2 = "Janet makes \\(\\boxed{18}\\) dollars every day at the farmers' market."


@pytest.mark.parametrize("chat_template", [False, True], ids=["messages", "render_chat"])
def test_qwen25_math_tir_matches_the_qwen_harness(chat_template):
    trace, calls = run("qwen2.5-math-tir", [QWEN_TURN_1, QWEN_TURN_2], chat_template=chat_template)
    assert (trace.stop_reason, trace.final_answer) == (StopReason.ANSWERED, "18")
    expected = qwen_harness([QWEN_TURN_1], ["18\n"])
    sent = [c.prompt if chat_template else continue_chatml(c.prompt) for c in calls]
    assert sent == expected
    if not chat_template:
        assert calls[0].prompt[-1]["role"] == "user"
        assert calls[1].prompt[-1] == {
            "role": "assistant",
            "content": expected[1].split("assistant\n", 1)[1],
            "partial": True,
        }
    p = calls[0].params
    assert p.max_tokens == 2048 and p.stop == ("</s>", "<|im_end|>", "<|endoftext|>", "\n\n---", "```output")
    assert trace.meta["preset"] == "qwen2.5-math-tir" and trace.meta["preset_sha256"]


def test_qwen25_math_tir_empty_and_long_outputs_follow_the_executor():
    long = "x" * 450
    trace, calls = run("qwen2.5-math-tir", [QWEN_TURN_1, QWEN_TURN_1, QWEN_TURN_2], stdout="")
    assert [continue_chatml(c.prompt) for c in calls] == qwen_harness([QWEN_TURN_1] * 2, ["", ""])
    trace, calls = run("qwen2.5-math-tir", [QWEN_TURN_1, QWEN_TURN_2], stdout=long + "\n")
    assert continue_chatml(calls[1].prompt) == qwen_harness([QWEN_TURN_1], [long])[1]


def test_qwen25_math_tir_stops_after_three_outputs_like_four_model_calls():
    trace, calls = run("qwen2.5-math-tir", [QWEN_TURN_1] * 6)
    # max_func_call = 4: four model calls, three results fed back, then the loop ends.
    assert len(calls) == 4 and trace.stop_reason is StopReason.MAX_ROUNDS


class NoContinueBackend(ScriptedBackend):
    """A chat server in ``--continue-mode user``: it cannot continue an open assistant message."""

    continues_partial = False


def test_an_assistant_write_back_preset_falls_back_to_user_messages_when_the_server_cannot_continue():
    """qwen2.5-math-tir writes outputs into the assistant turn; on a server that cannot continue that
    turn, the output must go as a user message (not a closed assistant message the model never sees
    continued)."""
    backend = NoContinueBackend([QWEN_TURN_1, QWEN_TURN_2])
    config = apply_preset(AgentConfig(verify=False), "qwen2.5-math-tir")
    trace = asyncio.run(solve(GSM8K_0, backend, FixedProvider("18\n"), config))
    assert (trace.stop_reason, trace.final_answer) == (StopReason.ANSWERED, "18")
    second = backend.calls[1].prompt
    assert not any(m.get("partial") for m in second)
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]
    assert second[2]["content"].rstrip().endswith("```")  # the model's code turn, closed
    assert "```output\n18\n```" in second[3]["content"]  # the result, as the next user message


# --- ToRA ------------------------------------------------------------------------------------------


def tora_harness(completions: list[str], outputs: list[str]) -> list[str]:
    """The prompts microsoft/ToRA sends (src/infer/inference.py, src/utils/utils.py @723a8f73).

    src/scripts/infer.sh @1e6ef444 runs prompt type "tora" with --use_train_prompt_format, so the
    prompt is "<|user|>\\n{question}\\n<|assistant|>\\n". Each output is right-stripped and appended;
    the execution result (stripped; cut to 50 + "..." + 50 characters past 100) is appended as
    "\\n```output\\n{r}\\n```\\n".
    """
    query = f"<|user|>\n{GSM8K_0}\n<|assistant|>\n"
    prompts = [query]
    for output, result in zip(completions, outputs, strict=True):
        query += output.rstrip()
        pred = result.strip()
        if len(pred) > 100:
            pred = pred[:50] + "..." + pred[-50:]
        query += f"\n```output\n{pred}\n```\n"
        prompts.append(query)
    return prompts


def test_tora_matches_the_tora_harness():
    turn1 = f"Let's compute the money from the eggs sold.\n```python\n{CODE}\n```\n"
    turn2 = "Janet makes $\\boxed{18}$ dollars a day."
    trace, calls = run("tora", [turn1, turn2])
    assert (trace.stop_reason, trace.final_answer) == (StopReason.ANSWERED, "18")
    assert [c.prompt for c in calls] == tora_harness([turn1], ["18"])
    assert calls[0].params.max_tokens == 1024 and calls[0].params.stop == ("</s>", "---", "```output")
    long = "0123456789" * 15
    _, calls = run("tora", [turn1, turn2], stdout=long + "\n")
    assert calls[1].prompt == tora_harness([turn1], [long])[1]


# --- MathCoder -------------------------------------------------------------------------------------


def test_mathcoder_matches_the_mathcoder_harness():
    """mathllm/MathCoder src/inference.py @77b46cd80399b488c8432c4cb6d645369749f7b5 (code_generation).

    The prompt is "<|system|><|text|>{system}<|endofblock|><|endofmessage|><|user|><|text|>{query}
    <|endofblock|><|endofmessage|><|assistant|>" with system "" (no --syspt) and query = question +
    "\\n" (the empty CoT suffix after a newline). Each call returns one block ending with its stop token,
    appended as is; after a code block "<|execution|>{result}<|endofblock|>" follows (the kernel's
    output stripped).
    """
    blocks = [
        "<|text|>The eggs left are sold at $2 each.",
        f"<|code|>{CODE}",
        "<|text|>She makes \\boxed{18} dollars.",
    ]
    trace, calls = run("mathcoder", [*blocks, Completion(text="", stop_string="<|endofmessage|>")])
    assert (trace.stop_reason, trace.final_answer) == (StopReason.ANSWERED, "18")
    prompt = (
        "<|system|><|text|><|endofblock|><|endofmessage|>"
        f"<|user|><|text|>{GSM8K_0}\n<|endofblock|><|endofmessage|><|assistant|>"
    )
    expected = [prompt]
    prompt += blocks[0] + "<|endofblock|>"
    expected.append(prompt)
    prompt += blocks[1] + "<|endofblock|>" + "<|execution|>18<|endofblock|>"
    expected.append(prompt)
    assert [c.prompt for c in calls[:3]] == expected
    assert calls[0].params.max_tokens == 512
    assert calls[0].params.stop == ("<|endofblock|>", "<|endofmessage|>")


def test_mathcoder_empty_execution():
    blocks = [f"<|code|>{CODE}", "<|text|>\\boxed{18}"]
    _, calls = run("mathcoder", blocks, stdout="")
    assert calls[1].prompt.endswith(
        f"<|code|>{CODE}<|endofblock|><|execution|><empty_execution><|endofblock|>"
    )


# --- NuminaMath TIR --------------------------------------------------------------------------------


def numina_harness(completions: list[str], outputs: list[str]) -> list[str]:
    """The prompts project-numina/aimo-progress-prize sends (kaggle-solution.ipynb @0b222d5c).

    apply_template renders one user message (the problem) with the model's chat template, which
    (training/configs/stage-2-tir.yaml @9e339eb00ac9006c0c263b205dc89704d0ce9a83) writes
    "### Problem: {content}\\n" and, as generation prompt, "### Solution: ". vLLM stops at
    "```output\\n" and keeps it (include_stop_str_in_output); process_code appends the stripped result
    of the last python block (past 200 characters: the first 200 + " ... (output truncated)") and
    "\\n```".
    """
    text = f"### Problem: {GSM8K_0}\n### Solution: "
    prompts = [text]
    for output, result in zip(completions, outputs, strict=True):
        text += output  # the completion as vLLM returns it, stop string included
        res = result.strip()
        if len(res) > 200:
            res = res[:200] + " ... (output truncated)"
        text += f"{res}\n```"
        prompts.append(text)
    return prompts


def test_numina_tir_matches_the_numina_harness():
    prose = "The number of eggs sold each day is 16 - 3 - 4, each sold for $2.\n\n"
    # What the server returns: the text up to the stop string (mathagent's backends drop stop strings).
    turn1 = f"{prose}```python\n{CODE}\n```\n"
    turn2 = "\nJanet makes $\\boxed{18}$ dollars every day."
    trace, calls = run("numina-tir", [turn1, turn2])
    assert (trace.stop_reason, trace.final_answer) == (StopReason.ANSWERED, "18")
    assert [c.prompt for c in calls] == numina_harness([turn1 + "```output\n"], ["18"])
    assert calls[0].params.max_tokens == 2048 and calls[0].params.stop == ("```output\n",)
    long = "y" * 230
    _, calls = run("numina-tir", [turn1, turn2], stdout=long)
    assert calls[1].prompt == numina_harness([turn1 + "```output\n"], [long])[1]


# --- generic OpenAI tool calling -------------------------------------------------------------------


def test_openai_tools_sends_the_function_calling_protocol():
    """No harness to compare with: the expected messages follow the OpenAI Chat Completions function-
    calling protocol (an assistant message carrying ``tool_calls``, answered by a ``tool`` message with
    the same ``tool_call_id``), with mathagent's python tool schema and tools prompt."""
    call = ToolCall(id="call_x", name="python", arguments=json.dumps({"code": CODE}))
    turns = [Completion(text="", tool_calls=(call,)), "She makes \\boxed{18} dollars."]
    trace, calls = run("openai-tools", turns)
    assert (trace.stop_reason, trace.final_answer) == (StopReason.ANSWERED, "18")
    system = load_prompt("tools").text
    head = [{"role": "system", "content": system}, {"role": "user", "content": GSM8K_0}]
    assert calls[0].prompt == head
    assert calls[1].prompt == [
        *head,
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_0",
                    "type": "function",
                    "function": {"name": "python", "arguments": json.dumps({"code": CODE})},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_0", "content": "18"},
    ]
    assert calls[0].params.tools and calls[0].params.tools[0]["function"]["name"] == "python"


# --- today's default -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["markdown", "mathcoder"])
@pytest.mark.parametrize("chat_template", [False, True])
def test_default_preset_changes_nothing(fmt, chat_template):
    turns = {
        "markdown": [f"We compute.\n```python\n{CODE}\n```\n", "So \\boxed{18}."],
        "mathcoder": [
            "<|text|>We compute.",
            f"<|code|>{CODE}",
            "<|text|>So \\boxed{18}.",
            Completion(text="", stop_string="<|endofmessage|>"),
        ],
    }[fmt]
    runs = []
    for preset in (None, "default"):
        trace, calls = run(preset, list(turns), chat_template=chat_template, format=fmt)
        runs.append(
            ([c.prompt for c in calls], [c.params for c in calls], trace.prompt_hash, trace.final_answer)
        )
    assert runs[0] == runs[1] and runs[0][3] == "18"


def test_default_preset_changes_nothing_for_tool_calls():
    call = ToolCall(id="c", name="python", arguments=json.dumps({"code": CODE}))
    runs = []
    for preset in (None, "default"):
        trace, calls = run(preset, [Completion(text="", tool_calls=(call,)), "\\boxed{18}"], format="tools")
        runs.append(([c.prompt for c in calls], [c.params for c in calls], trace.prompt_hash))
    assert runs[0] == runs[1]


def test_every_shipped_preset_has_a_protocol_test():
    from mathagent.agent.presets import available

    tested = {"default", "qwen2.5-math-tir", "tora", "mathcoder", "numina-tir", "openai-tools"}
    assert set(available()) == tested
    for name in tested:
        assert load_preset(name).source
