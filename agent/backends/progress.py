"""Telling a slow server from a stuck one by the server's own activity, when mathagent started it.

A silence on the wire (no response headers yet, or no streamed event for a while) is ambiguous: the
server may be hung, or working on something that takes long (a long prompt, the generation queued
ahead of this request, a CPU shared with other work: the bundled server on a loaded 2-core machine
paused for minutes in the middle of a stream). When the backend knows the server's process it can be
given a **progress probe**: ``probe() -> float | None``, a counter of work done that only grows (for
our own servers, :class:`~mathagent.agent.procstat.ProcessActivity`: seconds the server's threads
ran or waited for a CPU), ``None`` when it cannot be read (the process is gone). Remote servers have
no probe and keep the plain rules (a silence longer than the stall timeout is a stall).

The rule (:class:`SilenceWatch`, one per request): when a silence reaches the stall timeout, the
probe is read and compared with its value near the start of the silence (sampled every tenth of the
stall timeout while the request waits). If the server was busy for at least ``MIN_BUSY_SHARE`` of
that window, the silence is **forgiven** (logged once per silence) and judged again one stall
timeout later; the caller bounds a forgiven silence by the request timeout. If not (asleep,
blocked, SIGSTOPped, deadlocked, gone), it is a stall, at the same moment as without a probe.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

ProgressProbe = Callable[[], float | None]
"""A server's cumulative work counter (seconds; only grows), or ``None`` when it cannot be read."""

MIN_BUSY_SHARE = 0.05
"""Share of a silence the server must have been busy (summed over its threads) to count as working.
An idle llama-cpp-python server is busy ~0.1% of the time; one generating, 100-200% (two threads)."""
SAMPLE_FRACTION = 0.1
"""The probe is sampled every this fraction of the stall timeout while a request is silent."""


@dataclass(frozen=True)
class Forgiven:
    """A silence that reached the stall timeout while the server was working."""

    phase: str
    """``headers`` (no response yet) or ``stream`` (between two events)."""
    silent_s: float
    """How long the request had been silent when it was judged."""
    busy_s: float
    """Seconds of server activity measured over ``window_s``."""
    window_s: float


class SilenceWatch:
    """Judges one request's silences at the stall timeout with a progress probe (see module doc).

    ``on_stall`` is called (once) when a silence reaches the stall timeout and the server was not
    working; ``on_forgive`` receives a :class:`Forgiven` each time one is forgiven. Call
    :meth:`begin` when a judged phase starts (the silence starts then), :meth:`heard` on every sign of
    progress on the wire (cheap: no probe is read), :meth:`pause` for a phase that is not judged, and
    :meth:`close` at the end.
    """

    def __init__(
        self,
        probe: ProgressProbe,
        stall_s: float,
        *,
        on_stall: Callable[[], None],
        on_forgive: Callable[[Forgiven], None] | None = None,
        min_share: float = MIN_BUSY_SHARE,
        what: str = "request",
    ) -> None:
        self.probe, self.stall_s, self.min_share, self.what = probe, stall_s, min_share, what
        self._on_stall, self._on_forgive = on_stall, on_forgive
        self._loop = asyncio.get_running_loop()
        self.interval = max(0.05, stall_s * SAMPLE_FRACTION)
        self.phase = ""
        self.since = self._loop.time()
        """Loop time the current silence started."""
        self._judged = -math.inf
        self._ref: tuple[float, float] | None = None
        """(time, probe value): the first sample taken in the current silence."""
        self._logged_since: float | None = None
        self.stalled: tuple[float, float] | None = None
        """(busy seconds, window seconds) of the judgement that declared a stall."""
        self.forgiven = 0
        """Judgements of the current silence that forgave it."""
        self._tick: asyncio.TimerHandle | None = None
        self._check: asyncio.TimerHandle | None = None

    # -- the caller's side ------------------------------------------------------------------------

    def begin(self, phase: str, since: float) -> None:
        """A judged phase (``headers`` or ``stream``) starts; its silence starts at ``since``."""
        self._cancel()
        self.phase, self.since, self.forgiven = phase, since, 0
        self._ref = None
        self._sample(self._loop.time())
        self._arm_tick()
        self._arm_check(since + self.stall_s)

    def heard(self, now: float) -> None:
        """Progress on the wire at ``now``: a new silence starts (the next tick samples the probe)."""
        self.since, self._ref, self.forgiven = now, None, 0

    def pause(self) -> None:
        """No judging until the next :meth:`begin` (a phase bounded otherwise)."""
        self.phase = ""
        self._cancel()

    def close(self) -> None:
        self.pause()

    # -- timers -----------------------------------------------------------------------------------

    def _cancel(self) -> None:
        for h in (self._tick, self._check):
            if h is not None:
                h.cancel()
        self._tick = self._check = None

    def _arm_tick(self) -> None:
        self._tick = self._loop.call_later(self.interval, self._on_tick)

    def _arm_check(self, when: float) -> None:
        if self._check is not None:
            self._check.cancel()
        self._check = self._loop.call_at(when, self._on_check)

    def _sample(self, now: float) -> None:
        try:
            value = self.probe()
        except Exception as e:  # noqa: BLE001 - a broken probe is no evidence of work
            log.debug("progress probe failed: %s", e)
            value = None
        self._ref = None if value is None else (now, value)

    def _on_tick(self) -> None:
        if self._ref is None:
            self._sample(self._loop.time())
        self._arm_tick()

    def _on_check(self) -> None:
        self._check = None
        now = self._loop.time()
        due = max(self.since, self._judged) + self.stall_s
        if now < due - 1e-3:  # progress since this was armed: judge later
            self._arm_check(due)
            return
        ref = self._ref
        try:
            value = self.probe()
        except Exception as e:  # noqa: BLE001
            log.debug("progress probe failed: %s", e)
            value = None
        if value is None:
            self._stall(0.0, now - self.since)
            return
        if ref is None:  # no sample yet in this silence: take one and look again shortly
            self._ref = (now, value)
            self._arm_check(now + self.interval)
            return
        busy, window = max(0.0, value - ref[1]), max(0.0, now - ref[0])
        self._judged, self._ref = now, (now, value)
        if window <= 0 or busy < self.min_share * window:
            self._stall(busy, window)
            return
        self.forgiven += 1
        silent = now - self.since
        event = Forgiven(self.phase, silent, busy, window)
        if self._logged_since != self.since:
            self._logged_since = self.since
            what = "response headers" if self.phase == "headers" else "streamed event"
            log.info(
                "%s: no %s for %.0f s, but the server is working (busy %.1f s in the last %.0f s): "
                "waiting on",
                self.what, what, silent, busy, window,
            )  # fmt: skip
        if self._on_forgive is not None:
            self._on_forgive(event)
        self._arm_check(now + self.stall_s)

    def _stall(self, busy: float, window: float) -> None:
        self.stalled = (busy, window)
        self._cancel()
        self._on_stall()

    def describe(self) -> str:
        """Why the last judgement declared a stall (for the error message)."""
        if self.stalled is None:
            return ""
        busy, window = self.stalled
        return f"the server was not working: busy {busy:.2f} s in the last {window:.0f} s"
