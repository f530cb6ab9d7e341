"""A process-wide bound on cells executing at once, so per-cell timeouts keep their meaning under load.

Waiting for a turn is not counted against a cell's timeout: :func:`cell_slot` is entered before the
cell's clock starts.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask; the CPU count where that is not known)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def env_count(name: str) -> int | None:
    """A count (threads, processes, starts at once) set by the environment variable ``name``: None when
    it is unset or blank, else a whole number of at least 1. Anything else is refused with the
    variable's name (``0`` too: no count here means "none", and silently raising it to 1 hides a typo)."""
    given = os.environ.get(name, "").strip()
    if not given:
        return None
    try:
        n = int(given)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {given!r}")
    return n


_sems: dict[int, threading.BoundedSemaphore] = {}


def _semaphore(size: int) -> threading.BoundedSemaphore:
    """One shared semaphore per bound (normally just one: the CPU count)."""
    size = size or (os.cpu_count() or 1)
    with _lock:
        if size not in _sems:
            _sems[size] = threading.BoundedSemaphore(size)
        return _sems[size]


@contextmanager
def cell_slot(size: int = 0) -> Iterator[None]:
    """Hold one of ``size`` (default: CPU count) execution turns for the duration of a cell."""
    sem = _semaphore(size)
    sem.acquire()
    try:
        yield
    finally:
        sem.release()
