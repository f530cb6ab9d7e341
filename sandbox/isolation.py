"""What this machine can isolate, and which protections a sandbox gets (the :class:`IsolationReport`).

FULL needs: bubblewrap that can create namespaces, root (to drop to a per-slot uid with ``setpriv``
inside the sandbox; bubblewrap's ``--uid`` as root keeps real root), and ``memory`` and ``pids``
cgroup controllers: writable v1 ones, or a cgroup v2 subtree (see :mod:`mathagent.sandbox.cgroups`;
the report's ``cgroup`` says which was used). rlimits, a scrubbed environment and a private work dir are
always applied (except at level NONE, which only scrubs the environment). seccomp is a bonus: it is
reported but does not lower the level when ``pyseccomp`` is missing.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

from mathagent.sandbox.base import IsolationLevel, IsolationReport
from mathagent.sandbox.cgroups import CgroupSetup, cgroup_setup
from mathagent.sandbox.config import SandboxConfig

BWRAP = "/usr/bin/bwrap"
SETPRIV = "/usr/bin/setpriv"

#: Order in which ``mathagent sandbox check`` lists the protections.
PROTECTIONS = (
    "network_namespace",
    "pid_namespace",
    "readonly_system",
    "private_workdir",
    "private_tmp",
    "hidden_host_files",
    "unprivileged_uid",
    "memory_cgroup",
    "pids_cgroup",
    "cpu_cgroup",
    "rlimits",
    "scrubbed_env",
    "die_with_parent",
    "seccomp",
)


@dataclass(frozen=True)
class Capabilities:
    """Facts about the host, probed once per process."""

    bwrap: str | None
    """Why bubblewrap cannot be used, or None when it works."""
    root: bool
    setpriv: bool
    cgroups: tuple[str, ...]
    """Controllers a slot group can get."""
    seccomp: str | None
    """Why seccomp cannot be used, or None when pyseccomp loads a filter."""
    cgroup_setup: CgroupSetup | None = None
    """The hierarchy those controllers come from (None: v1 defaults, or no cgroups)."""


@functools.lru_cache(maxsize=1)
def probe() -> Capabilities:
    bw: str | None = None
    if not os.path.exists(BWRAP):
        bw = f"{BWRAP} not installed (apt-get install bubblewrap)"
    else:
        try:
            r = subprocess.run(
                [BWRAP, "--unshare-net", "--unshare-pid", "--ro-bind", "/", "/", "--proc", "/proc", "true"],
                capture_output=True,
                timeout=10,
            )
            if r.returncode != 0:
                bw = "bubblewrap cannot create namespaces here: " + r.stderr.decode(errors="replace").strip()
        except (OSError, subprocess.TimeoutExpired) as e:
            bw = f"bubblewrap failed to run: {e}"
    sc: str | None = None
    try:
        r = subprocess.run(
            [
                sys.executable,
                "-c",
                "import pyseccomp as s; f = s.SyscallFilter(s.ALLOW); "
                "f.add_rule(s.ERRNO(1), 'ptrace'); f.load()",
            ],
            capture_output=True,
            timeout=20,
        )
        if r.returncode != 0:
            sc = "pyseccomp not usable: " + r.stderr.decode(errors="replace").strip().splitlines()[-1]
    except (OSError, subprocess.TimeoutExpired, IndexError) as e:
        sc = f"pyseccomp probe failed: {e}"
    setup = cgroup_setup()
    return Capabilities(
        bwrap=bw,
        root=os.geteuid() == 0,
        setpriv=shutil.which("setpriv") is not None and os.path.exists(SETPRIV),
        cgroups=setup.controllers if setup is not None else (),
        seccomp=sc,
        cgroup_setup=setup,
    )


@dataclass(frozen=True)
class Plan:
    """What one sandbox will use, derived from the config and the host's capabilities."""

    level: IsolationLevel
    bwrap: bool
    drop_uid: bool
    cgroups: tuple[str, ...]
    seccomp: bool
    rlimits: bool
    report: IsolationReport
    cgroup_setup: CgroupSetup | None = None


class SandboxUnavailable(RuntimeError):
    """The requested isolation level cannot be reached on this machine."""


def make_plan(config: SandboxConfig, caps: Capabilities | None = None) -> Plan:
    caps = caps or probe()
    want = config.level
    on: dict[str, bool] = {}
    why: dict[str, str] = {}

    def mark(name: str, ok: bool, reason: str) -> None:
        on[name] = ok
        if not ok:
            why[name] = reason

    if want == "none":
        for p in PROTECTIONS:
            mark(p, p == "scrubbed_env", "level none requested: plain local kernel for trusted code")
        return Plan(
            IsolationLevel.NONE, False, False, (), False, False, _report(IsolationLevel.NONE, on, why)
        )

    reduced_req = "level reduced requested"
    use_bwrap = caps.bwrap is None and want != "reduced"
    bw_reason = reduced_req if want == "reduced" else (caps.bwrap or "")
    for p in ("network_namespace", "pid_namespace", "readonly_system", "private_tmp", "hidden_host_files"):
        mark(p, use_bwrap, bw_reason)
    mark("die_with_parent", use_bwrap, bw_reason)
    mark("private_workdir", True, "")
    drop = caps.root and caps.setpriv and want != "reduced"
    mark(
        "unprivileged_uid",
        drop,
        reduced_req if want == "reduced" else ("not root" if not caps.root else "setpriv missing"),
    )
    cg = caps.cgroups if want != "reduced" else ()
    for c in ("memory", "pids", "cpu"):
        reason = (
            reduced_req
            if want == "reduced"
            else f"no writable cgroup v1 '{c}' controller and no cgroup v2 subtree offering it"
        )
        mark(f"{c}_cgroup", c in cg, reason)
    mark("rlimits", True, "")
    mark("scrubbed_env", True, "")
    use_sc = config.seccomp and caps.seccomp is None
    mark("seccomp", use_sc, "disabled in config" if not config.seccomp else (caps.seccomp or ""))

    full = use_bwrap and drop and "memory" in cg and "pids" in cg
    level = IsolationLevel.FULL if full else IsolationLevel.REDUCED
    if want == "full" and not full:
        missing = {k: v for k, v in why.items() if k != "seccomp"}
        raise SandboxUnavailable(f"level full requested but not reachable here: {missing}")
    setup = caps.cgroup_setup if cg else None
    how = (setup.how if setup is not None else "v1") if cg else ""
    return Plan(level, use_bwrap, drop, tuple(cg), use_sc, True, _report(level, on, why, how), setup)


def _report(
    level: IsolationLevel, on: dict[str, bool], why: dict[str, str], cgroup: str = ""
) -> IsolationReport:
    return IsolationReport(level=level, protections=on, missing_reasons=why, cgroup=cgroup)


def isolation_report(config: SandboxConfig | None = None) -> IsolationReport:
    """The level and protections a sandbox started with ``config`` would get on this machine."""
    config = config or SandboxConfig.from_env()
    try:
        return make_plan(config).report
    except SandboxUnavailable:
        return make_plan(config.with_(level="auto")).report
