"""Slots: per-kernel host resources (lock, connection dir, uid, cgroups) and the sweep of stale ones.

A slot ``n`` is claimed by holding an exclusive ``flock`` on ``<base>/slot-<n>.lock``. The kernel
releases the lock when its owner process dies, however it dies, so a slot whose lock can be taken
but whose directory or cgroups still exist was left by a killed run: :func:`sweep` kills what is
left in it and removes it.

A slot's ``conn`` dir (connection files and ipc sockets, the one host dir a sandbox can write) is,
when the host is root, a tmpfs of its own: owned by root, mode 0711, bounded in bytes and inodes,
unmounted when the slot is released. Each kernel gets a fresh subdir in it (see ``kernel.py``).
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from mathagent.sandbox.boot import remove_tree
from mathagent.sandbox.cgroups import CgroupSetup, SlotCgroup, kill, pids_of_uid

log = logging.getLogger(__name__)

_lock = threading.Lock()
SWEEP_EVERY_S = 1.0
"""A claim sweeps the dead owners' slots first, at most this often per process (a pool's start
claims several slots at once)."""
_last_sweep: dict[tuple[str, str], float] = {}
CLEAN = Path("/")
"""Recorded in a slot's lock file when nothing of it is left (released, or swept): sweeps skip it."""


@dataclass
class Slot:
    """One claimed slot. ``release`` removes everything it created."""

    index: int
    dir: Path
    lock_fd: int
    uid: int | None
    cgroup: SlotCgroup | None
    conn_tmpfs: bool = False
    """Whether ``conn`` is a bounded tmpfs of its own (host is root), rather than a plain host dir."""

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
        _remove_slot_dir(self.dir)
        try:
            if not _mounted(self.conn_dir) and not self.dir.exists():
                _record(self.lock_fd, CLEAN)  # nothing for a sweep to do here
        except OSError:
            pass
        try:
            os.close(self.lock_fd)
        except OSError:
            pass


MNT_DETACH = 2


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def mount_tmpfs(path: Path, size_kb: int, inodes: int) -> bool:
    """Mount a root-owned tmpfs (mode 0711) of ``size_kb`` KiB and ``inodes`` inodes on ``path``."""
    if os.geteuid() != 0:
        return False
    opts = f"size={size_kb}k,nr_inodes={inodes},mode=0711,uid=0,gid=0".encode()
    if _libc().mount(b"mathagent-conn", str(path).encode(), b"tmpfs", 0, opts) != 0:
        log.warning("cannot mount a tmpfs on %s: %s", path, os.strerror(ctypes.get_errno()))
        return False
    return True


def unmount(path: Path) -> None:
    """Detach whatever is mounted on ``path`` (lazily: open sockets do not keep it busy)."""
    if os.geteuid() == 0:
        _libc().umount2(str(path).encode(), MNT_DETACH)


def _remove_slot_dir(d: Path) -> None:
    for _ in range(8):  # mounts stacked by earlier crashes come off one at a time
        if not _mounted(d / "conn"):
            break
        unmount(d / "conn")
    if d.exists():
        remove_tree(str(d))


MOUNT_SOURCE = "mathagent-conn"


def conn_mounts() -> list[Path]:
    """Mount points of the connection tmpfs of every slot on this machine (``/proc/self/mountinfo``)."""
    out = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                pre, sep, post = line.partition(" - ")
                fields, tail = pre.split(), post.split()
                if (
                    sep
                    and len(fields) >= 5
                    and len(tail) >= 2
                    and tail[0] == "tmpfs"
                    and tail[1] == MOUNT_SOURCE
                ):
                    # octal escapes: space, tab, newline, backslash
                    mp = fields[4]
                    for esc, ch in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
                        mp = mp.replace(esc, ch)
                    out.append(Path(mp))
    except OSError:
        pass
    return out


def _mounted(path: Path) -> bool:
    return os.geteuid() == 0 and path in conn_mounts()


def _slot_of_mount(mp: Path) -> int | None:
    if mp.name != "conn" or not mp.parent.name.startswith("slot-"):
        return None
    try:
        return int(mp.parent.name[5:])
    except ValueError:
        return None


LOCK_DIR = Path("/tmp/mathagent-sandbox-slots")
"""Slot locks of root processes: slot uids and cgroups are machine-wide, so their locks must be too."""


def _try_lock(lock_dir: Path, n: int) -> int | None:
    fd = os.open(lock_dir / f"slot-{n}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _recorded_dir(fd: int) -> Path | None:
    """The slot dir the lock's last owner recorded (line 2), if it looks like one."""
    os.lseek(fd, 0, os.SEEK_SET)
    lines = os.read(fd, 4096).decode(errors="replace").splitlines()
    if len(lines) >= 2 and lines[1] == str(CLEAN):
        return CLEAN
    if len(lines) >= 2 and Path(lines[1]).name.startswith("slot-") and Path(lines[1]).is_absolute():
        return Path(lines[1])
    return None


def _record(fd: int, slot_dir: Path) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, f"{os.getpid()}\n{slot_dir}\n".encode())


