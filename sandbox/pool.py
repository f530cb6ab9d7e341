"""``KernelPool``: pre-started sandboxes so a trajectory gets its kernel at once.

``acquire()`` hands out a ready :class:`JupyterSandbox` (used for ONE trajectory, then closed by the
caller: its process tree, dirs and cgroups go with it); a background thread starts replacements so
the pool stays at ``size``. Stale slots left by a killed earlier run are swept when the first slot is
claimed (see :mod:`mathagent.sandbox.slots`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from mathagent.sandbox.base import IsolationLevel, IsolationReport
from mathagent.sandbox.config import SandboxConfig
from mathagent.sandbox.isolation import make_plan
from mathagent.sandbox.kernel import JupyterSandbox, SandboxStartError

log = logging.getLogger(__name__)


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
        self._ready: queue.Queue[JupyterSandbox] = queue.Queue()
        self._wanted = threading.Semaphore(size)  # one token per kernel the refiller should start
        self._stop = threading.Event()
        self._last_error: BaseException | None = None
        self._thread = threading.Thread(target=self._refill, daemon=True, name="sandbox-pool")
        self._thread.start()

    @property
    def level(self) -> IsolationLevel:
        return self.plan.level

    @property
    def report(self) -> IsolationReport:
        return self.plan.report

    def _refill(self) -> None:
        failures = 0
        while not self._stop.is_set():
            if not self._wanted.acquire(timeout=0.2):
                continue
            if self._stop.is_set():
                break
            try:
                sb = JupyterSandbox(self.config)
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
            self._ready.put(sb)

    def acquire(self) -> JupyterSandbox:
        """A fresh, started sandbox for one trajectory; close it when the trajectory ends."""
        if self._stop.is_set():
            raise RuntimeError("pool is closed")
        deadline = time.monotonic() + self.acquire_timeout_s
        sb = None
        while sb is None:  # wait in short slices so a close() from another thread ends the wait at once
            if self._stop.is_set():
                raise RuntimeError("pool is closed")
            try:
                sb = self._ready.get(timeout=min(0.1, max(deadline - time.monotonic(), 0.0)))
            except queue.Empty:
                if time.monotonic() >= deadline:
                    break
        if sb is None:
            err = self._last_error
            raise SandboxStartError(
                f"no kernel became ready within {self.acquire_timeout_s:g} s" + (f": {err}" if err else "")
            ) from err
        self._wanted.release()
        return sb

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.config.start_timeout_s + 5)
        while True:
            try:
                self._ready.get_nowait().close()
            except queue.Empty:
                break

    def __enter__(self) -> KernelPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
