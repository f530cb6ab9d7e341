"""Kernels forked from a slot's zygote: reused slots must not carry anything from one trajectory to the next."""

from __future__ import annotations

import os
import signal

import pytest
from mathagent.sandbox import JupyterSandbox, KernelPool
from mathagent.sandbox.base import IsolationLevel
from mathagent.sandbox.cgroups import proc_stat

pytestmark = pytest.mark.kernel

LEAVE_TRACES = r"""
import os, subprocess, sys, numpy, sympy
secret = 'from trajectory A'
for d in ('.', '/tmp', '/dev/shm', os.environ.get('IPYTHONDIR', '.')):
    try:
        with open(os.path.join(d, 'left_by_a'), 'w') as f:
            f.write('x')
    except OSError:
        pass
os.makedirs('locked/inner', exist_ok=True)
os.chmod('locked', 0)
sympy.pi = 3                      # monkey-patch a preloaded module
sys.path.insert(0, '/tmp/evil')
child = subprocess.Popen(['sleep', '600'], start_new_session=True)
print(child.pid, numpy.random.randint(0, 2**31), flush=True)
"""

CHECK_CLEAN = r"""
import os, sys, sympy, numpy
seen = []
for d in DIRS:
    try:
        seen += [os.path.join(d, n) for n in os.listdir(d) if n in ('left_by_a', 'locked')]
    except OSError:
        pass
print('secret' in globals(), sympy.pi == 3, '/tmp/evil' in sys.path, seen, numpy.random.randint(0, 2**31))
"""


def _alive(host_pid: int) -> bool:
    st = proc_stat(host_pid)
    return st is not None and st[0] not in ("Z", "X")


def test_a_reused_slot_starts_clean(config):
    with KernelPool(size=1, config=config) as pool:
        a = pool.acquire()
        slot = a._slot.index
        r = a.run(LEAVE_TRACES)
        assert r.ok, r
        sleep_pid, rand_a = (int(x) for x in r.stdout.split())
        cg = a._slot.cgroup
        za = a._zygote
        strays = (cg.pids() if cg else set()) - {a.kernel_pid, za.pid, za.proc.pid, za.ns_init}
        a.close()
        if cg is not None:  # the host killed A's `sleep` at close, before any new kernel in the slot
            assert strays and not any(_alive(p) for p in strays), strays
        pool.acquire().close()  # the slot started while A ran
        b = pool.acquire()
        try:
            assert b._slot.index == slot and pool.slots_started == 2  # A's slot was reused, not restarted
            # without bubblewrap, /tmp and /dev/shm are the host's: only the work dir is private
            dirs = [".", "/tmp", "/dev/shm", "os.environ.get('IPYTHONDIR', '.')"] if b.plan.bwrap else ["."]
            r = b.run(
                CHECK_CLEAN.replace("DIRS", "(" + ", ".join(d if "(" in d else repr(d) for d in dirs) + ",)")
            )
            assert r.ok, r
            *flags, rand_b = r.stdout.rsplit(" ", 1)
            assert " ".join(flags) == "False False False []", r.stdout  # no variable, patch, path or file
            assert int(rand_b) != rand_a  # each fork reseeds numpy's global generator
            if b.plan.bwrap:  # the slot's pid namespace: A's `sleep` would still be listed there
                assert "sleep" not in b.run("import os; print(os.popen('ps -eo comm').read())").stdout
            else:  # no pid namespace: the pid A printed is the host's
                assert not _alive(sleep_pid)
        finally:
            b.close()
            if not b.plan.bwrap:
                for junk in ("/tmp/left_by_a", "/dev/shm/left_by_a"):
                    if os.path.exists(junk):
                        os.unlink(junk)
        assert sleep_pid > 0


def test_a_fresh_kernel_per_trajectory_even_in_the_same_slot(config):
    with KernelPool(size=1, config=config) as pool:
        pids = []
        for _ in range(6):
            with pool.acquire() as sb:
                assert sb.run("'x' in globals()").result == "False"
                sb.run("x = 1")
                pids.append((sb._slot.index, sb.kernel_pid))
        assert len({slot for slot, _ in pids}) == 2 and pool.slots_started == 2  # two slots, taking turns
        assert len(set(pids)) == 6  # six kernel processes


