"""Fixtures of the agent tests (plain helpers shared by several files live in importable modules
beside this one: fakeserver.py, backend_helpers.py, repl_term.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from backend_helpers import ANSWER
from fakeserver import FakeOpenAIServer


@pytest.fixture
def srv() -> Iterator[FakeOpenAIServer]:
    """A loopback fake OpenAI server that answers every request with ``ANSWER`` at once.

    A test file that needs another server (other texts, latency) defines its own ``srv``, which
    takes precedence over this one in that file.
    """
    with FakeOpenAIServer(completions=[ANSWER]) as s:
        yield s
