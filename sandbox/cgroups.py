"""Cgroups for one sandbox slot (memory, pids, cpu quota, cpu time), v1 or v2, and process helpers.

Which hierarchy is used (:func:`cgroup_setup`, probed once per process):

- **v1**, when the ``memory`` and ``pids`` controllers are mounted writable (root): a group per
  controller, ``/sys/fs/cgroup/<controller>/mathagent-sandbox/slot-<n>``.
- **v2, root subtree**: as root on a unified hierarchy whose root offers ``memory`` and ``pids``:
  ``<unified>/mathagent-sandbox/slot-<n>`` with ``memory.max``, ``memory.swap.max``, ``pids.max``
  and ``cpu.max``; the controllers are enabled in ``cgroup.subtree_control`` on the way down.
- **v2, delegated subtree**: as an ordinary user, the nearest ancestor of this process's own
  cgroup that the user may write (a delegated systemd user service or scope, e.g. made with
  ``systemd-run --user --scope -p Delegate=yes``) and that offers ``memory`` and ``pids``:
  ``<that>/mathagent-sandbox-<uid>/slot-<n>``. Moving a process between two groups needs write
  access to their common ancestor's ``cgroup.procs``; under a delegated subtree that holds.

``MATHAGENT_SANDBOX_CGROUP`` = ``v1`` / ``v2`` / ``none`` restricts the choice (default ``auto``).
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
PARENT = "mathagent-sandbox"
CONTROLLERS = ("memory", "pids", "cpu", "cpuacct")
V2_CONTROLLERS = ("memory", "pids", "cpu")


def writable_controllers() -> dict[str, bool]:
    """Which v1 controllers exist and let us create a child group (root, mounted rw)."""
    out = {}
    for c in CONTROLLERS:
        d = CGROUP_ROOT / c
        out[c] = d.is_dir() and (d / "cgroup.procs").exists() and os.access(d, os.W_OK)
    return out


@dataclass(frozen=True)
class CgroupSetup:
    """The hierarchy slot groups are made in."""

    version: int
    """1 or 2."""
    controllers: tuple[str, ...]
    """Controllers a slot group gets (v2: ``cpuacct`` stands for the always-present ``cpu.stat``)."""
    parent: Path | None = None
    """v2: the dir slot groups are made in; v1: None (``/sys/fs/cgroup/<controller>/mathagent-sandbox``)."""
    how: str = ""
    """In words, for the isolation report: ``v1``, ``v2 root subtree ...``, ``v2 delegated subtree ...``."""

    def group(self, name: str) -> SlotCgroup:
        return SlotCgroup(name, self.controllers, self.version, self.parent)


def unified_mount(mountinfo: str = "/proc/self/mountinfo") -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (``/sys/fs/cgroup``, or ``.../unified`` beside v1)."""
    try:
        with open(mountinfo) as f:
            for line in f:
                left, _, right = line.partition(" - ")
                if right.split(" ", 1)[0] == "cgroup2":
                    return Path(left.split()[4])
    except OSError:
        pass
    return None


def own_v2_cgroup(proc_cgroup: str = "/proc/self/cgroup") -> str | None:
    """This process's cgroup in the v2 hierarchy (the ``0::/path`` line)."""
    try:
        with open(proc_cgroup) as f:
            for line in f:
                if line.startswith("0::"):
                    return line[3:].strip()
    except OSError:
        pass
    return None


def _read_words(path: Path) -> set[str]:
    try:
        return set(path.read_text().split())
    except OSError:
        return set()


def _v2_usable(d: Path) -> bool:
    return all(os.access(d / f, os.W_OK) for f in ("", "cgroup.procs", "cgroup.subtree_control"))


def v2_setup(
    mount: Path | None = None, own: str | None = None, root: bool | None = None, uid: int | None = None
) -> CgroupSetup | None:
    """The v2 subtree this process may use for slots, or None (see the module docstring)."""
    mount = mount if mount is not None else unified_mount()
    if mount is None:
        return None
    root = os.geteuid() == 0 if root is None else root
    uid = os.getuid() if uid is None else uid
    if root:
        base, how = mount, f"v2 root subtree {mount / PARENT}"
        name = PARENT
    else:
        own = own if own is not None else own_v2_cgroup()
        if own is None:
            return None
        base = None
        d = mount / own.lstrip("/")
        while d != mount and d.is_relative_to(mount):
            if _v2_usable(d) and d.parent != mount and _v2_usable(d.parent):
                base = d.parent  # the group above ours: ours holds this process, so it cannot have children with controllers
                break
            d = d.parent
        if base is None:
            return None
        name = f"{PARENT}-{uid}"
        how = f"v2 delegated subtree {base / name}"
    assert base is not None
    offered = _read_words(base / "cgroup.controllers")
    if not {"memory", "pids"} <= offered:
        return None
    ctl = tuple(c for c in V2_CONTROLLERS if c in offered) + ("cpuacct",)
    return CgroupSetup(2, ctl, base / name, how)


def _enable(parent: Path, controllers: tuple[str, ...]) -> None:
    """Let ``parent``'s children use ``controllers`` (v2 ``cgroup.subtree_control``)."""
    have = _read_words(parent / "cgroup.subtree_control")
    want = [c for c in controllers if c in V2_CONTROLLERS and c not in have]
    if want:
        _write(parent / "cgroup.subtree_control", " ".join("+" + c for c in want))


