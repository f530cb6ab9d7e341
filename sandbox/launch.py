"""The command line that starts one sandbox slot: cgroup entry, bubblewrap, ``setpriv``, then the zygote.

The zygote (:mod:`mathagent.sandbox.boot`) runs inside the sandbox as the unprivileged slot uid; it
sets rlimits, loads the seccomp filter, imports the preload modules once and then forks one fresh
ipykernel per trajectory (ipc sockets in the slot's ``conn`` dir, the only host directory the sandbox
can write).
"""

from __future__ import annotations

import json
import os
import shlex
import site
import sys
from pathlib import Path

from mathagent.sandbox.config import MB, SandboxConfig
from mathagent.sandbox.isolation import BWRAP, SETPRIV, Plan
from mathagent.sandbox.slots import Slot

SANDBOX_WORKDIR = "/work"
SANDBOX_IPYTHONDIR = "/ipython"

#: Files and dirs of /etc a Python process may want; secrets (shadow, ssh, ...) are never bound.
ETC_ALLOW = (
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",
    "localtime",
    "nsswitch.conf",
    "hosts",
    "mime.types",
    "fonts",
    "matplotlibrc",
)

#: syscalls the seccomp filter denies with EPERM (netlink stays allowed: zmq needs it).
SECCOMP_DENY = (
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "kexec_load",
    "init_module",
    "finit_module",
    "delete_module",
    "bpf",
    "perf_event_open",
    "keyctl",
    "add_key",
    "request_key",
    "userfaultfd",
    "swapon",
    "swapoff",
    "reboot",
    "syslog",
    "acct",
    "quotactl",
)

BOOT = (Path(__file__).with_name("boot.py")).read_text(encoding="utf-8")
"""The zygote program run inside the sandbox (see :mod:`mathagent.sandbox.boot`)."""

KERNEL_MODULES = (
    "ipykernel.kernelapp",
    "ipykernel.ipkernel",
    "ipykernel.zmqshell",
    "ipykernel.debugger",
    "IPython.core.completerlib",
    "tornado.gen",
    "tornado.locks",
    "tornado.queues",
    "tornado.platform.asyncio",
    "faulthandler",
    "gzip",
    "encodings.idna",
)
"""What ipykernel imports while a kernel starts; the zygote imports it once so no fork pays for it."""


def ipython_profile(config: SandboxConfig) -> Path:
    """A ready IPython profile, bound read-only into every bubblewrap sandbox as its default profile.

    Each kernel would otherwise build its profile dirs in the emptied work dir at every start (~15 ms
    of a fork's ~70 ms). Read-only, no trajectory can leave a startup script in it for the next kernel;
    the writable ``$IPYTHONDIR`` around it is emptied between kernels like the work dir.
    """
    profile = Path(config.base_dir) / "ipython" / "profile_default"
    if not (profile / "db").is_dir():
        from IPython.core.profiledir import ProfileDir

        profile.parent.mkdir(parents=True, exist_ok=True)
        ProfileDir.create_profile_dir(str(profile))
        (profile / "db").mkdir(exist_ok=True)  # the shell's key-value store (empty, read-only)
        for d in (profile, profile / "startup", profile / "log", profile / "db"):
            d.chmod(0o755)
    return profile


def python_roots() -> list[str]:
    """Directories holding the interpreter and its packages (bound read-only into the sandbox)."""
    roots = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix)}
    for p in site.getsitepackages():
        roots.add(os.path.realpath(p))
    exe = os.path.realpath(sys.executable)
    roots.add(os.path.dirname(os.path.dirname(exe)))
    out: list[str] = []
    for r in sorted(roots, key=len):
        if r.startswith(("/usr/", "/bin/", "/lib")) or r in ("/usr", "/"):
            continue
        if not any(r == o or r.startswith(o + "/") for o in out) and os.path.isdir(r):
            out.append(r)
    return out


def rlimits(config: SandboxConfig, plan: Plan) -> dict[str, int]:
    # without a memory cgroup the address-space limit is the only memory bound: keep it near memory_mb
    as_mb = (
        config.address_space_mb
        if "memory" in plan.cgroups
        else min(config.address_space_mb, config.memory_mb + 1024)
    )
    lim = {
        "RLIMIT_AS": as_mb * MB,
        "RLIMIT_FSIZE": config.workdir_mb * MB,
        "RLIMIT_NOFILE": config.nofile,
        "RLIMIT_CPU": config.cpu_rlimit_s,
        "RLIMIT_CORE": 0,
    }
    if plan.drop_uid:
        lim["RLIMIT_NPROC"] = config.pids_max
    return lim


