"""Cgroup v1 groups for one sandbox slot (memory, pids, cpu quota, cpuacct), and process helpers."""

from __future__ import annotations

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


def writable_controllers() -> dict[str, bool]:
    """Which v1 controllers exist and let us create a child group (root, mounted rw)."""
    out = {}
    for c in CONTROLLERS:
        d = CGROUP_ROOT / c
        out[c] = d.is_dir() and (d / "cgroup.procs").exists() and os.access(d, os.W_OK)
    return out


@dataclass(frozen=True)
class SlotCgroup:
    """The cgroups of one slot: ``/sys/fs/cgroup/<controller>/mathagent-sandbox/slot-<n>``."""

    name: str
    controllers: tuple[str, ...]

    def path(self, controller: str) -> Path:
        return CGROUP_ROOT / controller / PARENT / self.name

    def procs_files(self) -> list[str]:
        return [str(self.path(c) / "cgroup.procs") for c in self.controllers]

    def create(self, memory_mb: int, pids_max: int, cpu_quota: float) -> None:
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

    def pids(self) -> set[int]:
        out: set[int] = set()
        for c in self.controllers:
            try:
                out.update(int(x) for x in (self.path(c) / "cgroup.procs").read_text().split())
            except OSError:
                pass
        return out

    def cpu_s(self) -> float | None:
        if "cpuacct" not in self.controllers:
            return None
        try:
            return int((self.path("cpuacct") / "cpuacct.usage").read_text()) / 1e9
        except (OSError, ValueError):
            return None

    def oom_kills(self) -> int:
        """How many processes of this group the kernel has OOM-killed since it was created."""
        if "memory" not in self.controllers:
            return 0
        try:
            text = (self.path("memory") / "memory.oom_control").read_text()
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
        for c in self.controllers:
            p = self.path(c)
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
