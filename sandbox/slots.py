"""Slots: per-kernel host resources (lock, connection dir, uid, cgroups) and the sweep of stale ones.

A slot ``n`` is claimed by holding an exclusive ``flock`` on ``<base>/slot-<n>.lock``. The kernel
releases the lock when its owner process dies, however it dies, so a slot whose lock can be taken
but whose directory or cgroups still exist was left by a killed run: :func:`sweep` kills what is
left in it and removes it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from mathagent.sandbox.cgroups import SlotCgroup, kill, pids_of_uid

log = logging.getLogger(__name__)

_swept: set[str] = set()
_lock = threading.Lock()


@dataclass
class Slot:
    """One claimed slot. ``release`` removes everything it created."""

    index: int
    dir: Path
    lock_fd: int
    uid: int | None
    cgroup: SlotCgroup | None

    @property
    def conn_dir(self) -> Path:
        return self.dir / "conn"

    @property
    def host_workdir(self) -> Path:
        return self.dir / "work"

    def release(self) -> None:
        if self.cgroup is not None:
            self.cgroup.remove()
        if self.uid is not None:
            for pid in pids_of_uid(self.uid):
                kill(pid)
        shutil.rmtree(self.dir, ignore_errors=True)
        try:
            os.close(self.lock_fd)
        except OSError:
            pass


def _try_lock(base: Path, n: int) -> int | None:
    fd = os.open(base / f"slot-{n}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _cleanup_slot(base: Path, n: int, uid_base: int | None, controllers: tuple[str, ...]) -> None:
    cg = SlotCgroup(f"slot-{n}", controllers) if controllers else None
    if cg is not None:
        cg.remove()
    if uid_base is not None:
        for pid in pids_of_uid(uid_base + n):
            kill(pid)
    shutil.rmtree(base / f"slot-{n}", ignore_errors=True)


def sweep(base: Path, uid_base: int | None, controllers: tuple[str, ...]) -> int:
    """Remove slots of dead runs under ``base`` (once per process per base dir). Returns how many."""
    with _lock:
        if str(base) in _swept:
            return 0
        _swept.add(str(base))
    if not base.is_dir():
        return 0
    count = 0
    for entry in base.iterdir():
        if not (entry.name.startswith("slot-") and entry.name.endswith(".lock")):
            continue
        try:
            n = int(entry.name[5:-5])
        except ValueError:
            continue
        fd = _try_lock(base, n)
        if fd is None:
            continue  # alive
        try:
            stale = (base / f"slot-{n}").exists() or any(
                (Path("/sys/fs/cgroup") / c / "mathagent-sandbox" / f"slot-{n}").exists() for c in controllers
            )
            if stale:
                log.info("sweeping stale sandbox slot %d under %s", n, base)
                _cleanup_slot(base, n, uid_base, controllers)
                count += 1
        finally:
            os.close(fd)
    return count


def claim(base: Path, max_slots: int, uid_base: int | None, controllers: tuple[str, ...]) -> Slot:
    """Claim the lowest free slot, create its dirs (owned by its uid) and cgroups."""
    base.mkdir(parents=True, exist_ok=True, mode=0o711)
    os.chmod(base, 0o711)
    sweep(base, uid_base, controllers)
    for n in range(max_slots):
        fd = _try_lock(base, n)
        if fd is None:
            continue
        _cleanup_slot(base, n, uid_base, controllers)  # leftovers from a crashed owner
        d = base / f"slot-{n}"
        uid = uid_base + n if uid_base is not None else None
        d.mkdir(mode=0o711)
        for sub in ("conn", "work"):
            (d / sub).mkdir(mode=0o700)
            if uid is not None:
                os.chown(d / sub, uid, uid)
        cg = SlotCgroup(f"slot-{n}", controllers) if controllers else None
        return Slot(n, d, fd, uid, cg)
    raise RuntimeError(f"all {max_slots} sandbox slots under {base} are in use")
