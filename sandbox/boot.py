"""The program that runs inside a sandbox slot: a *zygote* that forks one fresh kernel per trajectory.

It is not imported by the host: :mod:`mathagent.sandbox.launch` reads this file and runs it with
``python -I -c`` as the sandbox's first process (argv[1]: a JSON config). It

1. sets the resource limits and loads the seccomp filter (both inherited by every kernel it forks);
2. imports the preload modules (sympy, numpy) and everything ipykernel imports while it starts, once;
3. makes itself non-dumpable, so a kernel running as the same uid cannot read or write its memory
   through ``/proc/<pid>/mem``;
4. serves requests from the host on a pipe, one JSON line each:
   ``{"op": "sweep"}`` kills every process left under it (it is their subreaper);
   ``{"op": "spawn", "conn": PATH}`` sweeps, empties every writable dir (work dir, /tmp, /dev/shm,
   $IPYTHONDIR; each one whatever happened to the others), forks, and the child becomes an ipykernel
   on the connection file ``PATH``; the reply is ``{"spawned": PID}``, or ``{"unclean": [PATHS]}``
   without a fork when something could not be removed (the host then discards the whole slot).
   Reaped children are reported as ``{"exited": PID, "status": N}``.

Each kernel is therefore a copy of the same pristine interpreter: no state of an earlier trajectory
(variables, modules it imported, files, processes: the host kills those first) reaches it, and it
starts in ~0.05 CPU-s instead of the ~0.5 CPU-s of a new interpreter importing ipykernel and sympy.
"""

import ctypes
import gc
import json
import os
import resource
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
        _seccomp(cfg["seccomp"])


