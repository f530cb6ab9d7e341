"""Rebuilds partial traces from the loop's events, so a problem stopped with Ctrl-C still leaves a record.

The loop returns no trace when it is cancelled (cancellation propagates); :class:`EventRecorder`
has seen every event up to that point and turns them into one ``StopReason.CANCELLED`` trace per
sample, with the text, code and execution steps that had completed.
"""

from __future__ import annotations

from typing import Any

from mathagent.agent.events import CodeEvent, Event, ExecutionEvent, TextDelta
from mathagent.agent.repl.display import clean_prose, split_code
from mathagent.agent.trace import Step, StepKind, StopReason, Trace


class EventRecorder:
    """Collects steps per sample from events (see the module docstring)."""

    def __init__(self, k: int) -> None:
        self.steps: list[list[Step]] = [[] for _ in range(k)]
        self.buffers = ["" for _ in range(k)]

    def _flush(self, i: int) -> None:
        prose = clean_prose(split_code(self.buffers[i])[0]).strip()
        if prose:
            self.steps[i].append(Step(StepKind.TEXT, prose))
        self.buffers[i] = ""

    def handle(self, event: Event) -> None:
        i = event.sample_index
        if not 0 <= i < len(self.steps):
            return
        if isinstance(event, TextDelta):
            self.buffers[i] += event.text
        elif isinstance(event, CodeEvent):
            self._flush(i)
            self.steps[i].append(Step(StepKind.CODE, event.code))
        elif isinstance(event, ExecutionEvent):
            self._flush(i)
            self.steps[i].append(Step(StepKind.EXECUTION, event.view, execution=event.result))

    def cancelled_traces(
        self, problem: str, backend: Any, settings: Any, sandbox_level: str = ""
    ) -> list[Trace]:
        """One CANCELLED trace per sample, holding the steps completed before the cancel."""
        out = []
        for i in range(len(self.steps)):
            self._flush(i)
            out.append(
                Trace(
                    problem=problem,
                    steps=tuple(self.steps[i]),
                    stop_reason=StopReason.CANCELLED,
                    backend=getattr(backend, "name", ""),
                    model=getattr(backend, "model", ""),
                    format=settings.format or getattr(backend, "default_format", "") or "",
                    sandbox_level=sandbox_level,
                    sample_index=i,
                    seed=None if settings.seed is None else settings.seed + i,
                    error="cancelled by the user (Ctrl-C)",
                    meta={"source": "repl"},
                )
            )
        return out
