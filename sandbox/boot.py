"""The program that runs inside a sandbox slot: a *zygote* that forks one fresh kernel per trajectory.

It is not imported by the host: :mod:`mathagent.sandbox.launch` reads this file and runs it with
``python -I -c`` as the sandbox's first process (argv[1]: a JSON config). It

1. sets the resource limits and loads the seccomp filter (both inherited by every kernel it forks);
2. imports the preload modules (sympy, numpy) and everything ipykernel imports while it starts, once;
3. makes itself non-dumpable, so a kernel running as the same uid cannot read or write its memory
   through ``/proc/<pid>/mem``;
4. serves requests from the host on a pipe, one JSON line each:
   ``{"op": "sweep"}`` kills every process left under it (it is their subreaper);
   ``{"op": "spawn", "conn": PATH}`` sweeps, empties the writable dirs (work dir, /tmp, /dev/shm; the
   host-shared connection dir is kept), forks,
   and the child becomes an ipykernel on the connection file ``PATH``; the reply is
   ``{"spawned": PID, "clean": BOOL}``. Reaped children are reported as ``{"exited": PID, "status": N}``.

Each kernel is therefore a copy of the same pristine interpreter: no state of an earlier trajectory
(variables, modules it imported, files, processes: the host kills those first) reaches it, and it
starts in ~0.05 CPU-s instead of the ~0.5 CPU-s of a new interpreter importing ipykernel and sympy.
"""

import ctypes
import gc
import json
import os
import resource
import shutil
import signal
import stat
import sys
import time

PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, value: int) -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _set_dumpable(on: bool) -> None:
    _prctl(PR_SET_DUMPABLE, 1 if on else 0)


def _children() -> list:
    """Our child pids. The same scan as ``mathagent.sandbox.cgroups.children_of``, which this script
    cannot import: with an editable install, mathagent's source is outside what the sandbox sees."""
    me = str(os.getpid())
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    raw = f.read().decode("ascii", "replace")
            except OSError:
                continue
            if raw[raw.rfind(")") + 2 :].split()[1] == me:
                out.append(int(name))
    return out


def _sweep(reap) -> None:
    """Kill every process left under the zygote: as the subreaper it inherits whatever a kernel left
    running (daemons, ``setsid`` children), even where no cgroup or uid tells them apart."""
    for _ in range(50):  # a fork bomb refills while we kill
        kids = _children()
        if not kids:
            return
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.005)
        reap()


def _limits(cfg: dict) -> None:
    for name, value in cfg["rlimits"].items():
        lim = getattr(resource, name)
        _soft, hard = resource.getrlimit(lim)
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


def _preload(cfg: dict) -> None:
    for mod in list(cfg["preload"]) + list(cfg["kernel_modules"]):
        try:
            __import__(mod)
        except Exception as e:
            print(f"sandbox boot: cannot preload {mod}: {e}", file=sys.stderr)


def _rmtree(path: str) -> None:
    """Remove a tree, also when a cell took away its permissions (``chmod 0`` on a dir)."""
    try:
        shutil.rmtree(path)
        return
    except OSError:
        pass
    try:
        os.chmod(path, stat.S_IRWXU)
    except OSError:
        pass
    for root, dirs, _files in os.walk(path):
        for d in dirs:
            try:
                os.chmod(os.path.join(root, d), stat.S_IRWXU)
            except OSError:
                pass
    shutil.rmtree(path, ignore_errors=True)


def _empty(d: str, keep: list) -> bool:
    """Remove everything inside ``d`` except ``keep`` paths and their ancestors; True when done."""
    try:
        entries = list(os.scandir(d))
    except OSError:
        return not os.path.isdir(d)
    for e in entries:
        if e.path in keep:
            continue
        if _holds(e.path, keep):
            if e.is_dir(follow_symlinks=False):
                _empty(e.path, keep)
            continue
        try:
            if e.is_dir(follow_symlinks=False):
                _rmtree(e.path)
            else:
                os.unlink(e.path)
        except OSError:
            pass
    try:
        return all(os.path.join(d, n) in keep or _holds(os.path.join(d, n), keep) for n in os.listdir(d))
    except OSError:
        return False


def _holds(path: str, keep: list) -> bool:
    """Whether a kept path lies below ``path``."""
    return any(k.startswith(path + "/") for k in keep)