def build_command(
    config: SandboxConfig, plan: Plan, slot: Slot, ctl: tuple[int, int], info_fd: int | None
) -> list[str]:
    """argv for ``subprocess.Popen`` of a slot's zygote.

    ``ctl`` is (command pipe read end, reply pipe write end), both passed to the zygote; ``info_fd``
    is the pipe bubblewrap writes its child pid to.
    """
    workdir = SANDBOX_WORKDIR if plan.bwrap else str(slot.host_workdir)
    boot_cfg = {
        "rlimits": rlimits(config, plan) if plan.rlimits else {},
        "seccomp": list(SECCOMP_DENY) if plan.seccomp else [],
        "cwd": workdir,
        "ctl": list(ctl),
        # emptied before each kernel is forked: inside bubblewrap these are the sandbox's own tmpfs
        "clear": [workdir, "/tmp", "/dev/shm", SANDBOX_IPYTHONDIR] if plan.bwrap else [workdir],
        "keep": [str(slot.conn_dir), SANDBOX_IPYTHONDIR + "/profile_default"],
        "preload": list(config.preload),
        "kernel_modules": list(KERNEL_MODULES),
    }
    env = config.kernel_env(workdir)
    ipydir = ipython_profile(config) if plan.bwrap else None
    if ipydir is not None:
        env["IPYTHONDIR"] = SANDBOX_IPYTHONDIR
    python = os.path.realpath(sys.executable)
    env["PATH"] = f"{os.path.dirname(python)}:/usr/local/bin:/usr/bin:/bin"
    inner = [python, "-I", "-c", BOOT, json.dumps(boot_cfg)] if plan.level.value != "none" else None
    if inner is None:
        inner = [python, "-c", BOOT, json.dumps(boot_cfg)]
    if plan.drop_uid:
        uid = str(slot.uid)
        inner = [
            SETPRIV,
            f"--reuid={uid}",
            f"--regid={uid}",
            "--clear-groups",
            "--inh-caps=-all",
            "--",
            *inner,
        ]
    if plan.bwrap:
        cmd = [BWRAP, *bwrap_args(config, slot, env, info_fd, ipydir), *inner]
    else:
        cmd = ["/usr/bin/env", "-i", *(f"{k}={v}" for k, v in env.items()), *inner]
    if plan.cgroups and slot.cgroup is not None:
        enter = " && ".join(f"echo $$ > {shlex.quote(f)}" for f in slot.cgroup.procs_files())
        cmd = ["/bin/sh", "-c", f'{enter} && exec "$@"', "sandbox-enter", *cmd]
    return cmd


def bwrap_args(
    config: SandboxConfig, slot: Slot, env: dict[str, str], info_fd: int | None, ipydir: Path | None = None
) -> list[str]:
    a = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
    a += ["--die-with-parent", "--new-session", "--hostname", "sandbox"]
    a += ["--ro-bind", "/usr", "/usr"]
    for d in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        p = Path("/" + d)
        if p.is_symlink():
            a += ["--symlink", os.readlink(p), "/" + d]
        elif p.is_dir():
            a += ["--ro-bind", str(p), "/" + d]
    a += ["--perms", "0755", "--dir", "/etc"]
    for name in ETC_ALLOW:
        if os.path.exists("/etc/" + name):
            a += ["--ro-bind", "/etc/" + name, "/etc/" + name]
    made: set[str] = {"/", "/usr", "/etc", "/tmp", "/proc", "/dev"}
    for root in python_roots():
        a += _parents(root, made)
        a += ["--ro-bind", root, root]
    a += ["--proc", "/proc", "--dev", "/dev"]
    a += ["--perms", "1777", "--tmpfs", "/tmp"]
    a += ["--perms", "0777", "--size", str(config.workdir_mb * MB), "--tmpfs", SANDBOX_WORKDIR]
    if ipydir is not None:  # IPython wants its dir writable; the profile in it is read-only
        a += ["--perms", "0777", "--dir", SANDBOX_IPYTHONDIR]
        a += ["--ro-bind", str(ipydir), SANDBOX_IPYTHONDIR + "/profile_default"]
    a += _parents(str(slot.conn_dir), made)
    a += ["--bind", str(slot.conn_dir), str(slot.conn_dir)]
    a += ["--chdir", SANDBOX_WORKDIR, "--clearenv"]
    for k, v in env.items():
        a += ["--setenv", k, v]
    if info_fd is not None:
        a += ["--info-fd", str(info_fd)]
    return a


def _parents(path: str, made: set[str]) -> list[str]:
    """``--dir`` with mode 0755 for each missing ancestor (bubblewrap copies 0700 from /root)."""
    out: list[str] = []
    parts = Path(path).parts
    for i in range(2, len(parts)):
        p = str(Path(*parts[:i]))
        if p not in made:
            made.add(p)
            out += ["--perms", "0755", "--dir", p]
    return out