def test_the_kernel_cannot_reach_into_the_zygote(config, require_level):
    require_level(IsolationLevel.FULL, "a non-dumpable zygote under a dropped uid")
    with JupyterSandbox(config) as sb:
        r = sb.run(
            "import os\np = os.getppid()\n"
            "try:\n    open(f'/proc/{p}/mem', 'rb').read(1)\n    print('read')\n"
            "except OSError as e:\n    print(type(e).__name__)\n"
            "print(sorted(os.listdir(f'/proc/{p}/fd')) if os.access(f'/proc/{p}/fd', os.R_OK) else 'no fds')"
        )
        assert r.ok, r
        assert r.stdout.split("\n")[0] in ("PermissionError", "FileNotFoundError"), r.stdout
        assert "no fds" in r.stdout  # the zygote's control pipes are out of reach


def test_killing_the_zygote_loses_only_this_kernel(config):
    with JupyterSandbox(config) as sb:
        z = sb._zygote
        r = sb.run("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nimport time; time.sleep(5)")
        assert r.kernel_restarted and r.error is not None and r.error.ename == "KernelDied"
        assert "killed" in r.error.evalue
        assert sb._zygote is not z and not z.alive()  # a whole new sandbox process was started
        assert sb.run("21 * 2").result == "42"


def test_restarts_fork_from_the_same_zygote(config):
    with JupyterSandbox(config) as sb:
        z = sb._zygote
        first = sb.kernel_pid
        assert sb.run("import time; time.sleep(30)", timeout=0.5).timed_out
        sb.run("import os; os.kill(os.getpid(), 9)")
        sb.reset()
        assert sb._zygote is z and z.alive() and sb.kernel_pid != first
        assert sb.run("'still here'").result == "'still here'"
        assert sb.restarts >= 2


def test_a_pool_replaces_a_slot_whose_zygote_died(config):
    with KernelPool(size=1, config=config) as pool:
        sb = pool.acquire()
        z = sb._zygote
        os.kill(z.pid, signal.SIGKILL)
        sb.close()  # the dead slot is not kept
        with pool.acquire() as sb2:
            assert sb2._zygote is not z
            assert sb2.run("6 * 7").result == "42"


def test_many_asyncio_workers_share_a_pool_after_a_blocking_jupyter_call(config):
    """jupyter_core keeps its event loop in a context variable that asyncio.to_thread copies into every
    worker; a loop left in this thread's context by any blocking jupyter call used to be handed to
    several workers at once ("This event loop is already running")."""
    import asyncio

    from jupyter_core.utils import ensure_event_loop
    from mathagent.sandbox import arun

    ensure_event_loop()  # what any blocking jupyter_client call made from this thread leaves behind

    async def main():
        with KernelPool(size=3, config=config) as pool:

            async def one(i: int):
                sb = await asyncio.to_thread(pool.acquire)
                try:
                    return [await arun(sb, f"print({i} * {j})") for j in range(4)]
                finally:
                    await asyncio.to_thread(sb.close)

            return await asyncio.gather(*(one(i) for i in range(6)))

    for i, rs in enumerate(asyncio.run(main())):
        assert [r.stdout for r in rs] == [f"{i * j}\n" for j in range(4)], rs


def test_free_slots_are_closed_after_their_idle_time(config):
    import time

    with KernelPool(size=1, config=config) as pool:
        pool.idle_ttl_s = 0.5
        sb = pool.acquire()
        slot_dir, z = sb._slot.dir, sb._zygote
        sb.close()
        assert pool._idle and pool._idle[0][0] is z  # kept for the next kernel
        deadline = time.monotonic() + 10
        while (pool._idle or slot_dir.exists()) and time.monotonic() < deadline:
            time.sleep(0.1)  # the slot leaves the list first, then is closed
        assert not pool._idle and not z.alive() and not slot_dir.exists()
        with pool.acquire() as again:  # the ready one is unaffected
            assert again.run("1 + 1").result == "2"


