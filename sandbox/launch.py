"""The command line that starts one kernel: cgroup entry, bubblewrap, ``setpriv``, then a boot script.

The boot script runs inside the sandbox as the unprivileged slot uid; it sets rlimits, loads the
seccomp filter and starts ipykernel on the slot's connection file (ipc sockets in the slot's
``conn`` dir, the only host directory the sandbox can write).
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

BOOT = r"""
import json, os, resource, sys
cfg = json.loads(sys.argv[1])
for name, value in cfg["rlimits"].items():
    lim = getattr(resource, name)
    soft, hard = resource.getrlimit(lim)
    value = value if hard == resource.RLIM_INFINITY else min(value, hard)
    try:
        resource.setrlimit(lim, (value, value))
    except (ValueError, OSError) as e:
        print(f"sandbox boot: cannot set {name}: {e}", file=sys.stderr)
if cfg["seccomp"]:
    import pyseccomp as sc
    f = sc.SyscallFilter(sc.ALLOW)
    for call in cfg["seccomp"]:
        try:
            f.add_rule(sc.ERRNO(1), call)
        except Exception:
            pass
    f.load()
os.chdir(cfg["cwd"])
for mod in cfg["preload"]:
    try:
        __import__(mod)
    except Exception as e:
        print(f"sandbox boot: cannot preload {mod}: {e}", file=sys.stderr)
sys.argv = ["ipykernel", "-f", cfg["conn"], "--HistoryManager.enabled=False", "--InteractiveShell.xmode=Plain", "--quiet"]
from ipykernel.kernelapp import launch_new_instance
launch_new_instance()
"""


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
    config: SandboxConfig, plan: Plan, slot: Slot, conn_file: Path, info_fd: int | None
) -> list[str]:
    """argv for ``subprocess.Popen``; ``info_fd`` is the pipe bubblewrap writes its child pid to."""
    workdir = SANDBOX_WORKDIR if plan.bwrap else str(slot.host_workdir)
    boot_cfg = {
        "rlimits": rlimits(config, plan) if plan.rlimits else {},
        "seccomp": list(SECCOMP_DENY) if plan.seccomp else [],
        "cwd": workdir,
        "conn": str(conn_file),
        "preload": list(config.preload),
    }
    env = config.kernel_env(workdir)
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
        cmd = [BWRAP, *bwrap_args(config, slot, env, info_fd), *inner]
    else:
        cmd = ["/usr/bin/env", "-i", *(f"{k}={v}" for k, v in env.items()), *inner]
    if plan.cgroups and slot.cgroup is not None:
        enter = " && ".join(f"echo $$ > {shlex.quote(f)}" for f in slot.cgroup.procs_files())
        cmd = ["/bin/sh", "-c", f'{enter} && exec "$@"', "sandbox-enter", *cmd]
    return cmd


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
    a += ["--perms", "1777", "--tmpfs", "/tmp"]
    a += ["--perms", "0777", "--size", str(config.workdir_mb * MB), "--tmpfs", SANDBOX_WORKDIR]
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
