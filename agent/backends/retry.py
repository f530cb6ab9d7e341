"""Retries at the edge: tenacity around one backend request, with a jittered exponential wait.

What is retried: rate limits (429), request timeouts (408), server errors (5xx), timeouts,
connection errors, and responses we cannot parse (:class:`GarbageResponse`). Everything else
(400, 401, 404, ...) fails at once. The wait is injectable (any tenacity ``wait`` or a callable of
the retry state) and multiplied by env ``MATHAGENT_RETRY_WAIT_SCALE`` (tests set it to 0). After the
last try a :class:`~mathagent.agent.backends.base.BackendError` names the request, the number of
tries and the last error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
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
    """Cap on one wait, in seconds."""
    wait_scale: float | None = None
    """Multiplier on every wait; ``None`` reads env ``MATHAGENT_RETRY_WAIT_SCALE`` (default 1)."""

    def scale(self) -> float:
        if self.wait_scale is not None:
            return self.wait_scale
        try:
            return float(os.environ.get("MATHAGENT_RETRY_WAIT_SCALE", "1"))
        except ValueError:
            return 1.0


WaitFn = Callable[[RetryCallState], float]


def status_of(exc: BaseException) -> int | None:
    code = getattr(exc, "status_code", None)
    if code is None:
        response = getattr(exc, "response", None)
        code = getattr(response, "status_code", None)
    return int(code) if isinstance(code, int) else None


def is_retryable(exc: BaseException) -> bool:
    """True for transient failures worth another try."""
    import httpx
    import openai

    if isinstance(exc, GarbageResponse | json.JSONDecodeError | asyncio.TimeoutError | TimeoutError):
        return True
    if isinstance(exc, openai.APIConnectionError | openai.APIResponseValidationError):
        return True  # APITimeoutError is a subclass of APIConnectionError
    if isinstance(exc, httpx.TransportError):
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
) -> T:
    """Await ``fn()`` until it succeeds, retrying transient errors; ``BackendError`` when out of tries."""
    policy = policy or RetryPolicy()
    base_wait: Any = wait or wait_random_exponential(multiplier=policy.initial_wait, max=policy.max_wait)
    scale = policy.scale()

    def scaled_wait(state: RetryCallState) -> float:
        return max(0.0, float(base_wait(state)) * scale)

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "%s failed (try %d/%d): %s; retrying",
            what,
            state.attempt_number,
            policy.attempts,
            describe_error(exc) if exc else "?",
        )

    retrying = AsyncRetrying(
        stop=stop_after_attempt(max(1, policy.attempts)),
        wait=scaled_wait,
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