@functools.lru_cache(maxsize=1)
def cgroup_setup() -> CgroupSetup | None:
    """The hierarchy this process uses for slot groups (v1 first, then v2), or None."""
    choice = os.environ.get("MATHAGENT_SANDBOX_CGROUP", "auto").strip().lower()
    if choice in ("auto", "v1"):
        v1 = tuple(c for c, ok in writable_controllers().items() if ok)
        if {"memory", "pids"} <= set(v1):
            return CgroupSetup(1, v1, None, "v1 /sys/fs/cgroup/<controller>/" + PARENT)
    if choice in ("auto", "v2"):
        return v2_setup()
    return None


@dataclass(frozen=True)
class SlotCgroup:
    """The cgroups of one slot: v1 ``/sys/fs/cgroup/<controller>/mathagent-sandbox/slot-<n>``, or
    v2 ``<parent>/slot-<n>`` (one group for all controllers)."""

    name: str
    controllers: tuple[str, ...]
    version: int = 1
    parent: Path | None = None

    def path(self, controller: str) -> Path:
        if self.version == 2:
            assert self.parent is not None
            return self.parent / self.name
        return CGROUP_ROOT / controller / PARENT / self.name

    def _dirs(self) -> list[Path]:
        return list(dict.fromkeys(self.path(c) for c in self.controllers))

    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self._dirs()]

    def create(self, memory_mb: int, pids_max: int, cpu_quota: float) -> None:
        if self.version == 2:
            self._create_v2(memory_mb, pids_max, cpu_quota)
            return
        for c in self.controllers:
            self.path(c).mkdir(parents=True, exist_ok=True)
        if "memory" in self.controllers:
            p = self.path("memory")
            _write(p / "memory.limit_in_bytes", str(memory_mb * 1024 * 1024))
            _write(p / "memory.swappiness", "0", quiet=True)
        if "pids" in self.controllers:
            _write(self.path("pids") / "pids.max", str(pids_max))
        if "cpu" in self.controllers:
            p = self.path("cpu")
            if cpu_quota > 0:
                _write(p / "cpu.cfs_period_us", "100000")
                _write(p / "cpu.cfs_quota_us", str(int(cpu_quota * 100000)))
            else:
                _write(p / "cpu.cfs_quota_us", "-1")

    def _create_v2(self, memory_mb: int, pids_max: int, cpu_quota: float) -> None:
        assert self.parent is not None
        if not self.parent.is_dir():
            _enable(self.parent.parent, self.controllers)
            self.parent.mkdir(exist_ok=True)
        _enable(self.parent, self.controllers)
        d = self.path("memory")
        d.mkdir(exist_ok=True)
        if "memory" in self.controllers:
            _write(d / "memory.max", str(memory_mb * 1024 * 1024))
            _write(d / "memory.swap.max", "0", quiet=True)
        if "pids" in self.controllers:
            _write(d / "pids.max", str(pids_max))
        if "cpu" in self.controllers:
            _write(d / "cpu.max", f"{int(cpu_quota * 100000)} 100000" if cpu_quota > 0 else "max 100000")

    def pids(self) -> set[int]:
        out: set[int] = set()
        for d in self._dirs():
            try:
                out.update(int(x) for x in (d / "cgroup.procs").read_text().split())
            except OSError:
                pass
        return out

    def cpu_s(self) -> float | None:
        if "cpuacct" not in self.controllers:
            return None
        try:
            if self.version == 2:  # cpu.stat is there with or without the cpu controller
                for line in (self.path("cpu") / "cpu.stat").read_text().splitlines():
                    if line.startswith("usage_usec "):
                        return int(line.split()[1]) / 1e6
                return None
            return int((self.path("cpuacct") / "cpuacct.usage").read_text()) / 1e9
        except (OSError, ValueError):
            return None

    def oom_kills(self) -> int:
        """How many processes of this group the kernel has OOM-killed since it was created."""
        if "memory" not in self.controllers:
            return 0
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            text = (self.path("memory") / name).read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
        return 0

    def oom_killed(self) -> bool:
        return self.oom_kills() > 0

    def kill_all(self, wait_s: float = 5.0) -> bool:
        """SIGKILL everything in the group until it is empty (a fork bomb refills it); True when empty."""
        end = time.monotonic() + wait_s
        if self.version == 2:  # one write kills the whole group, fork bombs included (Linux 5.14+)
            kill_file = self.path("pids") / "cgroup.kill"
            if kill_file.exists():
                _write(kill_file, "1", quiet=True)
        while True:
            pids = self.pids()
            if not pids:
                return True
            if time.monotonic() > end:
                log.warning("cgroup %s still holds %d processes", self.name, len(pids))
                return False
            for pid in pids:
                kill(pid)
            time.sleep(0.01)

    def remove(self) -> None:
        self.kill_all()
        for p in self._dirs():
            for _ in range(50):
                try:
                    p.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)
            else:
                log.warning("could not remove cgroup %s", p)


def _write(path: Path, value: str, quiet: bool = False) -> None:
    try:
        path.write_text(value)
    except OSError as e:
        if not quiet:
            raise OSError(f"cannot write {value!r} to {path}: {e}") from e


def kill(pid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (index 0 is the state)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("ascii", "replace")
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (scans /proc; this kernel has no /proc/<pid>/task/*/children)."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = proc_stat(int(name))
            if st and int(st[1]) == pid:
                out.append(int(name))
    return out


def process_cpu_s(pid: int) -> float | None:
    """utime + stime + reaped children's time of one process."""
    st = proc_stat(pid)
    if st is None:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    return sum(int(x) for x in st[11:15]) / tick


def pids_of_uid(uid: int) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid == uid:
                    out.append(int(name))
            except OSError:
                pass
    return out
