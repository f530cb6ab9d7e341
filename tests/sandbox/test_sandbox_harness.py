"""Attacks on the harness around the kernel (issue 17, section 1): its memory, its disk, its parsing,
what a reused slot keeps, and how it waits on a zygote.

Each test names the lowest isolation level that stops its attack; below that level it is skipped
with the reason, never passed. Memory attacks measure this process's resident set: the kernel
lives in another process, so whatever the attack adds here is the harness's cost. The bound
asserted is ``HARNESS_GROWTH_BOUND`` over the resident set before the attack (see docs/sandbox.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mathagent.sandbox import JupyterSandbox, KernelPool
from mathagent.sandbox.base import IsolationLevel
from mathagent.sandbox.kernel import EXITS_KEPT

pytestmark = pytest.mark.kernel

FULL, REDUCED, NONE = IsolationLevel.FULL, IsolationLevel.REDUCED, IsolationLevel.NONE
MB = 1024 * 1024
HARNESS_GROWTH_BOUND = 64 * MB
"""Most the harness's peak resident set may grow under one memory attack."""


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


class PeakRss:
    """Peak resident set of this process from now on (the kernel's VmHWM, reset through clear_refs)."""

    def __enter__(self) -> PeakRss:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        self.before = _status_bytes("VmRSS")
        return self

    @property
    def growth(self) -> int:
        return _status_bytes("VmHWM") - self.before

    def __exit__(self, *exc: object) -> None:
        pass


# -- harness memory --------------------------------------------------------------------------------

LOG_PIPE_FLOOD = r"""
import os, sys
chunk = b"x" * 2**20
written = 0
for stream in (sys.stdout, sys.stderr):
    fd = getattr(stream, "_original_stdstream_copy", None)
    if fd is None:
        continue
    for _ in range(128):
        try:
            written += os.write(fd, chunk)
        except OSError:
            break
print("written", written)
"""


def test_a_flood_on_the_inherited_log_pipe_costs_the_harness_nothing(config, require_level):
    require_level(NONE, "log pipe flood")
    with JupyterSandbox(config) as sb, PeakRss() as peak:
        r = sb.run(LOG_PIPE_FLOOD, timeout=60)
        assert r.ok, r
        time.sleep(1.0)  # what the harness's log reader would still be holding
        assert sb.run("6 * 7").result == "42"
        assert peak.growth < HARNESS_GROWTH_BOUND, f"harness grew {peak.growth / MB:.0f} MiB"


FOREIGN_IOPUB_FLOOD = r"""
import threading
k = get_ipython().kernel
def flood():
    for i in range(24):
        k.session.send(k.iopub_socket, "stream", {"name": "stdout", "text": "y" * (8 * 2**20)},
                       parent={"msg_id": f"foreign-{i}", "session": "nobody"})
threading.Thread(target=flood, daemon=True).start()
print("started")
"""


def test_foreign_iopub_messages_sent_while_idle_are_bounded(config, require_level):
    require_level(NONE, "iopub flood with foreign parents")
    with JupyterSandbox(config) as sb, PeakRss() as peak:
        results = [sb.run(FOREIGN_IOPUB_FLOOD, timeout=30)]
        assert results[0].stdout == "started\n", results[0]
        time.sleep(4.0)  # no cell runs: only zmq's own queue could hold them
        # zmq ends for good a connection that sent an oversized frame: the kernel lost its own output
        # channel, which this cell or the next reports, and a fresh kernel answers after that
        results.append(sb.run("6 * 7", timeout=30))
        if results[-1].result != "42":
            results.append(sb.run("6 * 7", timeout=30))
        after = results[-1]
        assert after.result == "42" and "yyyy" not in after.stdout, after
        assert any(x.kernel_restarted and x.error and x.error.ename == "OutputLost" for x in results), results
        assert peak.growth < HARNESS_GROWTH_BOUND, f"harness grew {peak.growth / MB:.0f} MiB"


MULTIPART_FLOOD = r"""
k = get_ipython().kernel
k.iopub_socket.send_multipart([b"stream"] + [b"z" * 2**21] * 100)  # 100 frames, each under the frame limit
print("sent")
"""


