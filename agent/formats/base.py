"""The trace-format seam: how a trajectory is written for the model and read back.

A :class:`TraceFormat` turns (problem, steps so far) into a prompt, tells the backend where to stop,
splits a generation into prose / code / "message finished", renders an execution result the way the
model expects to see it, and renders or parses a whole trace (``parse(render(steps)) == steps`` for
the solve-phase steps). Three formats ship: ``markdown``, ``mathcoder`` and ``tools``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mathagent.agent.backends.base import Completion, Message, Prompt
from mathagent.agent.trace import Step, StepKind, Trace

if TYPE_CHECKING:
    from mathagent.agent.presets import Preset

RenderChat = Callable[[list[Message]], str]
"""A backend's chat template: messages ending with a user turn -> raw prompt opening the assistant turn."""


class FormatError(ValueError):
    """A generation or rendered trace could not be read in this format (e.g. a malformed tool call)."""


@dataclass(frozen=True)
class Generation:
    """One model call, split by the format."""

    text: str
    """Prose the model wrote before any code (may be empty)."""
    code: str | None = None
    """A complete code block to execute, or None."""
    finished: bool = False
    """The model ended its message: no further generation is expected."""
    unclosed_code: bool = False
    """The model opened a code block and the call ended (token limit) before it was closed."""


class TraceFormat(abc.ABC):
    """One way of writing text, code and execution output into a model's context."""

    name: str = ""
    stop_strings: tuple[str, ...] = ()
    """Stop strings to pass to the backend so that generation halts when a code block closes."""
    needs_tools: bool = False
    """True when the format relies on native tool calls (chat prompts with a tool schema)."""
    preset: Preset | None = None
    """The protocol that shapes the prompts (``mathagent.agent.presets``); None: the format's own."""

    def __init__(self, preset: Preset | None = None) -> None:
        self.preset = preset
        if preset is not None and preset.stop is not None:
            self.stop_strings = preset.stop

    @abc.abstractmethod
    def build_prompt(
        self,
        problem: str,
        steps: Sequence[Step],
        system_prompt: str,
        *,
        render_chat: RenderChat | None = None,
        continue_turn: bool = True,
    ) -> Prompt:
        """The prompt that continues the trajectory after ``steps``.

        ``render_chat`` is the backend's chat template; formats that can continue a raw prompt use it
        to open the assistant turn and then append the partial assistant output. ``continue_turn``
        False: the backend cannot continue an open assistant message (a chat server in ``user``
        continue mode), so a format whose preset writes outputs into the assistant turn sends them as
        user messages instead.
        """

    @abc.abstractmethod
    def parse_generation(self, gen: str | Completion) -> Generation:
        """Split one generation into prose, a code block to run, and whether the message ended."""

    @abc.abstractmethod
    def render_steps(self, problem: str, steps: Sequence[Step], system_prompt: str = "") -> Any:
        """A whole trace (problem + steps) as this format writes it: a string or a message list."""

    @abc.abstractmethod
    def parse(self, rendered: Any) -> list[Step]:
        """Steps back from :meth:`render_steps`'s output (the problem and system prompt are dropped)."""

    def render(self, trace: Trace, system_prompt: str = "") -> Any:
        """Render a recorded trace (all phases, in order)."""
        return self.render_steps(trace.problem, trace.steps, system_prompt)


def merge_text(steps: list[Step], text: str, phase: str = "solve") -> None:
    """Append prose to ``steps``, skipping empty text."""
    if text.strip():
        steps.append(Step(StepKind.TEXT, text, phase=phase))


def completion_text(gen: str | Completion) -> tuple[str, str | None, str]:
    """(text, stop_string, finish_reason) for a string or a Completion."""
    if isinstance(gen, Completion):
        return gen.text, gen.stop_string, gen.finish_reason
    return gen, None, "stop"
