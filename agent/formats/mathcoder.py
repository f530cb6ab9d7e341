"""The ``mathcoder`` format: MathCoder's special-token blocks inside system / user / assistant turns.

A whole conversation reads::

    <|system|><|text|>SYSTEM<|endofblock|><|endofmessage|><|user|><|text|>PROBLEM<|endofblock|>
    <|endofmessage|><|assistant|><|text|>...<|endofblock|><|code|>...<|endofblock|>
    <|execution|>...<|endofblock|><|text|>...<|endofblock|><|endofmessage|>

(without the line breaks). Generation stops at ``<|endofblock|>`` (after every block: a model trained
with the execution masked never writes the execution itself) and at ``<|endofmessage|>``. After a code
block the harness appends ``<|execution|>VIEW<|endofblock|>``; after a text block it simply asks for
the next block. The prompt is always a raw string: this format is its own chat template.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mathagent.agent.backends.base import Completion, Prompt
from mathagent.agent.formats.base import FormatError, Generation, RenderChat, TraceFormat, completion_text
from mathagent.agent.trace import Step, StepKind

if TYPE_CHECKING:
    from mathagent.agent.presets import Preset

SYSTEM, USER, ASSISTANT = "<|system|>", "<|user|>", "<|assistant|>"
TEXT, CODE, EXECUTION = "<|text|>", "<|code|>", "<|execution|>"
END_BLOCK, END_MESSAGE = "<|endofblock|>", "<|endofmessage|>"
_KIND = {TEXT: StepKind.TEXT, CODE: StepKind.CODE, EXECUTION: StepKind.EXECUTION}
_MARK = {v: k for k, v in _KIND.items()}
_TOKEN = re.compile(r"<\|(system|user|assistant|text|code|execution|endofblock|endofmessage)\|>")


def _message(role: str, text: str) -> str:
    return f"{role}{TEXT}{text}{END_BLOCK}{END_MESSAGE}"


def _block(s: Step, preset: Preset | None = None) -> str:
    if s.kind is StepKind.USER:  # a harness message: close the assistant turn, reopen it after
        return f"{END_MESSAGE}{_message(USER, s.content)}{ASSISTANT}"
    content = (
        preset.show_output(s.content) if preset is not None and s.kind is StepKind.EXECUTION else s.content
    )
    return f"{_MARK[s.kind]}{content}{END_BLOCK}"


def blocks(steps: Iterable[Step], preset: Preset | None = None) -> str:
    """The assistant's blocks for ``steps`` (no closing ``<|endofmessage|>``)."""
    return "".join(_block(s, preset) for s in steps)


def _tokens(text: str) -> list[tuple[str, str]]:
    """(marker, content up to the next marker) pairs; leading text gets the marker ``""``."""
    out: list[tuple[str, str]] = []
    pos, mark = 0, ""
    for m in _TOKEN.finditer(text):
        if m.start() > pos or mark:
            out.append((mark, text[pos : m.start()]))
        mark, pos = m.group(0), m.end()
    if pos < len(text) or mark:
        out.append((mark, text[pos:]))
    return out


class MathCoderFormat(TraceFormat):
    """MathCoder's ``<|text|>`` / ``<|code|>`` / ``<|execution|>`` blocks."""

    name = "mathcoder"
    stop_strings: tuple[str, ...] = (END_BLOCK, END_MESSAGE)

    def _head(self, problem: str, system_prompt: str) -> str:
        p = self.preset
        keep = system_prompt or (p is not None and p.keep_empty_system)
        head = _message(SYSTEM, system_prompt) if keep else ""
        return head + _message(USER, p.user(problem) if p is not None else problem) + ASSISTANT

    def build_prompt(
        self,
        problem: str,
        steps: Sequence[Step],
        system_prompt: str,
        *,
        render_chat: RenderChat | None = None,
        continue_turn: bool = True,
    ) -> Prompt:
        return self._head(problem, system_prompt) + blocks(steps, self.preset)

    def parse_generation(self, gen: str | Completion) -> Generation:
        text, stop, finish = completion_text(gen)
        ended = stop == END_MESSAGE or END_MESSAGE in text
        prose: list[str] = []
        toks = _tokens(text)
        for i, (mark, content) in enumerate(toks):
            if mark in ("", TEXT):
                if content.strip():
                    prose.append(content.strip("\n"))
            elif mark == CODE:
                closed = any(m == END_BLOCK for m, _ in toks[i + 1 :]) or finish != "length"
                if not closed:
                    return Generation(text="\n".join(prose), unclosed_code=True)
                return Generation(text="\n".join(prose), code=content.strip("\n"))
            elif mark in (END_MESSAGE, EXECUTION, ASSISTANT, USER, SYSTEM):
                break  # end of message, or a hallucinated execution / next turn: ignore the rest
        joined = "\n".join(prose)
        # A text block cut by the <|endofblock|> stop: the message goes on unless it ended or was empty.
        finished = ended or not joined.strip() or finish == "length"
        return Generation(text=joined, finished=finished)

    def render_steps(self, problem: str, steps: Sequence[Step], system_prompt: str = "") -> str:
        return self._head(problem, system_prompt) + blocks(steps, self.preset) + END_MESSAGE

    def parse(self, rendered: str) -> list[Step]:
        return parse_mathcoder(rendered)


def parse_mathcoder(text: str) -> list[Step]:
    """The assistant's steps from a MathCoder-format string (system and user turns are skipped)."""
    if not isinstance(text, str):
        raise FormatError("mathcoder traces are strings")
    steps: list[Step] = []
    role = ASSISTANT if ASSISTANT not in text else ""
    seen_assistant = role == ASSISTANT
    for mark, content in _tokens(text):
        if mark in (SYSTEM, USER, ASSISTANT):
            role = mark
            seen_assistant = seen_assistant or mark == ASSISTANT
        elif mark in _KIND and role == ASSISTANT:
            steps.append(Step(_KIND[mark], content))
        elif mark == TEXT and role == USER and seen_assistant:
            steps.append(Step(StepKind.USER, content))
    return steps


def steps_from_debug_result(debug_result: Sequence[Mapping[str, Any]]) -> tuple[str, list[Step]]:
    """(problem, steps) from a MathCoder ``debug_result`` row (roles system/user/text/code/execution).

    MathCoder's released rows end with an extra ``text`` item holding only the extracted answer (e.g.
    ``"18"``) after the final prose; it is not part of the model's message and is dropped when the
    item before it is prose containing ``\\boxed``.
    """
    problem = ""
    steps: list[Step] = []
    for item in debug_result:
        role, content = item.get("role"), item.get("content", "")
        if not isinstance(content, str):
            content = "".join(c.get("content", "") for c in content if isinstance(c, Mapping))
        if role == "user":
            problem = content
        elif role in ("text", "code", "execution"):
            steps.append(Step(StepKind(role), content))
    if (
        len(steps) >= 2
        and steps[-1].kind is StepKind.TEXT
        and steps[-2].kind is StepKind.TEXT
        and "\\boxed" in steps[-2].content
        and "\\boxed" not in steps[-1].content
        and len(steps[-1].content) < 64
    ):
        steps.pop()
    return problem, steps
