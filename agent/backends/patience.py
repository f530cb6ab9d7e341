"""Telling a stuck request from a slow one by evidence: how long this server has taken lately.

A request waits for the response headers, then for its first streamed event. The fixed limits
(stall timeout on the headers, request timeout on the first token) must be long enough for the
slowest working server: the bundled model on 2 busy cores takes minutes to start answering. A fast
server should not pay that for each request it loses. :class:`Patience` keeps the latencies of this
backend's recent requests (request sent to headers, and to first event) and declares a waiting
request **stuck** when both hold:

- it has waited longer than ``factor`` times the p95 of the recent latencies of that phase (and at
  least ``floor_s``, 2 s by default; nothing is declared before ``min_samples`` latencies are known),
  and
- a request sent *after* it has already passed that phase: the server is answering, but not this
  request. A serial server (llama.cpp) answers in order, so a request queued behind others is never
  overtaken, however long it waits; only the fixed limits apply to it.

The floor decides only for servers whose p95 is under ``floor_s / factor`` (0.2 s): a request to
such a server that has waited 2 s while later ones were answered has waited ten times what nearly all
of them took. It was 5 s; the fault benchmark's hangs (p95 ~0.3 s) were then given up after ~5 s
instead of ~3 s, each holding a trajectory 2 s longer (bench/soak.py, 17 hangs per run).

Only the waits *before* the first event are judged this way: a generation that is producing events
is never abandoned (the stall timeout, on silence, applies after the first event).
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable

PHASES = ("headers", "first")
"""``headers``: request sent -> response headers; ``first``: request sent -> first streamed event."""


class Patience:
    """Latencies of one server's recent requests, and the rule that declares a request stuck."""

    def __init__(
        self, factor: float = 10.0, floor_s: float = 2.0, min_samples: int = 8, keep: int = 64
    ) -> None:
        if not (factor >= 1 and floor_s > 0 and min_samples >= 1 and keep >= min_samples):
            raise ValueError("Patience needs factor >= 1, floor_s > 0 and keep >= min_samples >= 1")
        self.factor, self.floor_s, self.min_samples = factor, floor_s, min_samples
        self.latencies: dict[str, deque[float]] = {p: deque(maxlen=keep) for p in PHASES}
        self.latest_start: dict[str, float] = {p: -math.inf for p in PHASES}
        """Per phase, the latest send time of a request that has passed it."""

    def record(self, phase: str, started: float, now: float) -> None:
        """A request sent at ``started`` passed ``phase`` at ``now`` (loop times)."""
        self.latencies[phase].append(max(now - started, 0.0))
        if started > self.latest_start[phase]:
            self.latest_start[phase] = started

    def limit(self, phase: str) -> float | None:
        """Seconds after which a request still waiting in ``phase`` may be stuck; None: too few samples."""
        xs = self.latencies[phase]
        if len(xs) < self.min_samples:
            return None
        s = sorted(xs)
        p95 = s[min(len(s) - 1, math.ceil(0.95 * len(s)) - 1)]
        return max(self.floor_s, self.factor * p95)

    def overtaken(self, phase: str, started: float) -> bool:
        """Whether a request sent after ``started`` has passed ``phase``."""
        return self.latest_start[phase] > started

    def stuck(self, phase: str, started: float, now: float) -> bool:
        lim = self.limit(phase)
        return lim is not None and now - started >= lim and self.overtaken(phase, started)

    def watch(self, phase: str, started: float, on_stuck: Callable[[], None]) -> Watch:
        """Call ``on_stuck`` (once) if the request sent at ``started`` gets stuck in ``phase``; cancel
        the returned watch when the phase is passed."""
        return Watch(self, phase, started, on_stuck)


RECHECK_S = 1.0
"""How often a waiting request is looked at again while it is not (yet) judged stuck."""


class Watch:
    """A timer on the running event loop that applies :meth:`Patience.stuck` to one waiting request."""

    def __init__(self, patience: Patience, phase: str, started: float, on_stuck: Callable[[], None]):
        self.patience, self.phase, self.started, self._on_stuck = patience, phase, started, on_stuck
        self.fired = False
        self.waited = 0.0
        self.limit: float | None = None
        self._loop = asyncio.get_running_loop()
        self._handle: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        now = self._loop.time()
        lim = self.patience.limit(self.phase)
        not_yet = lim is not None and now < self.started + lim
        when = self.started + lim if lim is not None and not_yet else now + RECHECK_S
        self._handle = self._loop.call_at(when, self._check)

    def _check(self) -> None:
        self._handle = None
        now = self._loop.time()
        if self.patience.stuck(self.phase, self.started, now):
            self.fired = True
            self.waited = now - self.started
            self.limit = self.patience.limit(self.phase)
            self._on_stuck()
            return
        self._arm()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def describe(self) -> str:
        what = "response headers" if self.phase == "headers" else "first token"
        return (
            f"request stuck: no {what} after {self.waited:.1f} s while requests sent after it were "
            f"answered (limit {self.limit or 0:.1f} s: {self.patience.factor:g} x the p95 of this "
            f"server's recent latencies, at least {self.patience.floor_s:g} s)"
        )
