"""Reading a streamed (chat) completion: server-sent events parsed choice by choice, under a deadline
that moves as the stream makes progress. Used by :class:`~.openai_backend.OpenAIBackend`."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from mathagent.agent.backends.base import Completion, TokenCallback, ToolCall
from mathagent.agent.backends.retry import GarbageResponse


class Deadline:
    """``asyncio.timeout_at`` where it exists (Python 3.11+), else a timer that cancels the task."""

    def __init__(self, when: float) -> None:
        self.when = when
        self._cm: Any = None
        self._handle: asyncio.TimerHandle | None = None
        self._fired = False
        self._task: asyncio.Task[Any] | None = None

    async def __aenter__(self) -> Deadline:
        if hasattr(asyncio, "timeout_at"):
            self._cm = asyncio.timeout_at(self.when)
            await self._cm.__aenter__()
        else:  # pragma: no cover - Python 3.10
            self._task = asyncio.current_task()
            self._arm()
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool | None:
        if self._cm is not None:
            return bool(await self._cm.__aexit__(exc_type, exc, tb))
        if self._handle is not None:  # pragma: no cover - Python 3.10
            self._handle.cancel()
        if self._fired and exc_type is asyncio.CancelledError:  # pragma: no cover
            raise TimeoutError
        return None

    def _arm(self) -> None:  # pragma: no cover - Python 3.10
        if self._handle is not None:
            self._handle.cancel()
        self._handle = asyncio.get_running_loop().call_at(self.when, self._fire)

    def _fire(self) -> None:  # pragma: no cover - Python 3.10
        self._fired = True
        if self._task is not None:
            self._task.cancel()

    def reschedule(self, when: float) -> None:
        self.when = when
        if self._cm is not None:
            self._cm.reschedule(when)
        else:  # pragma: no cover - Python 3.10
            self._arm()

    def expired(self) -> bool:
        return bool(self._cm.expired()) if self._cm is not None else self._fired


@dataclass
class Choice:
    pieces: list[str] = field(default_factory=list)
    finish: str | None = None
    stop_reason: Any = None
    calls: dict[int, dict[str, str]] = field(default_factory=dict)


class StreamState:
    """Parses server-sent events of a (chat) completion stream, choice by choice."""

    def __init__(self, chat: bool, on_text: TokenCallback | None) -> None:
        self.chat, self.on_text = chat, on_text
        self.choices: dict[int, Choice] = {}
        self.started = self.done = False
        self.events = 0
        self.last_event = 0.0
        """Event-loop time of the last data event (set by the reader)."""
        self.pt = self.ct = 0
        self._data: list[str] = []

    def feed(self, line: str) -> bool:
        """One line of the event stream (a blank line ends an event; ``:`` lines are comments).
        True when it completed a data event (progress)."""
        if not line.strip():
            return self._dispatch()
        if line.startswith("data:"):
            data = line[5:]
            self._data.append(data[1:] if data.startswith(" ") else data)
        # comments (": ping"), "event:", "id:" and "retry:" lines carry nothing we use
        return False

    def _dispatch(self) -> bool:
        if not self._data:
            return False
        data, self._data = "\n".join(self._data), []
        if data.strip() == "[DONE]":
            self.done = True
            return True
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError:
            raise GarbageResponse(f"unparseable stream event: {data[:200]!r}") from None
        if not isinstance(chunk, dict):
            raise GarbageResponse(f"stream event is not an object: {data[:200]!r}")
        if chunk.get("error"):
            raise GarbageResponse(f"server error in the stream: {str(chunk['error'])[:300]}")
        self.started = True
        self.events += 1
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.pt = int(usage.get("prompt_tokens") or 0)
            self.ct = int(usage.get("completion_tokens") or 0)
        for ch in chunk.get("choices") or []:
            if not isinstance(ch, dict):
                raise GarbageResponse(f"stream choice is not an object: {str(ch)[:200]!r}")
            idx = int(ch.get("index") or 0)
            c = self.choices.setdefault(idx, Choice())
            if self.chat:
                delta = ch.get("delta") or {}
                piece = delta.get("content")
                for tc in delta.get("tool_calls") or []:
                    slot = c.calls.setdefault(
                        int(tc.get("index") or 0), {"id": "", "name": "", "arguments": ""}
                    )
                    slot["id"] = tc.get("id") or slot["id"]
                    fn = tc.get("function") or {}
                    slot["name"] += fn.get("name") or ""
                    slot["arguments"] += fn.get("arguments") or ""
            else:
                piece = ch.get("text")
            if piece:
                c.pieces.append(piece)
                if idx == 0 and self.on_text is not None:
                    self.on_text(piece)
            if ch.get("finish_reason"):
                c.finish = ch["finish_reason"]
                c.stop_reason = ch.get("stop_reason")
        return True

    def completions(self) -> list[Completion]:
        self._dispatch()  # a last event without its blank line
        if not self.choices:
            raise GarbageResponse("stream ended without any content")
        unfinished = sorted(i for i, c in self.choices.items() if c.finish is None)
        if unfinished:  # cut off: by the connection, or by a server that ends streams early
            raise GarbageResponse(
                f"stream ended before the answer was complete (choice {unfinished[0]} has no finish_reason)"
            )
        out = []
        n = len(self.choices)
        for _, c in sorted(self.choices.items()):
            tool_calls = tuple(
                ToolCall(id=t["id"] or f"call_{i}", name=t["name"], arguments=t["arguments"])
                for i, t in sorted(c.calls.items())
            )
            out.append(
                Completion(
                    text="".join(c.pieces),
                    finish_reason="tool_calls" if tool_calls else (c.finish or "stop"),
                    stop_string=c.stop_reason if isinstance(c.stop_reason, str) else None,
                    tool_calls=tool_calls,
                    prompt_tokens=self.pt,
                    completion_tokens=self.ct // n if n > 1 else self.ct,
                )
            )
        return out
