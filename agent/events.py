"""What the loop reports while it runs: small frozen records handed to an ``on_event`` callback.

The REPL's displays and its recorder dispatch on these types (``isinstance``). Every event carries the
``sample_index`` of the trajectory it comes from (``solve_k`` runs several at once).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Union

from mathagent.agent.trace import StopReason, VerificationRound
from mathagent.sandbox.base import ExecResult


@dataclass(frozen=True)
class TextDelta:
    """A piece of streamed model text."""

    text: str
    sample_index: int = 0


@dataclass(frozen=True)
class CodeEvent:
    """The model closed a code block; it is about to run."""

    code: str
    round: int
    sample_index: int = 0


@dataclass(frozen=True)
class ExecutionEvent:
    """A code block ran; ``view`` is what the model is shown."""

    view: str
    result: ExecResult
    round: int
    sample_index: int = 0


@dataclass(frozen=True)
class AnswerEvent:
    """The trajectory produced its answer (or stopped without one)."""

    answer: str | None
    stop_reason: StopReason
    sample_index: int = 0


@dataclass(frozen=True)
class VerificationEvent:
    """A verification round finished."""

    round: VerificationRound
    sample_index: int = 0


Event = Union[TextDelta, CodeEvent, ExecutionEvent, AnswerEvent, VerificationEvent]
EventHandler = Callable[[Event], None]
