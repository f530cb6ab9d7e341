"""The ``tools`` format: chat messages with a native ``python`` tool (argument ``code``).

The model answers in assistant messages; to run code it calls the ``python`` tool, and each result
comes back as a ``tool`` message. A message without a tool call ends the trajectory. Models that
print Qwen-style ``<tool_call>{...}</tool_call>`` text instead of native calls are understood too.
Only the first tool call of a message is run (the rest are dropped, so every call has a result).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from mathagent.agent.backends.base import Completion, Message, Prompt, ToolCall
from mathagent.agent.formats.base import (
    FormatError,
    Generation,
    RenderChat,
    TraceFormat,
    completion_text,
)
from mathagent.agent.trace import Step, StepKind

PYTHON_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "python",
        "description": (
            "Run Python code in a persistent Jupyter kernel (state is kept between calls; sympy and "
            "numpy are installed). Returns stdout, the value of the last expression, or the error."
        ),
        "parameters": {
            "type": "object",
            "properties": {"code": {"type": "string", "description": "Python code to execute."}},
            "required": ["code"],
        },
    },
}
_TEXT_CALL = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.DOTALL)


def code_from_arguments(arguments: str) -> str:
    """The ``code`` argument of a python tool call; raises :class:`FormatError` when there is none."""
    try:
        args = json.loads(arguments)
    except (json.JSONDecodeError, TypeError) as e:
        raise FormatError(f"tool call arguments are not valid JSON: {arguments[:200]!r}") from e
    if isinstance(args, dict) and isinstance(args.get("arguments"), dict):
        args = args["arguments"]  # {"name": ..., "arguments": {...}} as printed by some chat models
    if isinstance(args, dict):
        code = args.get("code")
        if code is None and len(args) == 1:
            code = next(iter(args.values()))
        if isinstance(code, str) and code.strip():
            return code
    raise FormatError(f"tool call has no 'code' string argument: {arguments[:200]!r}")


def _call_id(i: int) -> str:
    return f"call_{i}"


class ToolsFormat(TraceFormat):
    """Native tool calls over a chat API."""

    name = "tools"
    stop_strings = ()
    needs_tools = True
    tools = (PYTHON_TOOL,)

    def build_prompt(
        self,
        problem: str,
        steps: Sequence[Step],
        system_prompt: str,
        *,
        render_chat: RenderChat | None = None,
        continue_turn: bool = True,
    ) -> Prompt:
        return self.render_steps(problem, steps, system_prompt)

    def parse_generation(self, gen: str | Completion) -> Generation:
        text, _stop, finish = completion_text(gen)
        calls: tuple[ToolCall, ...] = gen.tool_calls if isinstance(gen, Completion) else ()
        if calls:
            return Generation(text=text.strip(), code=code_from_arguments(calls[0].arguments))
        m = _TEXT_CALL.search(text)
        if m is not None:
            return Generation(text=text[: m.start()].strip(), code=code_from_arguments(m.group(1)))
        if "<tool_call>" in text and finish == "length":
            return Generation(text=text[: text.index("<tool_call>")].strip(), unclosed_code=True)
        return Generation(text=text.strip(), finished=True)

    def render_steps(self, problem: str, steps: Sequence[Step], system_prompt: str = "") -> list[Message]:
        msgs: list[Message] = []
        if system_prompt:
            msgs.append({"role": "system", "content": system_prompt})
        msgs.append({"role": "user", "content": self.preset.user(problem) if self.preset else problem})
        n_calls = 0
        current: Message | None = None
        for s in steps:
            if s.kind is StepKind.USER:
                msgs.append({"role": "user", "content": s.content})
                current = None
            elif s.kind is StepKind.TEXT:
                current = {"role": "assistant", "content": s.content}
                msgs.append(current)
            elif s.kind is StepKind.CODE:
                if current is None or current.get("tool_calls"):
                    current = {"role": "assistant", "content": ""}
                    msgs.append(current)
                args = json.dumps({"code": s.content}, ensure_ascii=False)
                current["tool_calls"] = [
                    {
                        "id": _call_id(n_calls),
                        "type": "function",
                        "function": {"name": "python", "arguments": args},
                    }
                ]
                n_calls += 1
            else:
                content = self.preset.show_output(s.content) if self.preset else s.content
                msgs.append(
                    {"role": "tool", "tool_call_id": _call_id(max(n_calls - 1, 0)), "content": content}
                )
                current = None
        return msgs

    def parse(self, rendered: Any) -> list[Step]:
        if not isinstance(rendered, list):
            raise FormatError("tools traces are message lists")
        steps: list[Step] = []
        seen_assistant = False
        for msg in rendered:
            role = msg.get("role")
            if role == "user" and seen_assistant:
                steps.append(Step(StepKind.USER, msg.get("content") or ""))
            elif role == "assistant":
                seen_assistant = True
                if msg.get("content"):
                    steps.append(Step(StepKind.TEXT, msg["content"]))
                for call in msg.get("tool_calls") or ():
                    steps.append(Step(StepKind.CODE, code_from_arguments(call["function"]["arguments"])))
            elif role == "tool":
                seen_assistant = True
                steps.append(Step(StepKind.EXECUTION, msg.get("content") or ""))
        return steps
