"""What the tests of OpenAIBackend against the loopback fake server share (tests/agent/fakeserver.py).

Import it by name (``from backend_helpers import CHAT, ANSWER, run, errors``): tests/agent is on
``sys.path`` in its tests, as for ``fakeserver``. The ``srv`` fixture that serves :data:`ANSWER` is in
tests/agent/conftest.py (a fixture imported into a test module would be shadowed by the test's own
``srv`` parameter, which ruff reports as F811).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from mathagent.agent.backends.openai_backend import OpenAIBackend

T = TypeVar("T")

CHAT = [{"role": "user", "content": "What is 6*7?"}]
"""The one-message conversation the tests send."""
ANSWER = "Six times seven: 6*7 = 42, so the answer is 42."
"""What the ``srv`` fixture answers (long enough to stream in several events)."""


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one backend call to its end (each test gets a fresh event loop)."""
    return asyncio.run(coro)


def errors(backend: OpenAIBackend) -> list[str]:
    """The error of each failed try the backend retried, in order."""
    return [e.error for e in backend.retry_log]