def test_one_message_of_many_frames_is_bounded(config, require_level):
    # zmq bounds each frame and the count of messages, not the frames of one message: the relay
    # process (under its own RLIMIT_AS) receives it, never this process
    require_level(NONE, "a multipart message of many frames")
    with JupyterSandbox(config) as sb, PeakRss() as peak:
        sb.run(MULTIPART_FLOOD, timeout=60)
        time.sleep(4.0)
        assert sb.run("6 * 7", timeout=30).result == "42" or sb.run("6 * 7", timeout=30).result == "42"
        assert peak.growth < HARNESS_GROWTH_BOUND, f"harness grew {peak.growth / MB:.0f} MiB"


OVER_BUDGET = r"""
k = get_ipython().kernel
parent = k.get_parent("shell")
# 3 MiB in 3 frames: within the relay's memory, over its budget (2.25 MiB), below a flood (4 MiB)
k.session.send(k.iopub_socket, "stream", {"name": "stdout", "text": "small"}, parent=parent,
               buffers=[b"w" * 2**20] * 3)
print("sent")
"""


def test_a_message_over_the_budget_is_dropped_and_counted(config, require_level):
    require_level(NONE, "messages over the relay's byte budget")
    with JupyterSandbox(config) as sb, PeakRss() as peak:
        r = sb.run(OVER_BUDGET, timeout=60)
        assert r.ok and "sent" in r.stdout and "small" not in r.stdout, r
        assert r.truncated and r.output_bytes >= 3 * MB, r
        assert not r.kernel_restarted, r
        assert sb.run("6 * 7", timeout=30).result == "42"
        assert peak.growth < HARNESS_GROWTH_BOUND, f"harness grew {peak.growth / MB:.0f} MiB"


def test_the_relay_dying_is_noticed_and_the_slot_replaced(config, require_level):
    require_level(NONE, "the message relay killed under a running cell")
    with JupyterSandbox(config) as sb:
        assert sb.run("x = 1").ok
        relay = sb._zygote.relay
        t = threading.Timer(1.0, lambda: os.kill(relay.proc.pid, 9))
        t.start()
        r = sb.run("import time; time.sleep(30)", timeout=60)
        t.join()
        assert r.kernel_restarted and r.error and "relay" in r.error.evalue, r
        assert sb.run("6 * 7", timeout=30).result == "42"
        assert sb._zygote.relay.proc.pid != relay.proc.pid


def test_a_legal_huge_print_is_cut_without_growing_the_harness(config, require_level):
    require_level(NONE, "a single 100 MB print")
    with JupyterSandbox(config) as sb, PeakRss() as peak:
        r = sb.run("print('x' * 10**8)", timeout=60)
        assert r.truncated and len(r.stdout.encode()) <= config.output_cap_bytes, r.output_bytes
        assert sb.run("6 * 7").result == "42"
        assert peak.growth < HARNESS_GROWTH_BOUND, f"harness grew {peak.growth / MB:.0f} MiB"


# -- the connection dir ----------------------------------------------------------------------------

FILL_CONN = r"""
import os, json
from ipykernel.kernelapp import IPKernelApp
conn = IPKernelApp.instance().connection_file
info = json.load(open(conn))
targets = [os.path.dirname(conn), os.path.dirname(info["ip"])]
written = 0
for t in targets:
    for i in range(3):
        try:
            with open(os.path.join(t, f"fill{i}.bin"), "wb") as f:
                for _ in range(64):
                    written += f.write(b"0" * 2**20)
                    f.flush()
        except OSError:
            pass
    try:
        open(os.path.join(t, "left_by_a"), "w").write("from A")
    except OSError:
        pass
    try:
        os.setxattr(t, "user.left_by_a", b"1")
    except OSError:
        pass
for t in targets:
    try:
        os.chmod(t, 0)
    except OSError:
        pass
print(written)
"""

SEE_CONN = r"""
import os, json
from ipykernel.kernelapp import IPKernelApp
conn = IPKernelApp.instance().connection_file
info = json.load(open(conn))
seen = []
for t in (os.path.dirname(conn), os.path.dirname(info["ip"])):
    try:
        seen += [n for n in os.listdir(t) if n.startswith(("fill", "left_by_a"))]
    except OSError:
        pass
    try:
        seen += [a for a in os.listxattr(t) if "left_by_a" in a]
    except OSError:
        pass
print(seen)
"""