def _group(n: int, controllers: tuple[str, ...], setup: CgroupSetup | None) -> SlotCgroup:
    return setup.group(f"slot-{n}") if setup is not None else SlotCgroup(f"slot-{n}", controllers)


def _cleanup_slot(
    n: int,
    slot_dir: Path | None,
    uid_base: int | None,
    controllers: tuple[str, ...],
    setup: CgroupSetup | None = None,
) -> bool:
    """Kill and remove whatever slot ``n`` left behind; True when something was there."""
    found = False
    if controllers:
        cg = _group(n, controllers, setup)
        found = any(cg.path(c).exists() for c in controllers)
        cg.remove()
    if uid_base is not None:
        for pid in pids_of_uid(uid_base + n):
            found = True
            kill(pid)
    if slot_dir is not None and slot_dir != CLEAN and slot_dir.name.startswith("slot-") and slot_dir.exists():
        found = True
        _remove_slot_dir(slot_dir)
    return found


def _lock_dir(base: Path, uid_base: int | None, controllers: tuple[str, ...]) -> Path:
    """Root: the machine-wide lock dir, whatever the level (slot uids and cgroups are machine-wide, and
    a process at another level must not claim the same slot dir); others: the base dir (their
    cgroups, if any, sit in a subtree of their own)."""
    d = LOCK_DIR if os.geteuid() == 0 else base
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return d


def sweep(
    base: Path, uid_base: int | None, controllers: tuple[str, ...], setup: CgroupSetup | None = None
) -> int:
    """Remove what dead owners left in their slots (dirs, cgroups, processes). Returns how many slots."""
    lock_dir = _lock_dir(base, uid_base, controllers)
    count = 0
    stale: dict[int, list[Path]] = {}
    if lock_dir == LOCK_DIR:  # root: slot numbers are machine-wide, and so are the connection tmpfs
        for mp in conn_mounts():
            n = _slot_of_mount(mp)
            if n is not None:
                stale.setdefault(n, []).append(mp)
    for n, mps in stale.items():  # mounts of a slot whose owner is dead, wherever its slot dir was
        fd = _try_lock(lock_dir, n)
        if fd is None:
            continue
        try:
            for mp in mps:
                _remove_slot_dir(mp.parent)
                log.info("swept the stale connection tmpfs %s", mp)
        finally:
            os.close(fd)
    for entry in lock_dir.iterdir():
        if not (entry.name.startswith("slot-") and entry.name.endswith(".lock")):
            continue
        try:
            n = int(entry.name[5:-5])
        except ValueError:
            continue
        fd = _try_lock(lock_dir, n)
        if fd is None:
            continue  # its owner is alive
        try:
            recorded = _recorded_dir(fd)
            if recorded == CLEAN:
                continue  # released cleanly or swept already
            if _cleanup_slot(n, recorded, uid_base, controllers, setup):
                log.info("swept stale sandbox slot %d", n)
                count += 1
            _record(fd, CLEAN)
        finally:
            os.close(fd)
    return count


def claim(
    base: Path,
    max_slots: int,
    uid_base: int | None,
    controllers: tuple[str, ...],
    conn_kb: int = 512,
    conn_inodes: int = 64,
    setup: CgroupSetup | None = None,
) -> Slot:
    """Claim the lowest free slot, create its dirs (owned by its uid); the caller creates its cgroups."""
    base.mkdir(parents=True, exist_ok=True, mode=0o711)
    os.chmod(base, 0o711)
    lock_dir = _lock_dir(base, uid_base, controllers)
    with _lock:  # what owners killed since the last claim left (their processes, cgroups, mounts)
        key = (str(lock_dir), str(base))
        now = time.monotonic()
        if now - _last_sweep.get(key, -SWEEP_EVERY_S) >= SWEEP_EVERY_S:
            _last_sweep[key] = now
            sweep(base, uid_base, controllers, setup)
    for n in range(max_slots):
        fd = _try_lock(lock_dir, n)
        if fd is None:
            continue
        _cleanup_slot(n, _recorded_dir(fd), uid_base, controllers, setup)  # leftovers from a crashed owner
        d = base / f"slot-{n}"
        _remove_slot_dir(d)
        _record(fd, d)
        uid = uid_base + n if uid_base is not None else None
        d.mkdir(mode=0o711)
        for sub in ("conn", "work"):
            (d / sub).mkdir(mode=0o711 if sub == "conn" else 0o700)
        if uid is not None:
            os.chown(d / "work", uid, uid)
        tmpfs = mount_tmpfs(d / "conn", conn_kb, conn_inodes)
        cg = _group(n, controllers, setup) if controllers else None
        return Slot(n, d, fd, uid, cg, tmpfs)
    raise RuntimeError(f"all {max_slots} sandbox slots are in use")
