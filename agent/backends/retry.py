"""Retries at the edge: tenacity around one backend request, honouring ``Retry-After``.

What is retried: rate limits (429), request timeouts (408), server errors (5xx), timeouts (the
backend's own request and stall timeouts included), connection errors, and responses we cannot parse
(:class:`GarbageResponse`). Everything else (400, 401, 404, ...) fails at once.

The wait before the next try: when the failed answer carried ``Retry-After`` (seconds or an HTTP
date) or ``retry-after-ms``, that, capped at ``RetryPolicy.max_retry_after``; otherwise a jittered
exponential wait (or the injected ``wait``: any tenacity ``wait`` or a callable of the retry state).
Every wait is multiplied by env ``MATHAGENT_RETRY_WAIT_SCALE`` (tests set it to 0). ``on_retry``
receives a :class:`RetryEvent` per wait. After the last try a
:class:`~mathagent.agent.backends.base.BackendError` names the request, the number of tries and the
last error.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from mathagent.agent.backends.base import BackendError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_random_exponential

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class GarbageResponse(RuntimeError):
    """The server answered, but with something that is not a usable completion."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry one request."""

    attempts: int = 5
    """Total tries, the first included."""
    initial_wait: float = 0.5
    """Base of the exponential wait, in seconds (before jitter and scaling)."""
    max_wait: float = 30.0
    """Cap on one jittered wait, in seconds."""
    max_retry_after: float = 60.0
    """Cap on a wait the server asked for with ``Retry-After``, in seconds."""
    unreachable_s: float = 60.0
    """How long a server that refuses every connection gets to come back (tries go on every few
    seconds) before the request gives up with ``ServerGone`` (scaled like the waits)."""
    wait_scale: float | None = None
    """Multiplier on every wait; ``None`` reads env ``MATHAGENT_RETRY_WAIT_SCALE`` (default 1)."""

    def scale(self) -> float:
        if self.wait_scale is not None:
            return self.wait_scale
        try:
            return float(os.environ.get("MATHAGENT_RETRY_WAIT_SCALE", "1"))
        except ValueError:
            return 1.0


@dataclass(frozen=True)
class RetryEvent:
    """One failed try and the wait that followed it."""

    what: str
    attempt: int
    """The try that failed (1 = the first)."""
    error: str
    wait_s: float
    """Seconds waited before the next try (after capping and scaling)."""
    retry_after_s: float | None
    """What the server asked for (``Retry-After``), uncapped and unscaled; ``None``: nothing."""


WaitFn = Callable[[RetryCallState], float]


def status_of(exc: BaseException) -> int | None:
    code = getattr(exc, "status_code", None)
    if code is None:
        response = getattr(exc, "response", None)
        code = getattr(response, "status_code", None)
    return int(code) if isinstance(code, int) else None


def retry_after_of(exc: BaseException | None, now: float | None = None) -> float | None:
    """Seconds the server asked to wait (``retry-after-ms``, ``Retry-After`` seconds or HTTP date)."""
    headers = getattr(getattr(exc, "response", None), "headers", None)
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            value = float(ms) / 1000
            return value if math.isfinite(value) and value >= 0 else None
        raw = headers.get("retry-after")
    except (AttributeError, TypeError, ValueError):
        return None
    if raw is None:
        return None
    raw = str(raw).strip()
    try:
        value = float(raw)
        return value if math.isfinite(value) and value >= 0 else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _http_errors(name: str) -> tuple[type[BaseException], ...]:
    """The error classes called ``name`` in the HTTP libraries present (the OpenAI client uses httpx
    or httpx2)."""
    out: list[type[BaseException]] = []
    for lib in ("httpx", "httpx2"):
        try:
            mod = __import__(lib)
        except ImportError:
            continue
        err = getattr(mod, name, None)
        if isinstance(err, type):
            out.append(err)
    return tuple(out)


def connect_failed(exc: BaseException | None) -> bool:
    """True when ``exc`` or an error it came from is a failure to open a connection (refused,
    unknown host, no route): the request never reached a server, unlike a dropped one or a timeout."""
    kinds: tuple[type[BaseException], ...] = (ConnectionRefusedError, *_http_errors("ConnectError"))
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, kinds):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def is_retryable(exc: BaseException) -> bool:
    """True for transient failures worth another try."""
    import openai

    if isinstance(exc, GarbageResponse | json.JSONDecodeError | asyncio.TimeoutError | TimeoutError):
        return True
    if isinstance(exc, openai.APIConnectionError | openai.APIResponseValidationError):
        return True  # APITimeoutError is a subclass of APIConnectionError
    if isinstance(exc, _http_errors("TransportError") + (ConnectionError,)):
        return True
    code = status_of(exc)
    if isinstance(exc, openai.APIStatusError) or code is not None:
        return code is not None and (code in RETRYABLE_STATUS or code >= 500)
    return False


def describe_error(exc: BaseException) -> str:
    code = status_of(exc)
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    head = f"HTTP {code}" if code is not None else type(exc).__name__
    return f"{head}: {msg[:300]}" if msg else head


async def call_with_retries(
    fn: Callable[[], Awaitable[T]],
    *,
    what: str,
    policy: RetryPolicy | None = None,
    wait: WaitFn | None = None,
    on_retry: Callable[[RetryEvent], None] | None = None,
) -> T:
    """Await ``fn()`` until it succeeds, retrying transient errors; ``BackendError`` when out of tries."""
    policy = policy or RetryPolicy()
    base_wait: Any = wait or wait_random_exponential(multiplier=policy.initial_wait, max=policy.max_wait)
    scale = policy.scale()

    def next_wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        asked = retry_after_of(exc)
        chosen = min(asked, policy.max_retry_after) if asked is not None else float(base_wait(state))
        seconds = max(0.0, chosen * scale)
        return seconds

    def before_sleep(state: RetryCallState) -> None:
        """Called only when another try follows (tenacity computes a wait after the last try too)."""
        exc = state.outcome.exception() if state.outcome else None
        error = describe_error(exc) if exc else "?"
        asked = retry_after_of(exc)
        seconds = float(state.upcoming_sleep or 0.0)
        note = f" (server asked for {asked:g} s)" if asked is not None else ""
        log.warning(
            "%s failed (try %d/%d): %s; retrying in %.2f s%s",
            what, state.attempt_number, policy.attempts, error, seconds, note,
        )  # fmt: skip
        if on_retry is not None:
            on_retry(RetryEvent(what, state.attempt_number, error, seconds, asked))

    retrying = AsyncRetrying(
        stop=stop_after_attempt(max(1, policy.attempts)),
        wait=next_wait,
        retry=retry_if_exception(is_retryable),
        before_sleep=before_sleep,
        reraise=True,
    )
    attempt = 0
    try:
        async for att in retrying:
            with att:
                attempt = att.retry_state.attempt_number
                return await fn()
    except BackendError:
        raise
    except Exception as exc:
        if is_retryable(exc):
            raise BackendError(
                f"{what} failed after {attempt} tries; last error: {describe_error(exc)}"
            ) from exc
        raise BackendError(f"{what} failed (not retried): {describe_error(exc)}") from exc
    raise BackendError(f"{what} failed: no attempt was made")  # pragma: no cover
