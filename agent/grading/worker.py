"""Bounded sympy evaluation: a long-lived worker subprocess with a per-call deadline.

Why a subprocess: sympy can run for minutes (or exhaust memory) on adversarial input, and the usual
``signal.alarm`` timeout only works on the main thread of the main interpreter. A separate process can
always be killed. The worker is started with ``python -m`` (no fork of the caller, no re-import of the
caller's ``__main__``), talks JSON lines over pipes, and is replaced after a timeout. Callers from any
thread share a small pool; each call holds one worker exclusively.

When ``MATHAGENT_GRADER_INLINE=1`` or no subprocess can be started, comparisons run in the calling
thread instead; then only the pre-parse guards (``guards.py``) bound the work.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import select
import subprocess
import sys
import threading
import time

from mathagent.agent.grading.symbolic import sympy_equal

log = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 60.0
"""How long a fresh worker may take to import sympy before it counts as broken."""
WORKERS_ENV = "MATHAGENT_GRADER_WORKERS"
"""Worker processes of the grader's pool (default 1); read when the pool starts."""


def pool_size() -> int:
    """``$MATHAGENT_GRADER_WORKERS``, a whole number >= 1 (default 1). The same rule and message as
    ``mathagent.sandbox.concurrency.env_count``, which the grading library may not import (it imports
    nothing else from mathagent, so every layer can use it)."""
    given = os.environ.get(WORKERS_ENV, "").strip()
    if not given:
        return 1
    try:
        n = int(given)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{WORKERS_ENV} must be a whole number >= 1, got {given!r}")
    return n


class _Worker:
    """One worker subprocess and its pipes."""

    def __init__(self) -> None:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mathagent.agent.grading.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        self._buf = b""
        self.ready = False

    def ask(self, a: str, b: str, timeout: float, rounded: bool = True) -> bool | None:
        """The worker's verdict, or None when it missed the deadline (the worker is then killed)."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if not self.ready:  # the first line is "ready", after sympy is imported
            if self._readline(STARTUP_TIMEOUT_S) is None:
                raise OSError("grader worker did not start")
            self.ready = True
        self.proc.stdin.write((json.dumps([a, b, rounded]) + "\n").encode())
        self.proc.stdin.flush()
        line = self._readline(timeout)
        return None if line is None else bool(json.loads(line))

    def _readline(self, timeout: float) -> bytes | None:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                return None
            poller = select.poll()  # not select(): descriptors past 1024 (many kernels open) are refused
            poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
            if poller.poll(left * 1000):
                chunk = os.read(fd, 65536)
                if not chunk:
                    self.kill()
                    return None
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        try:
            self.proc.kill()
            self.proc.wait(timeout=5)
        except Exception:  # noqa: BLE001
            pass


class _Pool:
    def __init__(self, size: int) -> None:
        self._idle: queue.Queue[_Worker | None] = queue.Queue()
        for _ in range(size):
            self._idle.put(None)  # lazily started
        self._lock = threading.Lock()

    def compare(self, a: str, b: str, timeout: float, rounded: bool = True) -> bool | None:
        w = self._idle.get()
        try:
            if w is None or not w.alive():
                w = _Worker()
            verdict = w.ask(a, b, timeout, rounded)
            if not w.alive():
                w = None
            return verdict
        except OSError as exc:
            log.warning("grader worker failed (%s); comparing inline", exc)
            if w is not None:
                w.kill()
            w = None
            raise
        finally:
            self._idle.put(w)

    def close(self) -> None:
        while True:
            try:
                w = self._idle.get_nowait()
            except queue.Empty:
                break
            if w is not None:
                w.kill()


_pool: _Pool | None = None
_pool_lock = threading.Lock()


def _get_pool() -> _Pool:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = _Pool(pool_size())
            atexit.register(_pool.close)
        return _pool


def bounded_sympy_equal(a: str, b: str, timeout: float, rounded: bool = True) -> bool | None:
    """``symbolic.sympy_equal(a, b)`` with a deadline; None when the deadline passed."""
    if os.environ.get("MATHAGENT_GRADER_INLINE") == "1":
        return sympy_equal(a, b, rounded)
    try:
        return _get_pool().compare(a, b, timeout, rounded)
    except OSError:
        return sympy_equal(a, b, rounded)


def _serve() -> None:
    """Worker main loop: read ``[a, b]`` lines, answer ``true``/``false`` lines."""
    import sympy  # noqa: F401 - lazy: warm sympy's import in the worker before the first request

    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        try:
            a, b, rounded = json.loads(line)
            verdict = bool(sympy_equal(a, b, rounded))
        except Exception:  # noqa: BLE001
            verdict = False
        out.write("true\n" if verdict else "false\n")
        out.flush()


if __name__ == "__main__":
    _serve()
