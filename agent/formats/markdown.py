"""The ``markdown`` format (ToRA / Qwen2.5-Math style): prose, a ```python block, an ```output block.

The model writes prose and a fenced ```python block; generation stops at the ```output opener (or
the harness cuts the turn right after the closing fence), the harness runs the code and appends an
```output block, and the model goes on. Over a raw prompt (the backend's chat template opening the
assistant turn, then the partial answer) the model continues its own message; over a chat API that
cannot continue a partial assistant message, each code turn is an assistant message and each output
block a new user message.

A :class:`~mathagent.agent.presets.Preset` changes what the format writes, not how the loop runs: the
user template, a raw prompt template (the whole prompt as one string, for models without a chat
template), the output block's text, where it goes (``assistant``: the output is appended to the
assistant's own message, which is sent as a final ``{"role": "assistant", "partial": True}`` message
for the backend to continue; ``user``: a new user message, as without a preset), and whether the
model's text is kept verbatim.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from mathagent.agent.backends.base import Completion, Message, Prompt
from mathagent.agent.formats.base import (
    FormatError,
    Generation,
    RenderChat,
    TraceFormat,
    completion_text,
    merge_text,
)
from mathagent.agent.trace import Step, StepKind

if TYPE_CHECKING:
    from mathagent.agent.presets import Preset

OPEN_CODE = re.compile(r"```[ \t]*(?:python3?|py)[ \t]*\n", re.IGNORECASE)
CLOSE_FENCE = re.compile(r"(?:^|\n)[ \t]*```[ \t]*(?=\n|$)")
BLOCK = re.compile(r"```(python|output|user)\n(.*?)\n```[ \t]*(?:\n|$)", re.DOTALL)
_FENCE_KIND = {"python": StepKind.CODE, "output": StepKind.EXECUTION, "user": StepKind.USER}


def _code_block(code: str) -> str:
    return f"```python\n{code.strip(chr(10))}\n```"


def _output_block(view: str) -> str:
    return f"```output\n{view.strip(chr(10))}\n```"


class MarkdownFormat(TraceFormat):
    """Fenced ```python / ```output blocks inside the assistant's prose."""

    name = "markdown"
    stop_strings: tuple[str, ...] = ("```output",)

    def __init__(self, preset: Preset | None = None) -> None:
        super().__init__(preset)
        self.continues = preset is not None and preset.output_role == "assistant"
        """Output blocks are appended to the assistant's own message (a partial last message)."""

    def _output(self, view: str) -> str:
        p = self.preset
        if p is not None and p.output_template is not None:
            return p.output_block(view)
        return _output_block(p.show_output(view) if p is not None else view)

    def body(self, steps: Sequence[Step]) -> str:
        """The assistant's text so far: prose, code blocks and output blocks, one per paragraph."""
        if self.preset is not None and self.preset.verbatim:
            return self._verbatim_body(steps)
        custom = self.preset is not None and self.preset.output_template is not None
        parts: list[str] = []
        for s in steps:
            if s.kind is StepKind.TEXT:
                parts.append(s.content.strip("\n"))
            elif s.kind is StepKind.CODE:
                parts.append(_code_block(s.content))
            elif s.kind is StepKind.USER:
                parts.append(f"```user\n{s.content.strip(chr(10))}\n```")
            elif custom:  # the template carries its own separators: glue it to the code block
                block = self._output(s.content)
                if parts:
                    parts[-1] += block
                else:
                    parts.append(block)
            else:
                parts.append(self._output(s.content))
        out = "\n".join(parts)
        if (
            steps
            and steps[-1].kind is not StepKind.TEXT
            and not (custom and steps[-1].kind is StepKind.EXECUTION)
        ):
            out += "\n"
        return out

    def _verbatim_body(self, steps: Sequence[Step]) -> str:
        """The assistant's text as the model wrote it, with output blocks glued in by the template."""
        parts: list[str] = []
        for s in steps:
            if s.kind is StepKind.TEXT:
                parts.append(s.content)
            elif s.kind is StepKind.CODE:
                parts.append(_code_block(s.content))
            elif s.kind is StepKind.USER:
                parts.append(f"\n```user\n{s.content.strip(chr(10))}\n```\n")
            else:
                parts.append(self._output(s.content))
        return "".join(parts)

    def _head(self, problem: str, system_prompt: str) -> list[Message]:
        head: list[Message] = []
        if system_prompt:
            head.append({"role": "system", "content": system_prompt})
        user = self.preset.user(problem) if self.preset is not None else problem
        head.append({"role": "user", "content": user})
        return head

    def build_prompt(
        self,
        problem: str,
        steps: Sequence[Step],
        system_prompt: str,
        *,
        render_chat: RenderChat | None = None,
        continue_turn: bool = True,
    ) -> Prompt:
        head = self._head(problem, system_prompt)
        if self.preset is not None and self.preset.raw_prompt is not None:
            # The preset's own prompt string (e.g. ToRA's "<|user|>...<|assistant|>"): no chat template.
            return self.preset.raw_head(system_prompt, problem) + self.body(steps)
        if render_chat is not None:
            # Harness messages (verification) close the assistant turn; the last turn stays open.
            done: list[Step] = []
            last_user = max((i for i, s in enumerate(steps) if s.kind is StepKind.USER), default=-1)
            if last_user >= 0:
                done, steps = list(steps[: last_user + 1]), steps[last_user + 1 :]
            return render_chat(head + self._chat_turns(done)) + self.body(steps)
        if self.continues and continue_turn:
            return head + self._continued_turns(steps)
        return head + self._chat_turns(steps)

    def _continued_turns(self, steps: Sequence[Step]) -> list[Message]:
        """Harness messages close the assistant turn; the last assistant turn is left open (partial)."""
        msgs: list[Message] = []
        pending: list[Step] = []
        for s in steps:
            if s.kind is StepKind.USER:
                if pending:
                    msgs.append({"role": "assistant", "content": self.body(pending).rstrip("\n")})
                    pending = []
                msgs.append({"role": "user", "content": s.content})
            else:
                pending.append(s)
        if pending:
            msgs.append({"role": "assistant", "content": self.body(pending), "partial": True})
        return msgs

    def _chat_turns(self, steps: Sequence[Step]) -> list[Message]:
        """Assistant turns for prose + code, user turns for output blocks."""
        msgs: list[Message] = []
        pending: list[Step] = []
        for s in steps:
            if s.kind in (StepKind.EXECUTION, StepKind.USER):
                if pending:
                    msgs.append({"role": "assistant", "content": self.body(pending).rstrip("\n")})
                    pending = []
                content = self._output(s.content) if s.kind is StepKind.EXECUTION else s.content
                if msgs and msgs[-1]["role"] == "user":
                    msgs[-1] = {"role": "user", "content": msgs[-1]["content"] + "\n\n" + content}
                else:
                    msgs.append({"role": "user", "content": content})
            else:
                pending.append(s)
        if pending:
            msgs.append({"role": "assistant", "content": self.body(pending).rstrip("\n")})
        return msgs

    def parse_generation(self, gen: str | Completion) -> Generation:
        text, _stop, finish = completion_text(gen)
        verbatim = self.preset is not None and self.preset.verbatim
        opener = OPEN_CODE.search(text)
        if opener is None:
            return Generation(text=text.rstrip() if verbatim else text.strip(), finished=True)
        prose = text[: opener.start()] if verbatim else text[: opener.start()].strip()
        rest = text[opener.end() :]
        close = CLOSE_FENCE.search(rest)
        if close is not None:
            return Generation(text=prose, code=rest[: close.start()].strip("\n"))
        if finish == "length":
            return Generation(text=prose, code=None, unclosed_code=True)
        # Ended (EOS or the ```output stop) without a closing fence: run what was written.
        code = rest.rstrip().rstrip("`").strip("\n")
        if not code.strip():
            return Generation(text=prose, finished=True)
        return Generation(text=prose, code=code)

    def render_steps(self, problem: str, steps: Sequence[Step], system_prompt: str = "") -> str:
        """The assistant's whole message (as in ToRA's ``code[0]``); the problem is not included."""
        return self.body(steps)

    def parse(self, rendered: str) -> list[Step]:
        if not isinstance(rendered, str):
            raise FormatError("markdown traces are strings")
        steps: list[Step] = []
        pos = 0
        for m in BLOCK.finditer(rendered):
            merge_text(steps, rendered[pos : m.start()].strip("\n"))
            steps.append(Step(_FENCE_KIND[m.group(1)], m.group(2)))
            pos = m.end()
        merge_text(steps, rendered[pos:].strip("\n"))
        return steps