def _kernel(cfg: dict, conn: str, ctl: tuple) -> None:
    """In the forked child: become an ipykernel (never returns)."""
    code = 1
    try:
        os.setsid()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for fd in ctl:
            os.close(fd)
        _set_dumpable(True)
        os.chdir(cfg["cwd"])
        np = sys.modules.get("numpy")
        if np is not None:  # every fork would otherwise share the zygote's global numpy RNG state
            np.random.seed()
        sys.argv = [
            "ipykernel",
            "-f",
            conn,
            "--HistoryManager.enabled=False",
            "--InteractiveShell.xmode=Plain",
            "--quiet",
        ]
        from ipykernel.kernelapp import IPKernelApp

        app = IPKernelApp.instance()
        app.initialize()
        shell = app.kernel.shell
        if shell.kernel is None:  # the shell was made by the zygote (see _prepare_kernel)
            shell.kernel = app.kernel
            shell.parent = app.kernel
        app.start()
        code = 0
    except BaseException as e:  # noqa: BLE001 - report anything, then leave without running atexit
        print(f"sandbox kernel: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
    finally:
        os._exit(code)


def _prepare_kernel() -> None:
    """Do once, before any fork, the parts of a kernel's start that do not depend on its sockets.

    - The interactive shell: ipykernel asks for ``ZMQInteractiveShell.instance(...)``, which returns an
      existing instance, so each fork adopts a pristine copy of this one (the kernel wires its session
      and sockets into it; the kernel reference is set in :func:`_kernel`). This halves a fork's start.
    - The debugger is switched off: an agent never sends debug requests, and setting it up costs each
      kernel a scan of every loaded module.
    If this ipykernel does not fit these assumptions, kernels simply start the slow way.
    """
    try:
        import ipykernel.debugger

        ipykernel.debugger._is_debugpy_available = False
    except Exception:
        pass
    try:
        from ipykernel.compiler import XCachingCompiler
        from ipykernel.zmqshell import ZMQInteractiveShell
        from traitlets.config import Config

        c = Config()
        c.HistoryManager.enabled = False
        c.InteractiveShell.xmode = "Plain"
        from IPython.core.profiledir import ProfileDir

        where = os.environ.get("IPYTHONDIR") or os.path.expanduser("~/.ipython")
        profile = ProfileDir.find_profile_dir_by_name(where, "default", config=c)
        ZMQInteractiveShell.instance(config=c, compiler_class=XCachingCompiler, profile_dir=profile)
    except Exception as e:
        print(f"sandbox boot: shell not prepared ({type(e).__name__}: {e})", file=sys.stderr)
        try:
            ZMQInteractiveShell.clear_instance()
        except Exception:
            pass


def serve(cfg: dict) -> None:
    cmd_fd, rep_fd = cfg["ctl"]

    def reply(obj: dict) -> None:
        data = (json.dumps(obj) + "\n").encode()
        while data:
            data = data[os.write(rep_fd, data) :]

    def reap(*_: object) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            reply({"exited": pid, "status": os.waitstatus_to_exitcode(status)})

    _prepare_kernel()
    # objects that exist now are shared with every fork; freezing them keeps the kernels' garbage
    # collections from writing to (and so copying) all of those pages
    gc.collect()
    gc.freeze()
    signal.signal(signal.SIGCHLD, reap)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the host stops the zygote
    _set_dumpable(False)
    _prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphans of a kernel become our children, not init's
    threads = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else 1
    reply({"ready": os.getpid(), "threads": threads})
    inbox = os.fdopen(cmd_fd, "rb", buffering=0)
    buf = b""
    while True:
        chunk = inbox.read(4096)
        if not chunk:
            os._exit(0)  # the host closed the pipe: it is gone
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            req = json.loads(line)
            op = req.get("op")
            if op == "sweep":
                _sweep(reap)
                reply({"swept": True})
                continue
            if op != "spawn":
                reply({"error": f"unknown op {op!r}"})
                continue
            _sweep(reap)
            clean = all(_empty(d, cfg["keep"]) for d in cfg["clear"])
            pid = os.fork()
            if pid == 0:
                _kernel(cfg, req["conn"], (cmd_fd, rep_fd))
            reply({"spawned": pid, "clean": clean})


if __name__ == "__main__":
    config = json.loads(sys.argv[1])
    _limits(config)
    os.chdir(config["cwd"])
    _preload(config)
    serve(config)