HOLD_A_SANDBOX = r"""
import json, sys, time
from mathagent.sandbox import JupyterSandbox
from mathagent.sandbox.config import SandboxConfig
sb = JupyterSandbox(SandboxConfig.from_dict(json.loads(sys.argv[1])))
print(sb._slot.dir, flush=True)
time.sleep(600)
"""


def test_a_killed_owners_conn_tmpfs_is_swept_when_the_next_sandbox_starts(config, require_level, tmp_path):
    require_level(FULL, "a connection tmpfs per slot (needs root)")
    from mathagent.sandbox.slots import conn_mounts

    cfg = config.with_(base_dir=tmp_path / "slots", preload=())
    with JupyterSandbox(cfg), JupyterSandbox(cfg) as second:  # this process has swept already
        child = subprocess.Popen(
            [sys.executable, "-c", HOLD_A_SANDBOX, json.dumps(cfg.to_dict())],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            held = Path(child.stdout.readline().strip())
            assert held.name.startswith("slot-") and held / "conn" in conn_mounts()
            dead_owners_tmpfs = os.stat(held / "conn").st_dev
        finally:
            child.kill()  # SIGKILL: no cleanup of its own
            child.wait()
        assert held / "conn" in conn_mounts()  # left behind by the dead owner
        second.close()  # the next sandbox claims this lower slot, not the dead owner's
        with JupyterSandbox(cfg) as third:
            assert third._slot is not None
            if third._slot.dir != held:  # the dead owner's slot was swept, not reused
                assert held / "conn" not in conn_mounts(), "the dead owner's tmpfs is still mounted"
                assert not held.exists()
            else:  # slot numbers are machine-wide: another mathagent process took the lower one
                assert conn_mounts().count(held / "conn") == 1  # the dead owner's went before a new one
                assert os.stat(held / "conn").st_dev != dead_owners_tmpfs
            assert third.run("6 * 7").result == "42"


def test_the_connection_dir_is_small_fresh_and_host_owned(config, require_level):
    require_level(FULL, "a bounded host-owned tmpfs for connection files (needs root)")
    with KernelPool(size=1, config=config) as pool:
        a = pool.acquire()
        slot, conn_dir = a._slot.index, a._slot.conn_dir
        r = a.run(FILL_CONN, timeout=60)
        assert r.ok, r
        written = int(r.stdout.split()[0])
        assert written <= config.conn_kb * 1024, f"{written} bytes landed in the connection dir"
        st = os.statvfs(conn_dir)
        assert st.f_blocks * st.f_frsize <= config.conn_kb * 1024  # a tmpfs of its own, not host disk
        a.close()
        assert os.listdir(conn_dir) == []  # removed at kill
        pool.acquire().close()  # the slot started while A ran
        b = pool.acquire()
        try:
            assert b._slot.index == slot  # same slot, started fine after chmod 0
            r = b.run(SEE_CONN)
            assert r.stdout.strip() == "[]", r
        finally:
            b.close()


def test_connection_files_are_written_without_following_links(config, tmp_path):
    from mathagent.sandbox.kernel import _write_new_file

    target = tmp_path / "victim"
    target.write_text("keep")
    link = tmp_path / "k1.json"
    link.symlink_to(target)
    with pytest.raises(OSError):
        _write_new_file(link, b"{}", None)
    assert target.read_text() == "keep"
    (tmp_path / "k2.json").write_text("old")
    with pytest.raises(FileExistsError):
        _write_new_file(tmp_path / "k2.json", b"{}", None)


# -- cleanup between trajectories ------------------------------------------------------------------

DEEP_AND_EVERYWHERE = r"""
import os
d = "deep"
os.makedirs(d)
cwd = os.getcwd()
os.chdir(d)
for i in range(1200):  # deeper than RLIMIT_NOFILE: an fd-per-level rmtree gives up
    os.mkdir("d")
    os.chdir("d")
open("bottom", "w").write("x")
os.chdir(cwd)
for place in ("/tmp", "/dev/shm", os.environ.get("IPYTHONDIR", ".")):
    try:
        open(os.path.join(place, "left_by_a"), "w").write("x")
    except OSError:
        pass
print("ok")
"""


def test_a_tree_deeper_than_the_fd_limit_is_removed_and_every_place_emptied(config, require_level):
    require_level(REDUCED, "emptying the work dir under RLIMIT_NOFILE")
    with KernelPool(size=1, config=config) as pool:
        a = pool.acquire()
        slot = a._slot.index
        r = a.run(DEEP_AND_EVERYWHERE, timeout=60)
        assert r.stdout == "ok\n", r
        a.close()
        pool.acquire().close()
        b = pool.acquire()
        try:
            assert b._slot.index == slot
            places = ["'.'"] + (["'/tmp'", "'/dev/shm'", "os.environ['IPYTHONDIR']"] if b.plan.bwrap else [])
            r = b.run(
                "import os\nprint([p for p in (" + ", ".join(places) + ",) "
                "for n in os.listdir(p) if n in ('deep', 'left_by_a')])",
                timeout=30,
            )
            assert r.stdout.strip() == "[]", r
        finally:
            b.close()


def test_a_slot_that_cannot_be_emptied_is_not_reused(config, require_level):
    require_level(FULL, "a mount inside the sandbox made from the host (needs root and bubblewrap)")
    with KernelPool(size=1, config=config) as pool:
        a = pool.acquire()
        z = a._zygote
        assert a.run("import os\nos.mkdir('/work/stuck')\nopen('/tmp/left_by_a', 'w').write('x')").ok
        # something the zygote cannot remove: a mount point (made by root on the host, in the sandbox)
        subprocess.run(
            ["nsenter", "-t", str(z.pid), "-m", "mount", "-t", "tmpfs", "none", "/work/stuck"], check=True
        )
        a.close()
        pool.acquire().close()
        b = pool.acquire()
        try:
            assert b._zygote is not z and not z.alive()  # a fresh sandbox, not the dirty one
            r = b.run("import os\nprint(os.listdir('/work'), os.path.exists('/tmp/left_by_a'))")
            assert r.stdout == "[] False\n", r
        finally:
            b.close()


def test_tmp_and_shm_and_every_writable_place_have_a_size(config, require_level):
    require_level(FULL, "private sized tmpfs mounts (bubblewrap)")
    with JupyterSandbox(config) as sb:
        r = sb.run(
            "import os\nout = {}\n"
            "for d in ('/', '/tmp', '/dev', '/dev/shm', '/work', '/ipython', '/conn', '/etc', '/usr', '/proc', '/run', '/var'):\n"
            "    if os.path.isdir(d) and os.access(d, os.W_OK):\n"
            "        st = os.statvfs(d)\n"
            "        out[d] = st.f_blocks * st.f_frsize\n"
            "print(out)"
        )
        sizes = eval(r.stdout)  # noqa: S307 - a dict literal printed by the cell
        limits = {
            "/tmp": config.tmp_mb * MB,
            "/dev/shm": config.shm_mb * MB,
            "/work": config.workdir_mb * MB,
            "/ipython": 4 * MB,
        }
        assert set(sizes) <= set(limits), f"writable without a size: {set(sizes) - set(limits)}"
        for d, size in sizes.items():
            assert size <= limits[d], (d, size)


# -- seccomp ---------------------------------------------------------------------------------------

SYSCALL = "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"


def _seccomp(sb, require_level) -> None:
    require_level(REDUCED, "seccomp")
    if not sb.plan.seccomp:
        pytest.skip("seccomp is not available here: " + sb.report.missing_reasons.get("seccomp", ""))


@pytest.mark.parametrize(
    "name, code, expect",
    [
        (
            "clone_new_user_net",
            # raw clone(CLONE_NEWUSER | CLONE_NEWNET | SIGCHLD); a child that got through exits at once
            SYSCALL + "r = libc.syscall(56, 0x10000000 | 0x40000000 | 17, 0, 0, 0, 0)\n"
            "if r == 0:\n    os._exit(0)\nprint(r, ctypes.get_errno())",
            "-1 1",
        ),
        (
            "clone_new_pid",
            SYSCALL + "r = libc.syscall(56, 0x20000000 | 17, 0, 0, 0, 0)\n"
            "if r == 0:\n    os._exit(0)\nprint(r, ctypes.get_errno())",
            "-1 1",
        ),
        (
            "clone3",
            SYSCALL + "buf = ctypes.create_string_buffer(88)\n"
            "r = libc.syscall(435, buf, 88)\nif r == 0:\n    os._exit(0)\nprint(r, ctypes.get_errno())",
            "-1 38",
        ),
        (
            "io_uring_setup",
            SYSCALL + "p = ctypes.create_string_buffer(120)\n"
            "print(libc.syscall(425, 8, p), ctypes.get_errno())",
            "-1 1",
        ),
        (
            "af_vsock",
            "import socket\ntry:\n    socket.socket(40, socket.SOCK_STREAM)\n    print('open')\n"
            "except OSError as e:\n    print(-1, e.errno)",
            "-1 1",
        ),
    ],
)
def test_seccomp_closes_namespace_and_kernel_attack_surface(name, code, expect, sb, require_level):
    _seccomp(sb, require_level)
    r = sb.run(code)
    assert r.stdout.strip() == expect, (name, r)


def test_threads_forks_and_subprocesses_still_work_under_the_filter(sb, require_level):
    _seccomp(sb, require_level)
    r = sb.run(
        "import threading, subprocess, os\nout = []\nt = threading.Thread(target=lambda: out.append(1))\n"
        "t.start(); t.join()\npid = os.fork()\nif pid == 0:\n    os._exit(7)\n"
        "print(out, os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), subprocess.run(['true']).returncode)"
    )
    assert r.stdout == "[1] 7 0\n", r


# -- output that would break the host --------------------------------------------------------------

SIGNED_SURROGATE = r"""
import json
k = get_ipython().kernel
s = k.session
pack = s.pack
s.pack = lambda o: json.dumps(o, default=str).encode()  # escapes: a lone surrogate survives the trip
try:
    s.send(k.iopub_socket, "stream", {"name": "stdout", "text": "bad \ud800 text\n"}, parent=k.get_parent())
    s.send(k.iopub_socket, "error", {"ename": "E\ud800", "evalue": "v\udfff", "traceback": ["t\ud800"]},
           parent=k.get_parent())
finally:
    s.pack = pack
import time; time.sleep(0.3)
"""


def test_every_string_that_leaves_the_sandbox_is_valid_utf8(config, require_level):
    require_level(NONE, "signed messages with lone surrogates")
    with JupyterSandbox(config) as sb:
        r = sb.run(SIGNED_SURROGATE)
        assert "bad" in r.stdout, r
        json.dumps(r.to_dict(), ensure_ascii=False).encode()  # what traces and run folders do
        assert "\ufffd" in r.stdout


CONTROL_SEQUENCES = (
    "import sys\nESC = chr(27)\n"
    "print(ESC + ']0;pwned title' + chr(7) + ESC + ']52;c;ZXZpbA==' + chr(7) + ESC + '[2J' + ESC + '[1;1H' + 'ok')\n"
    "print(ESC + '[31mred' + ESC + '[0m', file=sys.stderr)\n"
    "class R:\n    def __repr__(self):\n        return ESC + ']52;c;ZXZpbA==' + chr(7) + 'value'\n"
    "R()"
)


def test_terminal_control_sequences_never_leave_the_sandbox(sb, require_level):
    require_level(NONE, "terminal control sequences")
    r = sb.run(CONTROL_SEQUENCES)
    assert (r.stdout, r.stderr, r.result) == ("ok\n", "red\n", "value"), r
    r = sb.run("raise ValueError(chr(27) + ']52;c;ZXZpbA==' + chr(7) + 'boom' + chr(155) + '2J')")
    assert r.error is not None and r.error.evalue == "boom", r.error
    assert "\x1b" not in r.error.traceback and "\x9b" not in r.error.traceback


def test_the_output_cap_counts_bytes_not_characters(sb, require_level):
    require_level(NONE, "output cap")
    r = sb.run("'😀' * (2**20)")  # 1 Mi characters, 4 MiB
    cap = sb.config.output_cap_bytes
    assert r.truncated and len(r.result.encode()) <= cap and r.output_bytes >= 4 * 2**20, r.output_bytes


# -- forged replies --------------------------------------------------------------------------------

FORGED_IDLE = r"""
import time
k = get_ipython().kernel
parent = k.get_parent()
k.session.send(k.iopub_socket, "status", {"execution_state": "idle"}, parent=parent)
k.session.send(k.iopub_socket, "status", {"execution_state": "idle"}, parent={"msg_id": "other"})
k.session.send(k.iopub_socket, "stream", {"name": "stdout", "text": "forged\n"}, parent={"msg_id": "x"})
time.sleep(1.5)
print("real")
"""


def test_a_forged_idle_status_does_not_end_the_cell(sb, require_level):
    require_level(NONE, "forged iopub status")
    r = sb.run(FORGED_IDLE, timeout=10)
    assert r.stdout == "real\n" and r.wall_s >= 1.4, r
    assert sb.run("6 * 7").result == "42"


FORGED_REPLY = r"""
import time
k = get_ipython().kernel
parent = k.get_parent()
# a correctly signed execute_reply for this very request, on the shell socket, while the cell runs on
k.session.send(k.shell_stream, "execute_reply", {"status": "ok", "execution_count": 1},
               parent=parent, ident=k._parent_ident.get("shell"))
k.session.send(k.iopub_socket, "stream", {"name": "stdout", "text": "forged\n"}, parent={"msg_id": "x"})
time.sleep(1.5)
print("real")
"""


def test_a_forged_shell_reply_does_not_end_the_cell(sb, require_level):
    require_level(NONE, "forged shell reply")
    r = sb.run(FORGED_REPLY, timeout=10)
    assert r.ok and r.stdout == "real\n" and r.wall_s >= 1.4, r
    assert sb.run("6 * 7").result == "42"


# -- a stopped zygote ------------------------------------------------------------------------------


def test_a_stopped_zygote_is_noticed_at_once_and_replaced(config, require_level):
    require_level(NONE, "SIGSTOP to the zygote")
    cfg = config.with_(start_timeout_s=120.0)  # what a stopped zygote used to cost every later run
    with JupyterSandbox(cfg) as sb:
        z = sb._zygote
        t0 = time.monotonic()
        r = sb.run("import os, signal\nos.kill(os.getppid(), signal.SIGSTOP)\nos._exit(0)", timeout=10)
        assert r.kernel_restarted and r.error is not None and r.error.ename == "KernelDied", r
        assert sb.run("6 * 7", timeout=10).result == "42"
        assert time.monotonic() - t0 < 80, "waited out the start timeout"
        assert sb._zygote is not z and not z.alive()
    with KernelPool(size=1, config=cfg) as pool:
        a = pool.acquire()
        za = a._zygote
        a.run("import os, signal\nos.kill(os.getppid(), signal.SIGSTOP)")
        a.close()  # not kept for reuse
        t0 = time.monotonic()
        with pool.acquire() as b:
            assert b._zygote is not za and b.run("6 * 7").result == "42"
        assert time.monotonic() - t0 < 80


# -- small leaks -----------------------------------------------------------------------------------

ORPHANS = r"""
import os
n = 0
for _ in range(300):
    pid = os.fork()
    if pid == 0:
        if os.fork() == 0:
            os._exit(0)  # the grandchild: an orphan the zygote reaps and reports
        os._exit(0)
    os.waitpid(pid, 0)
    n += 1
print(n)
"""


def test_the_exit_map_stays_bounded_under_fork_churn(config, require_level):
    require_level(NONE, "orphans reaped by the zygote")
    with JupyterSandbox(config) as sb:
        r = sb.run(ORPHANS, timeout=300)  # forks are slow on a loaded machine
        assert r.stdout == "300\n", r
        assert EXITS_KEPT < 300
        time.sleep(0.5)
        assert len(sb._zygote.exits) <= EXITS_KEPT


def test_proc_shows_no_host_paths_or_boot_command_line(config, require_level):
    require_level(FULL, "a pid and mount namespace (bubblewrap)")
    with JupyterSandbox(config) as sb:
        r = sb.run(
            "import json\nout = {}\nfor p in ('/proc/1/cmdline', '/proc/cmdline', '/proc/self/mountinfo'):\n"
            "    try:\n        out[p] = open(p, 'rb').read().decode('utf-8', 'replace')\n"
            "    except OSError as e:\n        out[p] = 'blocked'\nprint(json.dumps(out))"
        )
        seen = json.loads(r.stdout)
        assert seen["/proc/cmdline"] in ("", "blocked"), seen["/proc/cmdline"][:200]
        for path, text in seen.items():
            assert str(config.base_dir) not in text and "slot-" not in text, (path, text[:2000])
