"""The command line that starts one sandbox slot: cgroup entry, bubblewrap, ``setpriv``, then the zygote.

The zygote (:mod:`mathagent.sandbox.boot`) runs inside the sandbox as the unprivileged slot uid; it
sets rlimits, loads the seccomp filter, imports the preload modules once and then forks one fresh
ipykernel per trajectory. Each kernel's connection file and ipc sockets live in the slot's ``conn``
dir, seen inside bubblewrap as ``/conn``: a host-owned tmpfs bounded in size and inodes when the
host is root (see :mod:`mathagent.sandbox.slots`). Every other writable place inside bubblewrap is
a tmpfs with a size: the work dir, ``/tmp``, ``/dev/shm`` and ``$IPYTHONDIR``. bubblewrap reads its
options from a pipe (``--args``), so ``/proc/1/cmdline`` inside shows no host path.
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
SANDBOX_CONN = "/conn"
"""Where the slot's connection dir appears inside bubblewrap."""
IPYTHON_PROFILE_DIRS = ("startup", "log", "db", "pid", "security")

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
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
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

#: ``clone`` flags that create namespaces: a ``clone`` carrying any of them is denied (``unshare`` and
#: ``setns`` are denied whole). CLONE_NEWTIME is absent: for ``clone`` that bit is part of the exit
#: signal, and only ``clone3`` / ``unshare`` accept it.
CLONE_NAMESPACE_FLAGS = (
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
)
#: Answer ENOSYS: seccomp cannot read ``clone3``'s flags (they sit in memory), and libc falls back to ``clone``.
SECCOMP_ENOSYS = ("clone3",)
#: Socket families refused with EPERM (AF_VSOCK: host-guest sockets, which a network namespace does not cover).
SECCOMP_SOCKET_FAMILIES = (40,)


def seccomp_rules() -> dict[str, list[object]]:
    """The filter the zygote loads (see ``boot._seccomp``)."""
    return {
        "deny": list(SECCOMP_DENY),
        "clone_flags": list(CLONE_NAMESPACE_FLAGS),
        "enosys": list(SECCOMP_ENOSYS),
        "socket_families": list(SECCOMP_SOCKET_FAMILIES),
    }


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


def conn_inside(plan: Plan, slot: Slot) -> str:
    """The slot's connection dir as the sandbox sees it."""
    return SANDBOX_CONN if plan.bwrap else str(slot.conn_dir)


def build_command(
    config: SandboxConfig,
    plan: Plan,
    slot: Slot,
    ctl: tuple[int, int],
    info_fd: int | None,
    args_fd: int | None = None,
) -> tuple[list[str], bytes]:
    """argv for ``subprocess.Popen`` of a slot's zygote, and what to write to ``args_fd``.

    ``ctl`` is (command pipe read end, reply pipe write end), both passed to the zygote; ``info_fd``
    is the pipe bubblewrap writes its child pid to; ``args_fd`` the pipe bubblewrap reads its
    arguments from (NUL-separated), so that they do not show in ``/proc/1/cmdline`` inside.
    """
    workdir = SANDBOX_WORKDIR if plan.bwrap else str(slot.host_workdir)
    boot_cfg = {
        "rlimits": rlimits(config, plan) if plan.rlimits else {},
        "seccomp": seccomp_rules() if plan.seccomp else {},
        "cwd": workdir,
        "ctl": list(ctl),
        # emptied before each kernel is forked: inside bubblewrap these are the sandbox's own tmpfs
        "clear": [workdir, "/tmp", "/dev/shm", SANDBOX_IPYTHONDIR] if plan.bwrap else [workdir],
        "keep": [SANDBOX_IPYTHONDIR + "/profile_default"],
        "preload": list(config.preload),
        "kernel_modules": list(KERNEL_MODULES),
        "output_cap": config.output_cap_bytes,
    }
    env = config.kernel_env(workdir)
    if plan.bwrap:
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
    payload = b""
    if plan.bwrap:
        opts = bwrap_args(config, slot, env, info_fd)
        if args_fd is not None:  # the options (host paths among them) through a pipe; the command stays
            payload = b"".join(a.encode() + b"\0" for a in opts)
            cmd = [BWRAP, "--args", str(args_fd), *inner]
        else:
            cmd = [BWRAP, *opts, *inner]
    else:
        cmd = ["/usr/bin/env", "-i", *(f"{k}={v}" for k, v in env.items()), *inner]
    if plan.cgroups and slot.cgroup is not None:
        enter = " && ".join(f"echo $$ > {shlex.quote(f)}" for f in slot.cgroup.procs_files())
        cmd = ["/bin/sh", "-c", f'{enter} && exec "$@"', "sandbox-enter", *cmd]
    return cmd, payload


def bwrap_args(config: SandboxConfig, slot: Slot, env: dict[str, str], info_fd: int | None) -> list[str]:
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
    a += ["--ro-bind", "/dev/null", "/proc/cmdline"]  # the host's boot command line
    # every writable place is a tmpfs with a size (the memory cgroup bounds them all together as well)
    a += ["--perms", "1777", "--size", str(config.tmp_mb * MB), "--tmpfs", "/tmp"]
    a += ["--perms", "1777", "--size", str(config.shm_mb * MB), "--tmpfs", "/dev/shm"]
    a += ["--perms", "0777", "--size", str(config.workdir_mb * MB), "--tmpfs", SANDBOX_WORKDIR]
    # IPython wants its dir writable; the default profile in it is built here and made read-only, so
    # no trajectory can leave a startup script for the next one
    a += ["--perms", "0777", "--size", str(4 * MB), "--tmpfs", SANDBOX_IPYTHONDIR]
    profile = SANDBOX_IPYTHONDIR + "/profile_default"
    a += ["--perms", "0755", "--size", str(64 * 1024), "--tmpfs", profile]
    for d in IPYTHON_PROFILE_DIRS:
        a += ["--perms", "0755", "--dir", f"{profile}/{d}"]
    readme = _ipython_startup_readme()
    if readme is not None:  # IPython copies it into the startup dir when missing
        a += ["--ro-bind", readme, f"{profile}/startup/README"]
    a += ["--remount-ro", profile]
    a += ["--bind", str(slot.conn_dir), SANDBOX_CONN]
    a += ["--chdir", SANDBOX_WORKDIR, "--clearenv"]
    for k, v in env.items():
        a += ["--setenv", k, v]
    if info_fd is not None:
        a += ["--info-fd", str(info_fd)]
    return a


def _ipython_startup_readme() -> str | None:
    try:
        import IPython
    except ImportError:
        return None
    p = Path(IPython.__file__).parent / "core" / "profile" / "README_STARTUP"
    return str(p) if p.is_file() else None


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
