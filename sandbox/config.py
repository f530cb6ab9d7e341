"""Sandbox settings: one frozen dataclass, with environment fallbacks (``MATHAGENT_SANDBOX_*``)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

MB = 1024 * 1024

#: Environment variables copied into every kernel (everything else from the host is dropped).
DEFAULT_ENV: dict[str, str] = {
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONIOENCODING": "utf-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
    "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "MPLBACKEND": "Agg",
    "TERM": "dumb",
}


def default_base_dir() -> Path:
    """Where slot locks, connection files and (without bubblewrap) work dirs live."""
    env = os.environ.get("MATHAGENT_SANDBOX_DIR")
    if env:
        return Path(env)
    return Path(f"/tmp/mathagent-sandbox-{os.getuid()}")


@dataclass(frozen=True)
class SandboxConfig:
    """How kernels are isolated and bounded. Every field has a safe default."""

    level: str = "auto"
    """Requested isolation: ``auto`` (best available), ``full`` (fail if not reachable), ``reduced``
    (no bubblewrap / uid drop / cgroups even where available) or ``none`` (plain local kernel)."""
    memory_mb: int = 2048
    """Memory limit of one sandbox (cgroup), in MiB."""
    address_space_mb: int = 8192
    """RLIMIT_AS of every process in the sandbox, in MiB (without a memory cgroup: at most memory_mb + 1024)."""
    pids_max: int = 256
    """Most processes + threads one sandbox may hold (cgroup pids, and RLIMIT_NPROC per slot uid)."""
    cpu_quota: float = 1.0
    """CPUs one sandbox may use at most (cgroup cpu quota); 0 for no quota."""
    cpu_rlimit_s: int = 3600
    """RLIMIT_CPU backstop: CPU seconds a kernel may use over its whole life."""
    workdir_mb: int = 256
    """Size of the private writable work dir (tmpfs inside bubblewrap) and RLIMIT_FSIZE, in MiB."""
    tmp_mb: int = 256
    """Size of the sandbox's private ``/tmp`` (tmpfs inside bubblewrap), in MiB."""
    shm_mb: int = 64
    """Size of the sandbox's private ``/dev/shm`` (tmpfs inside bubblewrap), in MiB."""
    conn_kb: int = 512
    """Size of the host-owned tmpfs holding a slot's connection file and sockets (when root), in KiB."""
    conn_inodes: int = 64
    """Most files and dirs that tmpfs may hold."""
    nofile: int = 256
    """RLIMIT_NOFILE: open files per process."""
    output_cap_bytes: int = 1 * MB
    """Hard cap on what one cell may emit; output beyond it is dropped and ``truncated`` is set."""
    flood_kill_factor: int = 4
    """When a cell keeps printing past ``factor * output_cap_bytes`` it is interrupted."""
    default_timeout_s: float = 10.0
    """Per-cell timeout when ``run`` is called without one."""
    interrupt_grace_s: float = 1.0
    """After SIGINT, how long to wait for the kernel to go idle before killing it."""
    start_timeout_s: float = 30.0
    """How long a kernel may take to answer its first message before start fails."""
    seccomp: bool = True
    """Load a seccomp filter (ptrace, mount, unshare, bpf, ... denied) when ``pyseccomp`` works."""
    uid_base: int = 61000
    """Slot ``n`` runs as uid/gid ``uid_base + n`` (only when started as root)."""
    max_slots: int = 1024
    """How many slots (concurrent kernels, across processes) may exist under ``base_dir``."""
    base_dir: Path = field(default_factory=default_base_dir)
    """Slot locks and connection files; stale slots of dead runs are swept from here."""
    extra_env: tuple[tuple[str, str], ...] = ()
    """Additional (name, value) pairs for the kernel environment."""
    preload: tuple[str, ...] = ("sympy", "numpy")
    """Modules imported while the kernel starts (off the critical path in a pool); not in the user namespace."""
    max_concurrent_cells: int = 0
    """Cells executing at once across all sandboxes of this process (0: the CPU count)."""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["base_dir"] = str(self.base_dir)
        d["extra_env"] = [list(p) for p in self.extra_env]
        d["preload"] = list(self.preload)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SandboxConfig:
        d = dict(d)
        if "base_dir" in d:
            d["base_dir"] = Path(d["base_dir"])
        if "extra_env" in d:
            d["extra_env"] = tuple(tuple(p) for p in d["extra_env"])
        if "preload" in d:
            d["preload"] = tuple(d["preload"])
        return cls(**d)

    @classmethod
    def from_env(cls, **overrides: Any) -> SandboxConfig:
        """Defaults, then ``MATHAGENT_SANDBOX_LEVEL`` / ``_MEMORY_MB`` / ``_TIMEOUT``, then overrides."""
        kw: dict[str, Any] = {}
        if os.environ.get("MATHAGENT_SANDBOX_LEVEL"):
            kw["level"] = os.environ["MATHAGENT_SANDBOX_LEVEL"].strip().lower()
        if os.environ.get("MATHAGENT_SANDBOX_MEMORY_MB"):
            kw["memory_mb"] = int(os.environ["MATHAGENT_SANDBOX_MEMORY_MB"])
        if os.environ.get("MATHAGENT_SANDBOX_TIMEOUT"):
            kw["default_timeout_s"] = float(os.environ["MATHAGENT_SANDBOX_TIMEOUT"])
        kw.update({k: v for k, v in overrides.items() if v is not None})
        cfg = cls(**kw)
        if cfg.level not in ("auto", "full", "reduced", "none"):
            raise ValueError(f"sandbox level must be auto, full, reduced or none, not {cfg.level!r}")
        return cfg

    def with_(self, **changes: Any) -> SandboxConfig:
        return replace(self, **changes)

    def kernel_env(self, home: str) -> dict[str, str]:
        env = dict(DEFAULT_ENV)
        env.update({"HOME": home, "TMPDIR": "/tmp", "IPYTHONDIR": f"{home}/.ipython"})
        env.update(dict(self.extra_env))
        return env
