"""The trace record: one trajectory (one sample of one problem), lossless through JSON.

A trace holds the problem, ordered steps (text the model wrote, code it wrote, the execution result
of that code, verification rounds), the final answer, why it stopped, token counts, timings, and
where it ran (backend, model, format, sandbox level, prompt hash). ``Trace.from_dict(t.to_dict())``
equals ``t``.
"""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from mathagent.agent.grading.voting import VerificationState
from mathagent.sandbox.base import ExecResult

SCHEMA_VERSION = 1


class StepKind(str, enum.Enum):
    TEXT = "text"
    CODE = "code"
    EXECUTION = "execution"
    USER = "user"
    """A message from the harness to the model inside the trajectory (e.g. the verification request);
    not model output. Only the verify / revise phases produce it."""


class StopReason(str, enum.Enum):
    ANSWERED = "answered"
    """The model stated a final answer."""
    MAX_ROUNDS = "max_rounds"
    """The round limit was reached before an answer."""
    CONTEXT_FULL = "context_full"
    """The next call would have overflowed the context budget."""
    NO_ANSWER = "no_answer"
    """The model ended its message without an extractable answer."""
    ERROR = "error"
    """Backend failure or bad input; ``Trace.error`` says what."""
    CANCELLED = "cancelled"
    """Stopped by the user (Ctrl-C)."""


@dataclass(frozen=True)
class Step:
    """One block of a trace."""

    kind: StepKind
    content: str
    """Text or code as the model wrote it; for EXECUTION, the view the model was shown."""
    execution: ExecResult | None = None
    """Full result, for EXECUTION steps."""
    phase: str = "solve"
    """``solve``, ``verify`` or ``revise``: which phase of the loop produced the step."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "content": self.content,
            "execution": self.execution.to_dict() if self.execution else None,
            "phase": self.phase,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Step:
        ex = d.get("execution")
        return cls(
            kind=StepKind(d["kind"]),
            content=d["content"],
            execution=ExecResult.from_dict(ex) if ex else None,
            phase=d.get("phase", "solve"),
        )


@dataclass(frozen=True)
class VerificationRound:
    """One verification attempt (code-based self-verification)."""

    round: int
    state: VerificationState
    answer: str | None
    """The answer that was being verified."""
    reason: str = ""
    """How the state was decided (code output, model statement, error, timeout...)."""

    def to_dict(self) -> dict[str, Any]:
        return {"round": self.round, "state": self.state.value, "answer": self.answer, "reason": self.reason}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VerificationRound:
        return cls(d["round"], VerificationState(d["state"]), d.get("answer"), d.get("reason", ""))


@dataclass(frozen=True)
class Trace:
    """One trajectory."""

    problem: str
    steps: tuple[Step, ...] = ()
    final_answer: str | None = None
    stop_reason: StopReason = StopReason.NO_ANSWER
    verification: tuple[VerificationRound, ...] = ()
    tokens_in: int = 0
    tokens_out: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds: ``total``, ``model``, ``exec`` and so on."""
    backend: str = ""
    model: str = ""
    format: str = ""
    sandbox_level: str = ""
    prompt_hash: str = ""
    problem_id: str = ""
    sample_index: int = 0
    seed: int | None = None
    error: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def verification_state(self) -> VerificationState | None:
        """State of the last verification round, or None when verification did not run."""
        return self.verification[-1].state if self.verification else None

    def with_(self, **changes: Any) -> Trace:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["steps"] = [s.to_dict() for s in self.steps]
        d["verification"] = [v.to_dict() for v in self.verification]
        d["stop_reason"] = self.stop_reason.value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trace:
        d = dict(d)
        version = d.get("schema_version", SCHEMA_VERSION)
        if version > SCHEMA_VERSION:
            raise ValueError(
                f"trace schema_version {version} is newer than this mathagent ({SCHEMA_VERSION})"
            )
        d["steps"] = tuple(Step.from_dict(s) for s in d.get("steps", ()))
        d["verification"] = tuple(VerificationRound.from_dict(v) for v in d.get("verification", ()))
        d["stop_reason"] = StopReason(d.get("stop_reason", StopReason.NO_ANSWER.value))
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_json(cls, s: str) -> Trace:
        return cls.from_dict(json.loads(s))
