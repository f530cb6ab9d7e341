"""A backend that replays given model turns: for tests, demos and replays of published traces.

Each call consumes the next turn (a string, a :class:`Completion`, or a callable ``(prompt, params) ->
str | Completion``) and cuts it at the first of the call's stop strings, as a real server would. The
rest of a cut turn is served by the following calls, after dropping the execution output the turn had
recorded right after the cut (a ```` ```output ```` block or an ``<|execution|>`` block): the harness
appends its own. So one turn can be a whole published trace, split at its code blocks. Every prompt
and parameter set is recorded in :attr:`ScriptedBackend.calls`.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from mathagent.agent.backends.base import (
    BackendError,
    Completion,
    GenerationParams,
    Message,
    Prompt,
    TokenCallback,
    ToolCall,
)

Turn = Union[str, Completion, Callable[[Prompt, GenerationParams], Union[str, Completion]]]

RECORDED_EXECUTION = (
    re.compile(
        r"\A[^\n]*\n.*?(?:^|\n)```[ \t]*(?:\n|\Z)", re.DOTALL | re.MULTILINE
    ),  # after a ```output stop
    re.compile(r"\A\s*<\|execution\|>.*?<\|endofblock\|>", re.DOTALL),  # MathCoder execution block
)
"""Patterns for execution output recorded in a turn, matched at the start of the text after a cut."""


class ScriptExhausted(BackendError):
    """The scripted backend was called more times than it has turns."""


@dataclass(frozen=True)
class ScriptedCall:
    """One call the scripted backend answered."""

    prompt: Prompt
    params: GenerationParams


def render_chatml(messages: Sequence[Message]) -> str:
    """ChatML (Qwen's template) for ``messages``, opening the assistant turn at the end."""
    out = [f"<|im_start|>{m['role']}\n{m.get('content') or ''}<|im_end|>\n" for m in messages]
    return "".join(out) + "<|im_start|>assistant\n"


def prompt_text(prompt: Prompt) -> str:
    """A prompt flattened to text (for token counts)."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m.get('role')}: {m.get('content') or ''}{m.get('tool_calls') or ''}" for m in prompt)


class ScriptedBackend:
    """Replays ``turns``; see the module docstring."""

    def __init__(
        self,
        turns: Iterable[Turn],
        *,
        model: str = "scripted",
        default_format: str = "markdown",
        context_window: int | None = None,
        on_exhausted: str = "raise",
        chat_template: bool = False,
        latency_s: float = 0.0,
        skip_recorded_executions: bool = True,
    ) -> None:
        if on_exhausted not in ("raise", "empty"):
            raise ValueError("on_exhausted must be 'raise' or 'empty'")
        self.name = "scripted"
        self.model = model
        self.default_format = default_format
        self.context_window = context_window
        self.on_exhausted = on_exhausted
        self.latency_s = latency_s
        self.skip_recorded_executions = skip_recorded_executions
        self.calls: list[ScriptedCall] = []
        self._turns: list[Turn] = list(turns)
        self._next = 0
        self._pending: Completion | None = None
        if chat_template:
            self.render_chat = render_chatml

    @property
    def remaining(self) -> int:
        """Turns not yet served (a partly served turn counts as one)."""
        return len(self._turns) - self._next + (1 if self._pending is not None else 0)

    def count_tokens(self, text: str) -> int:
        """About four characters a token."""
        return math.ceil(len(text) / 4)

    async def aclose(self) -> None:
        return None

    async def generate(
        self, prompt: Prompt, params: GenerationParams, *, on_text: TokenCallback | None = None
    ) -> list[Completion]:
        self.calls.append(ScriptedCall(prompt, params))
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        out: list[Completion] = []
        for _ in range(max(params.n, 1)):
            out.append(self._one(prompt, params))
        if on_text is not None and out[0].text:
            for piece in re.findall(r"\S*\s*", out[0].text):
                if piece:
                    on_text(piece)
        return out

    def _take(self, prompt: Prompt, params: GenerationParams) -> Completion | None:
        turn: Turn
        if self._pending is not None:
            turn, self._pending = self._pending, None
            return turn
        if self._next >= len(self._turns):
            return None
        turn = self._turns[self._next]
        self._next += 1
        if callable(turn):
            turn = turn(prompt, params)
        if isinstance(turn, str):
            return Completion(text=turn)
        if isinstance(turn, Completion):
            return turn
        raise BackendError(f"scripted turn {self._next - 1} is a {type(turn).__name__}, not str/Completion")

    def _one(self, prompt: Prompt, params: GenerationParams) -> Completion:
        t0 = time.perf_counter()
        turn = self._take(prompt, params)
        if turn is None:
            if self.on_exhausted == "raise":
                raise ScriptExhausted(f"scripted backend ran out of turns after {len(self.calls) - 1} calls")
            return Completion(text="", finish_reason="stop")
        text, stop_string, finish = turn.text, turn.stop_string, turn.finish_reason
        tool_calls: tuple[Any, ...] = turn.tool_calls
        cut = min(
            ((text.find(s), s) for s in params.stop if s and s in text),
            default=None,
        )
        if cut is not None:
            pos, stop_string = cut
            rest = text[pos + len(stop_string) :]
            text, finish, tool_calls = text[:pos], "stop", ()
            if self.skip_recorded_executions:
                for pattern in RECORDED_EXECUTION:
                    m = pattern.match(rest)
                    if m and (stop_string == "```output") == (pattern is RECORDED_EXECUTION[0]):
                        rest = rest[m.end() :]
                        break
            if rest.strip():
                self._pending = Completion(text=rest, finish_reason=turn.finish_reason)
        limit = params.max_tokens
        if limit and self.count_tokens(text) > limit:
            text, finish, stop_string, tool_calls = text[: limit * 4], "length", None, ()
        return Completion(
            text=text,
            finish_reason=finish,
            stop_string=stop_string,
            tool_calls=tool_calls,
            prompt_tokens=self.count_tokens(prompt_text(prompt)),
            completion_tokens=self.count_tokens(text),
            latency_s=time.perf_counter() - t0,
        )


def decode_turn(item: Any) -> str | Completion:
    """One scripted turn from JSON: a string (the model's text) or an object ``{"text", "tool_calls",
    "finish_reason"}`` whose tool calls are ``{"id", "name", "arguments"}`` (defaults: ``call_<i>``,
    ``python``, ``""``)."""
    if isinstance(item, str):
        return item
    if not isinstance(item, dict):
        raise ValueError(f"a scripted turn is a string or an object, got {type(item).__name__}")
    calls = tuple(
        ToolCall(c.get("id", f"call_{i}"), c.get("name", "python"), c.get("arguments", ""))
        for i, c in enumerate(item.get("tool_calls", ()))
    )
    return Completion(item.get("text", ""), item.get("finish_reason", "stop"), tool_calls=calls)


def load_script(path: str | Path) -> dict[str, Any]:
    """A script file: a JSON list of turns, or ``{"turns": [...], "default_format", "model", "latency_s"}``.

    Turns are decoded with :func:`decode_turn`. Used by ``mathagent solve --script`` and the REPL
    (env ``MATHAGENT_SCRIPT``); ``mathagent eval`` reads per-problem scripts (:class:`ScriptBook`).
    """
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if isinstance(data, list):
        data = {"turns": data}
    if not isinstance(data, dict) or not isinstance(data.get("turns"), list):
        raise ValueError(f"{path}: expected a JSON list of turns or an object with 'turns'")
    return {**data, "turns": [decode_turn(t) for t in data["turns"]]}


def script_backend(
    path: str | Path, *, default_format: str | None = None, on_exhausted: str = "raise"
) -> ScriptedBackend:
    """A :class:`ScriptedBackend` replaying a script file (:func:`load_script`); ``default_format``
    overrides the file's own."""
    spec = load_script(path)
    return ScriptedBackend(
        spec["turns"],
        model=spec.get("model", "scripted"),
        default_format=default_format or spec.get("default_format", "markdown"),
        latency_s=float(spec.get("latency_s", 0.0)),
        on_exhausted=on_exhausted,
    )


class ScriptBook:
    """Scripted turns per problem (and per sample) from a JSONL file, for ``--backend scripted``.

    One line per problem: ``{"problem_id": ..., "turns": [...]}`` (every sample replays the same turns),
    ``{"problem_id": ..., "samples": [[...], [...]]}`` (turns per sample index), or
    ``{"problem_id": ..., "error": "..."}`` (the backend fails with that message); ``latency_s`` optional.
    Used by ``mathagent eval`` and ``mathagent generate`` for tests and demos.
    """

    def __init__(self, path: str | None) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        if path:
            for line in Path(path).read_text(encoding="utf-8").splitlines():
                if line.strip():
                    row = json.loads(line)
                    self.rows[str(row["problem_id"])] = row

    def backend(self, problem_id: str, fmt: str, sample_index: int = 0) -> ScriptedBackend:
        row = self.rows.get(problem_id, {})
        turns: list[Any]
        if row.get("error"):
            msg = row["error"]

            def fail(prompt: Any, params: Any) -> str:
                raise BackendError(msg)

            turns = [fail]
        elif "samples" in row:
            samples = row["samples"]
            turns = list(samples[sample_index]) if sample_index < len(samples) else []
        else:
            turns = list(row.get("turns", []))
        turns = [decode_turn(t) if isinstance(t, dict) else t for t in turns]
        return ScriptedBackend(
            turns, default_format=fmt, on_exhausted="empty", latency_s=float(row.get("latency_s", 0.0))
        )
