"""``KernelPool``: pre-started sandboxes so a trajectory gets its kernel at once.

``acquire()`` hands out a ready :class:`JupyterSandbox`, used for ONE trajectory and then closed by
the caller. Background threads keep ``size`` sandboxes ready. Sandbox slots (each a bubblewrap
sandbox whose zygote forks kernels, see :mod:`mathagent.sandbox.boot`) are reused: when a trajectory's
sandbox is closed its kernel and every process it started are killed, and the slot goes back to the
pool, where the next kernel is forked into it with emptied dirs (~0.075 CPU-s instead of the ~0.5 CPU-s
of starting a sandbox); a free slot unused for ``idle_ttl_s`` is closed. Stale slots left by a killed
earlier run are swept when the first slot is claimed (see :mod:`mathagent.sandbox.slots`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from mathagent.sandbox.base import IsolationLevel, IsolationReport
from mathagent.sandbox.concurrency import env_count, usable_cpus
from mathagent.sandbox.config import SandboxConfig
from mathagent.sandbox.isolation import make_plan
from mathagent.sandbox.kernel import JupyterSandbox, SandboxStartError, _Zygote

log = logging.getLogger(__name__)

REFILL_THREADS = 4
"""Most kernels a pool gets ready at once (forks into reused slots); new slots: :func:`start_threads`."""


def start_threads(size: int) -> int:
    """How many new sandbox slots a pool of ``size`` starts at once: at most half the usable CPUs
    (at least 1). Forking a kernel into a reused slot (~0.075 CPU-s, mostly waiting for its handshake)
    is not limited by this; :data:`REFILL_THREADS` of those run at once.

    Starting a slot is CPU work, not waiting: its zygote imports ipykernel, sympy and numpy (~1 CPU-s).
    Starts beyond the CPUs free for them only slow each other down, and a cold pool hands out no kernel
    until the first start ends. Measured on 2 CPUs beside a busy model server (16 kernels acquired from
    a cold pool): 4 starts at once gave the first kernel after 6.5 s and the 16th after 23.8 s; one at a
    time, 1.5 s and 19.5 s.
    """
    given = env_count("MATHAGENT_POOL_STARTS")
    if given is not None:
        return min(size, given)
    return max(1, min(size, REFILL_THREADS, usable_cpus() // 2))


class KernelPool:
    """A :class:`~mathagent.sandbox.base.SandboxProvider` backed by ``size`` warm kernels."""

    def __init__(
        self, size: int = 2, config: SandboxConfig | None = None, *, acquire_timeout_s: float = 60.0
    ):
        if size < 1:
            raise ValueError("pool size must be at least 1")
        self.config = config or SandboxConfig.from_env()
        self.plan = make_plan(self.config)
        self.size = size
        self.acquire_timeout_s = acquire_timeout_s
        self.max_idle = max(size, 64)
        """Most free slots kept for reuse (each holds a sandbox with its zygote, ~110 MB)."""
        self.idle_ttl_s = 60.0
        """A free slot unused this long is closed (its memory goes back)."""
        self._ready: deque[JupyterSandbox] = deque()
        self._waiting: deque[object] = deque()  # one ticket per acquire() waiting, oldest first
        self._cv = threading.Condition()  # guards _ready and _waiting
        self._idle: list[tuple[_Zygote, float]] = []
        self._idle_lock = threading.Lock()
        self._wanted = threading.Semaphore(size)  # one token per kernel the refiller should start
        self._stop = threading.Event()
        self._last_error: BaseException | None = None
        self.slots_started = 0
        """Sandboxes (zygotes) started so far; kernels forked into reused slots are not counted."""
        # new slots started at once: the first alone (a cold pool's first kernel comes soonest), then more
        self._starting = threading.Semaphore(1)
        self._more_starts = start_threads(size) - 1
        self._threads = [
            threading.Thread(target=self._refill, daemon=True, name=f"sandbox-pool-{i}")
            for i in range(min(size, REFILL_THREADS))
        ]
        for t in self._threads:
            t.start()

    @property
    def level(self) -> IsolationLevel:
        return self.plan.level

    @property
    def report(self) -> IsolationReport:
        return self.plan.report

    def _give_back(self, zygote: _Zygote) -> None:
        """A trajectory's sandbox was closed: keep its slot for the next kernel, or close it."""
        with self._idle_lock:
            if not self._stop.is_set() and zygote.alive() and len(self._idle) < self.max_idle:
                self._idle.append((zygote, time.monotonic()))
                return
        _close_zygote(zygote)

    def _take_idle(self) -> _Zygote | None:
        found, dead = None, []
        with self._idle_lock:
            while self._idle and found is None:
                z, _since = self._idle.pop()  # the most recently used: its memory is warmest
                if z.alive():
                    found = z
                else:
                    dead.append(z)
        for z in dead:  # closing waits for processes to exit: not while holding the lock
            _close_zygote(z)
        return found

    def _close_stale_idle(self) -> None:
        now = time.monotonic()
        with self._idle_lock:
            stale = [z for z, since in self._idle if now - since > self.idle_ttl_s]
            self._idle = [(z, since) for z, since in self._idle if now - since <= self.idle_ttl_s]
        for z in stale:
            _close_zygote(z)

    def _new_sandbox(self) -> JupyterSandbox | None:
        """A kernel forked into a free slot, else one in a new slot once a start turn is free (a slot
        given back meanwhile is taken instead); None when the pool closes while waiting."""
        while not self._stop.is_set():
            z = self._take_idle()
            if z is not None:
                try:
                    return JupyterSandbox(self.config, _zygote=z, _give_back=self._give_back)
                except SandboxStartError as e:  # the slot is broken: drop it and start a new one
                    if self._stop.is_set():
                        return None
                    log.warning("could not fork a kernel in a reused slot: %s", e)
            if self._starting.acquire(timeout=0.05):
                try:
                    sb = JupyterSandbox(self.config, _give_back=self._give_back, _cancel=self._stop)
                except SandboxStartError:
                    if self._stop.is_set():  # close() abandoned the start
                        return None
                    raise
                finally:
                    self._starting.release()
                with self._idle_lock:  # several refill threads count here
                    self.slots_started += 1
                    more, self._more_starts = self._more_starts, 0
                for _ in range(more):
                    self._starting.release()
                return sb
        return None

    def _refill(self) -> None:
        failures = 0
        while not self._stop.is_set():
            if not self._wanted.acquire(timeout=0.2):
                self._close_stale_idle()
                continue
            if self._stop.is_set():
                break
            try:
                sb = self._new_sandbox()
                if sb is None:  # closed while waiting for a start turn
                    break
            except Exception as e:  # keep trying, but let acquire() report it
                self._last_error = e
                failures += 1
                log.warning("pool could not start a kernel (%d failures): %s", failures, e)
                self._wanted.release()
                self._stop.wait(min(0.5 * failures, 5.0))
                continue
            failures = 0
            self._last_error = None
            if self._stop.is_set():
                sb.close()
                break
            with self._cv:
                self._ready.append(sb)
                self._cv.notify_all()

    def ready_count(self) -> int:
        """Started kernels waiting to be acquired."""
        with self._cv:
            return len(self._ready)

    def acquire(self) -> JupyterSandbox:
        """A fresh, started sandbox for one trajectory; close it when the trajectory ends.

        Waiting callers are served in the order they called (a ticket queue): with many trajectories
        polling one queue, an unlucky one could lose every race for a minute on a loaded machine and
        fail with "no kernel became ready" while kernels kept arriving."""
        if self._stop.is_set():
            raise RuntimeError("pool is closed")
        deadline = time.monotonic() + self.acquire_timeout_s
        sb = None
        ticket = object()
        with self._cv:
            self._waiting.append(ticket)
            try:
                while True:  # short slices so a close() from another thread ends the wait at once
                    if self._stop.is_set():
                        raise RuntimeError("pool is closed")
                    if self._ready and self._waiting[0] is ticket:
                        sb = self._ready.popleft()
                        break
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cv.wait(min(0.1, left))
            finally:
                self._waiting.remove(ticket)
                self._cv.notify_all()  # the next ticket may take the next kernel
        if sb is None:
            err = self._last_error
            raise SandboxStartError(
                f"no kernel became ready within {self.acquire_timeout_s:g} s" + (f": {err}" if err else "")
            ) from err
        self._wanted.release()
        return sb

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.config.start_timeout_s + 5)
        with self._cv:
            ready, self._ready = list(self._ready), deque()
            self._cv.notify_all()
        for sb in ready:
            sb.close()
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for z, _since in idle:
            _close_zygote(z)

    def __enter__(self) -> KernelPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _close_zygote(z: _Zygote) -> None:
    z.kill()
    z.slot.release()
