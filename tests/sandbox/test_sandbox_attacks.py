"""Hostile snippets, each with the safe outcome it must get and the lowest level that guarantees it.

A case whose level this machine cannot reach is SKIPPED with the reason, never passed. Cases that
cannot damage a kernel share one; the others get a fresh sandbox. After every case the sandbox must
still answer, and the host (this test process, a sentinel process, host files) must be untouched.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from mathagent.sandbox.base import ExecResult, IsolationLevel
from mathagent.sandbox.kernel import JupyterSandbox

pytestmark = pytest.mark.kernel

FULL, REDUCED, NONE = IsolationLevel.FULL, IsolationLevel.REDUCED, IsolationLevel.NONE
FAKE_KEY = "sk-FAKE-4b1d-never-visible-in-the-sandbox"
REPO = Path(__file__).resolve().parents[2]
SITE = next(p for p in sys.path if p.endswith("site-packages"))


@dataclass
class Ctx:
    sb: JupyterSandbox
    port: int
    hits: list[int]
    sentinel: subprocess.Popen
    bash_stat: tuple[int, int]


@dataclass(frozen=True)
class Case:
    name: str
    level: IsolationLevel
    code: str
    check: Callable[[ExecResult, Ctx], None]
    fresh: bool = False
    timeout: float = 5.0


def blocked(stmt: str) -> str:
    """Code that runs ``stmt`` and prints whether it was blocked."""
    body = "\n".join("    " + line for line in stmt.splitlines())
    return f"try:\n{body}\n    print('NOT BLOCKED')\nexcept BaseException as e:\n    print('blocked:', type(e).__name__, e)"


def is_blocked(r: ExecResult, ctx: Ctx) -> None:
    assert "blocked:" in r.stdout and "NOT BLOCKED" not in r.stdout, r


def no_secret(r: ExecResult, ctx: Ctx) -> None:
    text = r.stdout + r.stderr + (r.result or "") + (r.error.evalue if r.error else "")
    assert FAKE_KEY not in text and "JPY_PARENT_PID" not in text, r


def timed_out(restarted: bool | None = None) -> Callable[[ExecResult, Ctx], None]:
    def check(r: ExecResult, ctx: Ctx) -> None:
        assert r.timed_out, r
        if restarted is not None:
            assert r.kernel_restarted is restarted, r

    return check


def error(*names: str) -> Callable[[ExecResult, Ctx], None]:
    def check(r: ExecResult, ctx: Ctx) -> None:
        assert r.error is not None and r.error.ename.endswith(names), r

    return check


def died_or_error(*names: str) -> Callable[[ExecResult, Ctx], None]:
    def check(r: ExecResult, ctx: Ctx) -> None:
        assert r.kernel_restarted or (r.error is not None and r.error.ename.endswith(names)), r

    return check


def prints(expected: str) -> Callable[[ExecResult, Ctx], None]:
    def check(r: ExecResult, ctx: Ctx) -> None:
        assert expected in r.stdout, r

    return check


def truncated(r: ExecResult, ctx: Ctx) -> None:
    cap = ctx.sb.config.output_cap_bytes
    assert r.truncated and len(r.stdout.encode()) + len(r.stderr.encode()) <= cap, r.output_bytes


def flood_stopped(r: ExecResult, ctx: Ctx) -> None:
    truncated(r, ctx)
    assert r.error is not None, r
    if r.error.ename == "KernelDied":
        # Under heavy load the kernel can outrun the reader and hit its memory limit before the flood
        # check fires: the cgroup's OOM kill is then what stops it, and the kernel is replaced.
        # Without a memory cgroup (reduced level) the address-space rlimit stops it instead: the
        # kernel dies of a failed allocation, with no OOM record to name.
        cg = ctx.sb._slot.cgroup
        has_memory_cgroup = cg is not None and "memory" in cg.controllers
        assert r.kernel_restarted, r
        assert "out of memory" in r.error.evalue or not has_memory_cgroup, r.error
    else:
        assert r.error.ename in ("OutputLimitExceeded", "TimeoutError"), r.error


def survived(r: ExecResult, ctx: Ctx) -> None:
    assert not r.kernel_restarted, r


def anything(r: ExecResult, ctx: Ctx) -> None:
    """Only the common post-conditions matter (sandbox answers, host untouched)."""


def host_listener_untouched(r: ExecResult, ctx: Ctx) -> None:
    is_blocked(r, ctx)
    assert ctx.hits == [], "the host listener was reached from the sandbox"


def bash_untouched(r: ExecResult, ctx: Ctx) -> None:
    is_blocked(r, ctx)
    st = os.stat("/bin/bash")
    assert (st.st_size, st.st_mtime_ns) == ctx.bash_stat


def repo_untouched(r: ExecResult, ctx: Ctx) -> None:
    is_blocked(r, ctx)
    assert not (REPO / "PWNED").exists()


def strays_gone(r: ExecResult, ctx: Ctx) -> None:
    timed_out()(r, ctx)  # interrupted (strays killed) or, when SIGINT was not enough, replaced
    cg = ctx.sb._slot.cgroup
    if cg is not None:
        assert len(cg.pids()) <= 4, cg.pids()  # bwrap, its pid-namespace init, the zygote, the kernel


def fork_count_bounded(r: ExecResult, ctx: Ctx) -> None:
    n = int(r.stdout.split()[0])
    assert n < ctx.sb.config.pids_max and "BlockingIOError" in r.stdout or "OSError" in r.stdout, r


def listen_unreachable(r: ExecResult, ctx: Ctx) -> None:
    assert "listening" in r.stdout, r
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", 47913), timeout=1).close()


LIBC = "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"

CASES = [
    # -- stopped by the timeout / output machinery at any level
    Case("infinite_loop", NONE, "while True:\n    pass", timed_out(False), timeout=1.5),
    Case("sleep_forever", NONE, "import time\ntime.sleep(1000)", timed_out(False), timeout=1.5),
    Case(
        "catastrophic_regex",
        NONE,
        "import re\nre.match(r'(a+)+$', 'a' * 40 + 'b')",
        timed_out(False),
        timeout=1.5,
    ),
    Case(
        "huge_int_power",
        NONE,
        "x = 10 ** (10 ** 10)",
        lambda r, c: r.timed_out or error("MemoryError")(r, c),
        timeout=1.5,
    ),
    Case("huge_int_to_str", NONE, "str(2 ** 1_000_000)", error("ValueError")),
    Case("deep_recursion", NONE, "def f(n):\n    return f(n + 1)\nf(0)", error("RecursionError")),
    Case("output_flood_loop", NONE, "while True:\n    print('x' * 10000)", flood_stopped),
    Case(
        "stderr_flood_loop", NONE, "import sys\nwhile True:\n    sys.stderr.write('e' * 10000)", flood_stopped
    ),
    Case("single_huge_print", NONE, "print('x' * (16 * 2**20))", truncated),
    Case("stdin_request", NONE, "input('password: ')", error("StdinNotImplementedError")),
    Case("sys_exit", NONE, "import sys\nsys.exit(3)", survived),
    Case(
        "raw_bytes_to_fd",
        NONE,
        "import os\nos.write(1, bytes(range(256)))\nos.write(2, b'\\xff\\xfe')",
        survived,
    ),
    Case(
        "sigint_ignored",
        NONE,
        "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass",
        timed_out(True),
        fresh=True,
        timeout=1.5,
    ),
    Case(
        "keyboardinterrupt_swallowed",
        NONE,
        "while True:\n    try:\n        while True:\n            pass\n    except KeyboardInterrupt:\n        pass",
        timed_out(True),
        fresh=True,
        timeout=1.5,
    ),
    Case(
        "recursion_limit_raised",
        NONE,
        "import sys\nsys.setrecursionlimit(10**7)\ndef f(n):\n    return f(n + 1)\nf(0)",
        died_or_error("RecursionError", "MemoryError"),
        fresh=True,
    ),
    Case(
        "os_abort",
        NONE,
        "import os\nos.abort()",
        lambda r, c: r.kernel_restarted or pytest.fail(str(r)),
        fresh=True,
    ),
    Case(
        "segfault",
        NONE,
        "import ctypes\nctypes.string_at(0)",
        lambda r, c: r.kernel_restarted or pytest.fail(str(r)),
        fresh=True,
    ),
    Case(
        "background_thread_printing",
        NONE,
        "import threading, time\ndef spam():\n    while True:\n        print('bg')\n        time.sleep(0.01)\n"
        "threading.Thread(target=spam, daemon=True).start()",
        anything,
        fresh=True,
    ),
    # -- stopped by rlimits and the scrubbed environment
    Case("memory_bomb", REDUCED, "x = bytearray(100 * 2**30)", error("MemoryError")),
    Case(
        "numpy_memory_bomb",
        REDUCED,
        "import numpy as np\nx = np.ones((200000, 200000))",
        error("MemoryError"),
    ),
    Case(
        "memory_growth",
        REDUCED,
        "chunks = []\nwhile True:\n    chunks.append(b'x' * (64 * 2**20))",
        died_or_error("MemoryError"),
        fresh=True,
        timeout=20,
    ),
    Case("env_secret", REDUCED, "import os\nprint(os.environ.get('OPENAI_API_KEY'))", no_secret),
    Case("env_dump", REDUCED, "import os\nprint(dict(os.environ))", no_secret),
    Case(
        "fd_exhaustion",
        REDUCED,
        "fs = []\ntry:\n    while True:\n        fs.append(open('/dev/null'))\nexcept OSError as e:\n    print('blocked:', e)\n"
        "finally:\n    [f.close() for f in fs]\n    print(len(fs))",
        prints("blocked:"),
    ),
    Case(
        "disk_fill_one_file",
        REDUCED,
        blocked("with open('big.bin', 'wb') as f:\n    for _ in range(4096):\n        f.write(b'0' * 2**20)")
        + "\nimport os\nos.path.exists('big.bin') and os.remove('big.bin')",
        is_blocked,
        timeout=20,
    ),
    # -- needs the full sandbox (namespaces, read-only system, uid drop, cgroups)
    Case(
        "disk_fill_many_files",
        FULL,
        blocked(
            "for i in range(64):\n    with open(f'fill{i}.bin', 'wb') as f:\n        f.write(b'0' * 200 * 2**20)"
        )
        + "\nimport glob, os\n[os.remove(p) for p in glob.glob('fill*.bin')]",
        is_blocked,
        fresh=True,
        timeout=30,
    ),
    Case("read_etc_shadow", FULL, blocked("print(open('/etc/shadow').read())"), is_blocked),
    Case(
        "read_parent_environ",
        FULL,
        "import os\nfor pid in (os.getppid(), 1):\n    try:\n        print(open(f'/proc/{pid}/environ', 'rb').read())\n"
        "    except OSError as e:\n        print('blocked:', e)",
        no_secret,
    ),
    Case(
        "scan_all_environ",
        FULL,
        "import os\nfor p in os.listdir('/proc'):\n    if p.isdigit():\n        try:\n"
        "            print(p, open(f'/proc/{p}/environ', 'rb').read())\n        except OSError:\n            pass",
        no_secret,
    ),
    Case(
        "ssh_keys",
        FULL,
        blocked("import os\nprint(os.listdir('/root/.ssh'), os.listdir(os.path.expanduser('~/.ssh')))"),
        is_blocked,
    ),
    Case("read_host_repo", FULL, blocked(f"print(open('{REPO}/pyproject.toml').read()[:50])"), is_blocked),
    Case("write_usr", FULL, blocked("open('/usr/evil', 'w').write('x')"), is_blocked),
    Case(
        "overwrite_bin_bash",
        FULL,
        blocked("open('/bin/bash', 'wb').write(b'#!/bin/sh\\necho pwned')"),
        bash_untouched,
    ),
    Case("write_host_repo", FULL, blocked(f"open('{REPO}/PWNED', 'w').write('x')"), repo_untouched),
    Case("write_site_packages", FULL, blocked(f"open('{SITE}/pwned.py', 'w').write('x')"), is_blocked),
    Case(
        "write_etc_passwd",
        FULL,
        blocked("open('/etc/passwd', 'a').write('evil::0:0::/:/bin/sh')"),
        is_blocked,
    ),
    Case(
        "socket_to_host_listener",
        FULL,
        blocked("import socket\nsocket.create_connection(('127.0.0.1', PORT), timeout=2).send(b'hi')"),
        host_listener_untouched,
    ),
    Case("dns_lookup", FULL, blocked("import socket\nsocket.getaddrinfo('example.com', 443)"), is_blocked),
    Case(
        "outbound_connection",
        FULL,
        blocked("import socket\nsocket.create_connection(('8.8.8.8', 53), timeout=2)"),
        is_blocked,
    ),
    Case(
        "listen_for_host",
        FULL,
        "import socket\nsrv = socket.socket()\nsrv.bind(('0.0.0.0', 47913))\nsrv.listen()\nprint('listening')",
        listen_unreachable,
    ),
    Case(
        "fork_count",
        FULL,
        "import os, time\nn = 0\nerr = None\nfor _ in range(5000):\n    try:\n        pid = os.fork()\n"
        "    except OSError as e:\n        err = e\n        break\n    if pid == 0:\n        time.sleep(60)\n        os._exit(0)\n"
        "    n += 1\nprint(n, type(err).__name__)",
        fork_count_bounded,
        fresh=True,
        timeout=20,
    ),
    Case(
        "fork_bomb",
        FULL,
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
        strays_gone,
        fresh=True,
        timeout=2,
    ),
    Case(
        "background_process_after_timeout",
        FULL,
        "import subprocess, time\nsubprocess.Popen(['sleep', '1000'], start_new_session=True)\ntime.sleep(1000)",
        strays_gone,
        fresh=True,
        timeout=1.5,
    ),
    Case("kill_everything", FULL, "import os\nos.kill(-1, 9)", anything, fresh=True),
    Case(
        "kill_parent",
        FULL,
        "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.kill(1, signal.SIGTERM)",
        anything,
        fresh=True,
    ),
    Case("ptrace_attach", FULL, LIBC + "print(libc.ptrace(16, 1, 0, 0))", prints("-1")),
    Case("setuid_root", FULL, blocked("import os\nos.setuid(0)"), is_blocked),
    Case("mount_tmpfs", FULL, LIBC + "print(libc.mount(b'none', b'/work', b'tmpfs', 0, None))", prints("-1")),
    Case("unshare_namespaces", FULL, LIBC + "print(libc.unshare(0x10000000 | 0x20000))", prints("-1")),
    Case("sethostname", FULL, blocked("import socket\nsocket.sethostname('pwned')"), is_blocked),
    Case(
        "cgroup_escape",
        FULL,
        blocked("import os\nopen('/sys/fs/cgroup/memory/cgroup.procs', 'w').write(str(os.getpid()))"),
        is_blocked,
    ),
    Case(
        "raw_memory_devices",
        FULL,
        blocked("open('/dev/mem', 'rb').read(1)\nopen('/proc/kcore', 'rb').read(1)"),
        is_blocked,
    ),
    Case("raise_priority", FULL, blocked("import os\nos.nice(-10)"), is_blocked),
    Case(
        "raw_socket",
        FULL,
        blocked("import socket\nsocket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)"),
        is_blocked,
    ),
]


@pytest.fixture(scope="module")
def host():
    """A loopback listener that records connections, a sentinel host process, and a fake API key."""
    old = os.environ.get("OPENAI_API_KEY")
    os.environ["OPENAI_API_KEY"] = FAKE_KEY
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    srv.settimeout(0.2)
    hits: list[int] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
                hits.append(1)
                conn.close()
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    sentinel = subprocess.Popen(["sleep", "3600"])
    st = os.stat("/bin/bash")
    yield srv.getsockname()[1], hits, sentinel, (st.st_size, st.st_mtime_ns)
    stop.set()
    t.join()
    srv.close()
    sentinel.kill()
    sentinel.wait()
    if old is None:
        os.environ.pop("OPENAI_API_KEY", None)
    else:
        os.environ["OPENAI_API_KEY"] = old


@pytest.fixture(scope="module")
def shared(host, config):
    os.environ["OPENAI_API_KEY"] = FAKE_KEY
    with JupyterSandbox(config) as s:
        yield s


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_attack(case: Case, host, shared, config, require_level, monkeypatch):
    require_level(case.level, case.name)
    port, hits, sentinel, bash_stat = host
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)  # the autouse fixture removed it
    code = case.code.replace("PORT", str(port))
    if case.fresh:
        with JupyterSandbox(config) as sb:
            _run(case, sb, code, Ctx(sb, port, hits, sentinel, bash_stat))
            pids = sb._slot.cgroup.pids() if sb._slot.cgroup else set()
        deadline = time.monotonic() + 5  # SIGKILLed processes may take a moment to finish exiting
        while [p for p in pids if _running(p)] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [p for p in pids if _running(p)], "processes outlived close()"
    else:
        _run(case, shared, code, Ctx(shared, port, hits, sentinel, bash_stat))
    assert sentinel.poll() is None, "a host process was killed"


def _running(pid: int) -> bool:
    """Alive and not a zombie (this container's init may not reap re-parented processes)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _run(case: Case, sb: JupyterSandbox, code: str, ctx: Ctx) -> None:
    r = sb.run(code, timeout=case.timeout)
    case.check(r, ctx)
    after = sb.run("6 * 7", timeout=10)
    if after.kernel_restarted:  # e.g. `exit`-like attacks noticed on the next cell
        after = sb.run("6 * 7", timeout=10)
    assert after.result == "42", after


def test_at_least_forty_attacks():
    assert len(CASES) >= 40


@pytest.mark.parametrize("probe", ["conn", "work"])
def test_cannot_reach_another_kernels_files(probe, shared, config, require_level):
    require_level(FULL, "reading another kernel's files")
    with JupyterSandbox(config) as other:
        other.run("open('mine.txt', 'w').write('private')")
        target = other._slot.conn_dir if probe == "conn" else other._slot.dir
        r = shared.run(blocked(f"import os\nprint(os.listdir('{target}'))"))
        assert "blocked:" in r.stdout, r
        r = shared.run("import os\nprint(sorted(os.listdir('.')))")
        assert "mine.txt" not in r.stdout
