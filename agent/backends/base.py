"""The LLM backend seam: one small async interface everything else depends on.

A backend turns a prompt (a raw string for completion-style models, or a list of chat messages)
into one or more :class:`Completion` objects. Backends: ``openai`` (any OpenAI-compatible server,
including the bundled llama.cpp one), ``transformers`` (local weights) and ``scripted`` (replays
given turns; for tests, demos and trace replay).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, Union, runtime_checkable

Message = dict[str, Any]
"""An OpenAI-style chat message: ``{"role": ..., "content": ..., "tool_calls"?: ..., "tool_call_id"?: ...}``."""

Prompt = Union[str, Sequence[Message]]
"""A raw text prompt (completion endpoint) or a chat message list."""

TokenCallback = Callable[[str], None]
"""Called with each new piece of generated text when streaming."""


class BackendError(RuntimeError):
    """The backend failed after its retries (server down, repeated 5xx, garbage responses)."""


class ServerGone(BackendError):
    """The model server is gone: the one this process started has exited on its own (a crash), or a
    server refused every connection for ``RetryPolicy.unreachable_s``; no retry can reach it.
    Not one sample's failure but the run's: the loop passes it up, an eval stops on it without
    recording the samples in flight (a resume runs them), ``solve`` prints it. The message says how
    the server ended (its exit status or signal, and the tail of its log) or how long it refused."""

    def __init__(self, message: str, *, restarts: bool = True) -> None:
        super().__init__(message)
        self.restarts = restarts
        """True when mathagent started the server, so a new backend starts it again; False for a
        server at a URL someone else runs (``--base-url``): only they can bring it back."""


@dataclass(frozen=True)
class ToolCall:
    """A native tool call made by a chat model."""

    id: str
    name: str
    arguments: str
    """Raw JSON arguments as the model produced them (may be malformed: callers validate)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Completion:
    """One generated continuation."""

    text: str
    """Generated text, without the stop string that ended it."""
    finish_reason: str = "stop"
    """``stop`` (natural end or stop string), ``length`` (max_tokens hit), ``tool_calls``, ``error``."""
    stop_string: str | None = None
    """Which stop string ended generation, when the backend can tell."""
    tool_calls: tuple[ToolCall, ...] = ()
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tool_calls"] = [t.to_dict() for t in self.tool_calls]
        return d


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings for one call."""

    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 1024
    stop: tuple[str, ...] = ()
    seed: int | None = None
    tools: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    """OpenAI tool schemas; only meaningful for chat prompts."""


@runtime_checkable
class Backend(Protocol):
    """What the agent needs from a model."""

    name: str
    """Backend kind, e.g. ``openai``, ``transformers``, ``scripted``."""
    model: str
    """Model identifier as the backend knows it."""
    default_format: str
    """Trace format this backend speaks best: ``markdown``, ``mathcoder`` or ``tools``."""
    context_window: int | None
    """Maximum prompt + completion tokens, when known."""

    async def generate(
        self,
        prompt: Prompt,
        params: GenerationParams,
        *,
        on_text: TokenCallback | None = None,
    ) -> list[Completion]:
        """Return ``params.n`` completions. Raises :class:`BackendError` after retries fail."""
        ...

    def count_tokens(self, text: str) -> int:
        """Token count of ``text`` (an estimate is acceptable where no tokenizer is at hand)."""
        ...

    async def aclose(self) -> None: ...


def server_slots(backend: object) -> int | None:
    """Requests the model server that this process started for ``backend`` works on at once
    (llama-cpp-python's: 1, with one KV state; llama-server: its slots, a KV cache each); None when
    the backend has no such server (a remote one, transformers, scripted turns)."""
    slots = getattr(getattr(backend, "server", None), "slots", None)
    return slots if isinstance(slots, int) else None