def test_start_threads_follow_the_usable_cpus(monkeypatch):
    import mathagent.sandbox.pool as pool_mod

    monkeypatch.delenv("MATHAGENT_POOL_STARTS", raising=False)
    for cpus, size, want in ((1, 16, 1), (2, 16, 1), (3, 16, 1), (4, 16, 2), (16, 16, 4), (16, 2, 2)):
        monkeypatch.setattr("os.sched_getaffinity", lambda _pid, n=cpus: set(range(n)))
        assert pool_mod.start_threads(size) == want, (cpus, size)
    monkeypatch.setenv("MATHAGENT_POOL_STARTS", "3")  # the environment decides, within the pool's size
    assert (pool_mod.start_threads(16), pool_mod.start_threads(2)) == (3, 2)
    for bad in ("many", "0", "-2"):  # refused with the variable's name, as MATHAGENT_LLAMA_THREADS is
        monkeypatch.setenv("MATHAGENT_POOL_STARTS", bad)
        with pytest.raises(ValueError, match="MATHAGENT_POOL_STARTS must be a whole number >= 1"):
            pool_mod.start_threads(16)


def test_a_cold_pool_starts_new_slots_in_turns_the_first_alone(config, monkeypatch):
    """New slots start at most ``start_threads`` at a time (a start is CPU work) and the first one
    alone (the first kernel comes soonest); kernels are handed out as each is ready."""
    import threading

    import mathagent.sandbox.pool as pool_mod

    lock, active, peak, first, started = threading.Lock(), [0], [0], [], [0]

    class Counting(pool_mod.JupyterSandbox):
        def __init__(self, *args, **kw):
            new = kw.get("_zygote") is None
            if new:
                with lock:
                    active[0] += 1
                    peak[0] = max(peak[0], active[0])
                    if started[0] == 0:  # a start before any slot exists
                        first.append(active[0])
            try:
                super().__init__(*args, **kw)
            finally:
                if new:
                    with lock:
                        active[0] -= 1
                        started[0] += 1

    monkeypatch.setattr(pool_mod, "JupyterSandbox", Counting)
    for turns in (1, 2):
        monkeypatch.setattr(pool_mod, "start_threads", lambda size, n=turns: n)
        active[0], peak[0], first[:], started[0] = 0, 0, [], 0
        with KernelPool(size=3, config=config) as pool:
            sbs = [pool.acquire() for _ in range(3)]
            assert [sb.run("6 * 7").result for sb in sbs] == ["42"] * 3
            for sb in sbs:
                sb.close()
            with pool.acquire() as again:  # from a slot given back
                assert again.run("6 * 7").result == "42"
            assert pool.slots_started >= 3
        assert peak[0] <= turns, turns
        assert first and set(first) == {1}, turns  # the first slot starts alone


def test_waiting_acquires_are_served_in_the_order_they_came(monkeypatch):
    """Kernels go to waiting trajectories first come, first served (no trajectory can lose every race)."""
    import threading
    import time

    import mathagent.sandbox.pool as pool_mod

    gate = threading.Semaphore(0)  # one release = one kernel finishes starting

    class Gated:
        def __init__(self, *_args, **_kw):
            gate.acquire()

        def close(self):
            pass

    monkeypatch.setattr(pool_mod, "JupyterSandbox", Gated)
    served: list[int] = []
    with KernelPool(size=1, config=None) as pool:
        threads = []
        for i in range(6):
            t = threading.Thread(target=lambda i=i: (pool.acquire(), served.append(i)))
            t.start()
            threads.append(t)
            while len(pool._waiting) < i + 1:  # each is queued before the next one comes
                time.sleep(0.005)
        for n in range(6):
            gate.release()
            while len(served) < n + 1:
                time.sleep(0.005)
        for t in threads:
            t.join(timeout=10)
        assert served == list(range(6))
        for _ in range(8):  # let the refill threads through before close
            gate.release()


def test_close_abandons_a_slot_start_in_progress(config, monkeypatch):
    """A closing pool does not wait for a slot that is still starting: the start gives up at once and
    everything it had started is killed. (The zygote's "ready" is held back 10 s here: a slow start.)"""
    import threading
    import time

    import mathagent.sandbox.kernel as kernel_mod

    started: list = []
    real_handle = kernel_mod._Zygote._handle_reply

    def late_ready(self, msg):
        if "ready" in msg:
            started.append(self)
            threading.Timer(10, real_handle, (self, msg)).start()
            return
        real_handle(self, msg)

    monkeypatch.setattr(kernel_mod._Zygote, "_handle_reply", late_ready)
    pool = KernelPool(size=1, config=config)
    deadline = time.monotonic() + 60
    while not started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert started, "no slot start began"
    pool.close()
    assert pool.slots_started == 0  # abandoned, not finished and then closed
    [z] = started
    assert z.proc.poll() is not None and not _alive(z.proc.pid)
