"""How busy a local process tree is, read from ``/proc``: the progress evidence for a server we started.

:class:`ProcessActivity` is a callable that returns the seconds the threads of a process and of all
its descendants have spent **running or waiting for a CPU** since it was created (per thread:
``/proc/PID/task/TID/schedstat`` run time + run-queue wait; where that file is missing, the CPU
time of ``/proc/PID/stat``). Time spent waiting for a CPU counts: a model server starved of CPU by
other work on the machine (a nice 19 server on a loaded 2-core machine got ~25% of what it asked
for) is working, only slowly. A process that is asleep, blocked or stopped (SIGSTOP, a deadlock)
adds nothing. An idle llama-cpp-python server added ~1 ms per second (measured here: 0.010 CPU-s in
10 s).

The counter only grows: per thread it adds what the thread added since the last call, so threads
that end or start between two calls do not make it jump back. ``None`` once the root process is gone.
"""

from __future__ import annotations

import os
import threading
import time

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(path: str) -> list[str] | None:
    """The fields of a ``/proc/.../stat`` file after the command name (field 3, the state, first)."""
    try:
        with open(path, "rb") as f:
            raw = f.read().decode("ascii", "replace")
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def descendants(root: int) -> list[int]:
    """``root`` and every process below it (one scan of ``/proc``); ``[]`` when ``root`` is gone."""
    if not os.path.exists(f"/proc/{root}"):
        return []
    children: dict[int, list[int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return [root]
    for name in names:
        if not name.isdigit():
            continue
        fields = _stat_fields(f"/proc/{name}/stat")
        if fields and len(fields) > 1 and fields[1].lstrip("-").isdigit():
            children.setdefault(int(fields[1]), []).append(int(name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def thread_busy(pid: int, tid: str) -> float | None:
    """Seconds thread ``tid`` of ``pid`` has run or waited to run; ``None`` when it cannot be read."""
    base = f"/proc/{pid}/task/{tid}"
    try:
        with open(f"{base}/schedstat", "rb") as f:
            run_ns, wait_ns = f.read().split()[:2]
        return (int(run_ns) + int(wait_ns)) / 1e9
    except (OSError, ValueError):
        pass
    fields = _stat_fields(f"{base}/stat")
    if not fields or len(fields) < 13:
        return None
    try:
        return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime
    except ValueError:
        return None


class ProcessActivity:
    """``activity() -> seconds``: running plus runnable time of ``pid``'s process tree (see module doc)."""

    RESCAN_S = 10.0
    """Seconds the list of the tree's processes is reused before ``/proc`` is scanned again (a scan
    reads every process's stat file: ~6 ms here; the tree of a model server is set at its start)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.total = 0.0
        self._seen: dict[tuple[int, str], float] = {}
        self._pids: list[int] = []
        self._scanned = -float("inf")
        self._lock = threading.Lock()

    def __call__(self) -> float | None:
        with self._lock:
            if not os.path.exists(f"/proc/{self.pid}"):
                return None
            now = time.monotonic()
            if now - self._scanned > self.RESCAN_S or not all(
                os.path.exists(f"/proc/{p}") for p in self._pids
            ):
                self._pids, self._scanned = descendants(self.pid), now
            pids = self._pids
            if not pids:
                return None
            seen: dict[tuple[int, str], float] = {}
            for pid in pids:
                try:
                    tids = os.listdir(f"/proc/{pid}/task")
                except OSError:
                    continue
                for tid in tids:
                    value = thread_busy(pid, tid)
                    if value is None:
                        continue
                    key = (pid, tid)
                    seen[key] = value
                    self.total += max(0.0, value - self._seen.get(key, 0.0))  # a new thread: all of it
            self._seen = seen
            return self.total

    def __repr__(self) -> str:
        return f"ProcessActivity(pid={self.pid})"