def _seccomp(rules: dict) -> None:
    """Load the filter (see ``launch.SECCOMP``): plain denials, ``clone`` with any namespace flag,
    syscalls that must look absent (ENOSYS: ``clone3``, so libc falls back to the filtered ``clone``)
    and socket families that must look unsupported."""
    import pyseccomp as sc

    f = sc.SyscallFilter(sc.ALLOW)

    def add(action, call, *args):
        try:
            f.add_rule(action, call, *args)
        except Exception as e:  # a syscall this kernel or libseccomp does not know
            print(f"sandbox boot: seccomp rule for {call} not added: {e}", file=sys.stderr)

    for call in rules["deny"]:
        add(sc.ERRNO(1), call)
    for flag in rules["clone_flags"]:
        add(sc.ERRNO(1), "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    for call in rules["enosys"]:
        add(sc.ERRNO(38), call)
    for family in rules["socket_families"]:
        add(sc.ERRNO(1), "socket", sc.Arg(0, sc.EQ, family))
        add(sc.ERRNO(1), "socketpair", sc.Arg(0, sc.EQ, family))
    f.load()


def _preload(cfg: dict) -> None:
    for mod in list(cfg["preload"]) + list(cfg["kernel_modules"]):
        try:
            __import__(mod)
        except Exception as e:
            print(f"sandbox boot: cannot preload {mod}: {e}", file=sys.stderr)


def remove_tree(path: str) -> bool:
    """Remove ``path`` and everything below it, however deep and whatever its permissions.

    ``shutil.rmtree`` holds one file descriptor per level (a tree deeper than RLIMIT_NOFILE defeats
    it) and fails on dirs a cell made unreadable. This pulls the children of every subdir up into
    ``path`` (renames; no path ever longer than three components below it, at most one dir open)
    until only files and empty dirs remain. True when nothing is left.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode):
        try:
            os.unlink(path)
            return True
        except OSError:
            return False
    _chmod_dir(path)
    n = 0
    while True:
        try:
            with os.scandir(path) as it:
                entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        except OSError:
            break
        if not entries:
            break
        progress = False
        for name, is_dir in entries:
            child = os.path.join(path, name)
            try:
                if not is_dir:
                    os.unlink(child)
                    progress = True
                    continue
                _chmod_dir(child)
                subs = os.listdir(child)
                for sub in subs:  # pull the grandchildren up one level
                    n += 1
                    os.rename(os.path.join(child, sub), os.path.join(path, f".rm{n}-{os.getpid()}"))
                os.rmdir(child)
                progress = True
            except OSError:
                pass
        if not progress:
            break
    try:
        os.rmdir(path)
        return True
    except OSError:
        return not os.path.lexists(path)


def _chmod_dir(path: str) -> None:
    try:
        os.chmod(path, stat.S_IRWXU)  # a cell may have taken its own permissions away (chmod 0)
    except OSError:
        pass


def empty_dir(d: str, keep: list) -> list:
    """Remove everything inside ``d`` except ``keep`` paths and their ancestors; returns what is left."""
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return []
    except OSError:
        _chmod_dir(d)
        try:
            names = os.listdir(d)
        except OSError:
            return [d]
    for name in names:
        path = os.path.join(d, name)
        if path in keep:
            continue
        if _holds(path, keep):
            if os.path.isdir(path) and not os.path.islink(path):
                empty_dir(path, keep)
            continue
        remove_tree(path)
    try:
        return [
            os.path.join(d, n)
            for n in os.listdir(d)
            if os.path.join(d, n) not in keep and not _holds(os.path.join(d, n), keep)
        ]
    except OSError:
        return [d]


def _holds(path: str, keep: list) -> bool:
    """Whether a kept path lies below ``path``."""
    return any(k.startswith(path + "/") for k in keep)


def _kernel(cfg: dict, conn: str, ctl: tuple) -> None:
    """In the forked child: become an ipykernel (never returns)."""
    code = 1
    err = None
    try:
        os.setsid()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for fd in ctl:
            os.close(fd)
        # The zygote's stdout/stderr is the host's log pipe. A kernel keeps no way to it: its fds 0-2
        # (and so ipykernel's copies of them) are /dev/null; a private copy reports a failed start and
        # is closed before any cell runs.
        err = os.dup(2)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
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
        os.close(err)
        err = None
        app.start()
        code = 0
    except BaseException as e:  # noqa: BLE001 - report anything, then leave without running atexit
        if err is not None:
            try:
                os.write(err, f"sandbox kernel: {type(e).__name__}: {e}\n".encode("utf-8", "replace"))
            except OSError:
                pass
    finally:
        os._exit(code)


CHUNK_CHARS = 65536
"""Most characters of stream output one iopub message carries (a long print is sent in pieces)."""


def _bound_output(cap: int) -> None:
    """Keep every message a well-behaved cell sends small (the host enforces hard limits anyway).

    - A long ``print`` goes out in pieces of ``CHUNK_CHARS``, and buffered output is flushed once it
      holds that much, so no stream message grows with the output and the host can stop a flood.
    - A displayed value (``execute_result`` / ``display_data``) keeps at most ``cap + 1`` bytes of its
      ``text/plain``; other formats larger than that are dropped. The bytes cut are reported in the
      metadata (``mathagent/dropped_bytes``), so the host still counts them.
    """
    try:
        from ipykernel.iostream import OutStream
    except Exception:
        return
    write = OutStream.write

    def bounded_write(self, string):
        if not isinstance(string, str) or len(string) <= CHUNK_CHARS:
            n = write(self, string)
            # characters written since this stream last flushed here (a plain counter: cheap per print;
            # the IO thread's own timed flushes only make it flush a little early)
            pending = getattr(self, "_mathagent_pending", 0) + (n or 0)
            if pending > CHUNK_CHARS:
                pending = 0
                self.flush()
            self._mathagent_pending = pending
            return n
        for i in range(0, len(string), CHUNK_CHARS):
            write(self, string[i : i + CHUNK_CHARS])
            self.flush()
        return len(string)

    OutStream.write = bounded_write  # type: ignore[method-assign]

    def cut(data: dict, md: dict) -> None:
        dropped = 0
        for mime in list(data):
            value = data[mime]
            size = len(value) if isinstance(value, str) else 0
            if size <= cap:
                continue
            raw = value.encode("utf-8", "surrogatepass")
            if len(raw) <= cap:
                continue
            if mime == "text/plain":
                data[mime] = raw[: cap + 1].decode("utf-8", "ignore")
                dropped += len(raw) - cap - 1
            else:
                del data[mime]
        if dropped:
            md["mathagent/dropped_bytes"] = dropped

    try:
        from ipykernel.displayhook import ZMQShellDisplayHook

        fmt = ZMQShellDisplayHook.write_format_data

        def write_format_data(self, format_dict, md_dict=None):
            format_dict = dict(format_dict)
            md_dict = dict(md_dict or {})
            cut(format_dict, md_dict)
            return fmt(self, format_dict, md_dict)

        ZMQShellDisplayHook.write_format_data = write_format_data  # type: ignore[method-assign]
    except Exception:
        pass
    try:
        from ipykernel.zmqshell import ZMQDisplayPublisher

        publish = ZMQDisplayPublisher.publish

        def bounded_publish(self, data, metadata=None, *args, **kwargs):
            data = dict(data or {})
            metadata = dict(metadata or {})
            cut(data, metadata)
            return publish(self, data, metadata, *args, **kwargs)

        ZMQDisplayPublisher.publish = bounded_publish  # type: ignore[method-assign]
    except Exception:
        pass


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
    _bound_output(int(cfg.get("output_cap", 1 << 20)))
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
            left = []
            for d in cfg["clear"]:  # every place, whatever happened to the others
                left += empty_dir(d, cfg["keep"])
            if left:
                reply({"unclean": left[:20]})
                continue
            pid = os.fork()
            if pid == 0:
                _kernel(cfg, req["conn"], (cmd_fd, rep_fd))
            reply({"spawned": pid})


if __name__ == "__main__":
    config = json.loads(sys.argv[1])
    _limits(config)
    os.chdir(config["cwd"])
    _preload(config)
    serve(config)
