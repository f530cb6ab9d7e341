"""The real kernel: persistence, errors, libraries, unicode, crashes, caps, fresh trajectories."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from mathagent.sandbox import JupyterSandbox, KernelPool, SandboxStartError, arun, model_view
from mathagent.sandbox.base import Sandbox, SandboxProvider

pytestmark = pytest.mark.kernel


def test_state_persists_across_cells(sb):
    assert sb.run("a = 20\nb = 22").ok
    r = sb.run("a + b")
    assert r.result == "42" and r.error is None
    assert r.wall_s > 0 and r.cpu_s is not None
    assert isinstance(sb, Sandbox)


def test_exception_comes_back_with_a_useful_traceback(sb):
    r = sb.run("def f(x):\n    return 1 / x\n\nf(0)")
    assert r.error is not None and r.error.ename == "ZeroDivisionError"
    assert r.error.evalue == "division by zero"
    tb = r.error.traceback
    assert "\x1b" not in tb and "return 1 / x" in tb and "ipykernel" not in tb
    assert model_view(r).endswith("ZeroDivisionError: division by zero")
    assert sb.run("1 + 1").result == "2"  # the kernel is fine afterwards


def test_an_error_whose_iopub_message_is_lost_still_comes_back(config):
    # A cell that floods iopub can make its error message be dropped on the way (PUB sockets drop past
    # their high-water mark); the shell reply still says how the cell ended. Here the kernel is made
    # never to publish errors, so only the reply can carry it.
    with JupyterSandbox(config) as s:
        assert s.run("get_ipython()._showtraceback = lambda *a, **k: None").ok
        r = s.run("raise KeyError('lost on iopub')")
        assert r.error is not None and r.error.ename == "KeyError", r
        assert "lost on iopub" in r.error.evalue
        assert not r.kernel_restarted and s.run("1 + 1").result == "2"


def test_syntax_error(sb):
    r = sb.run("def broken(:\n    pass")
    assert r.error is not None and r.error.ename == "SyntaxError"


def test_sympy_and_numpy(sb):
    r = sb.run(
        "import sympy as sp, numpy as np\nx = sp.symbols('x')\nprint(sp.solve(x**2 - 4, x))\nint(np.arange(10).sum())"
    )
    assert r.ok, r
    assert r.stdout.strip() == "[-2, 2]" and r.result == "45"


def test_unicode_and_non_utf8_output(sb):
    r = sb.run("print('π ≈ 3.14159, ∑ 😀')")
    assert r.stdout == "π ≈ 3.14159, ∑ 😀\n"
    r = sb.run("import sys\nsys.stdout.write('\\udcff ok\\n')")
    assert "ok" in r.stdout  # a lone surrogate does not break the message loop
    r = sb.run("import os\nos.write(1, b'\\xff\\xfe raw\\n')")
    assert sb.run("'alive'").result == "'alive'"


def test_stderr_and_display(sb):
    r = sb.run(
        "import sys\nprint('out')\nprint('err', file=sys.stderr)\nfrom IPython.display import display\ndisplay(7)"
    )
    assert r.stdout.startswith("out\n") and "7" in r.stdout and r.stderr == "err\n"


def test_bad_input_is_a_clear_type_error(sb):
    with pytest.raises(TypeError, match="code must be a str"):
        sb.run(b"print(1)")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        sb.run(None)  # type: ignore[arg-type]


def test_timeout_interrupts_and_keeps_state(sb):
    sb.run("kept = 'yes'")
    r = sb.run("import time\nwhile True:\n    time.sleep(0.01)", timeout=1)
    assert r.timed_out and not r.kernel_restarted and r.error.ename == "TimeoutError"
    assert "interrupted" in model_view(r, timeout_s=1)
    assert sb.run("kept").result == "'yes'"


def test_huge_output_is_capped(sb):
    cap = sb.config.output_cap_bytes
    r = sb.run("for i in range(300000):\n    print('line', i)")
    assert r.truncated and len(r.stdout.encode()) <= cap and r.output_bytes > cap
    view = model_view(r, max_chars=1000)
    assert len(view) < 1100 and "elided" in view and "output truncated" in view


def test_crashed_kernel_is_detected_fast_and_replaced(config):
    with JupyterSandbox(config) as s:
        s.run("x = 1")
        for code in ("import os\nos._exit(1)", "import ctypes\nctypes.string_at(0)"):
            t0 = time.monotonic()
            r = s.run(code, timeout=20)
            assert r.kernel_restarted and r.error.ename == "KernelDied", r
            assert time.monotonic() - t0 < 10  # detected by polling, not by the 20 s timeout
            assert "all variables lost" in model_view(r)
            r = s.run("x")
            assert r.error is not None and r.error.ename == "NameError"  # state lost, kernel usable
        assert s.restarts == 2


def test_next_trajectory_is_unaffected(config):
    with JupyterSandbox(config) as first:
        r = first.run(
            "import math, os\nmath.pi = 3\nos.environ['LEAK'] = '1'\nopen('left.txt', 'w').write('x')\nsecret = 1"
        )
        assert r.ok, r
    with JupyterSandbox(config) as second:
        r = second.run(
            "import math, os\n(math.pi, os.environ.get('LEAK'), os.path.exists('left.txt'), 'secret' in dir())"
        )
        assert r.result == "(3.141592653589793, None, False, False)", r


def test_reset_gives_a_fresh_kernel(config):
    with JupyterSandbox(config) as s:
        s.run("y = 5")
        s.reset()
        assert s.run("y").error.ename == "NameError"


def test_kernel_that_never_starts_fails_with_a_clear_error(config, tmp_path):
    bad = config.with_(start_timeout_s=3.0, extra_env=(("PYTHONPATH", "/nonexistent"),))
    # a kernel whose boot script cannot find ipykernel: simulate by a broken interpreter flag
    import mathagent.sandbox.launch as launch

    saved = launch.BOOT
    launch.BOOT = "import sys; sys.exit('no kernel here')"
    try:
        t0 = time.monotonic()
        with pytest.raises(SandboxStartError, match="kernel did not start"):
            JupyterSandbox(bad)
        assert time.monotonic() - t0 < 10
        launch.BOOT = "import time; time.sleep(60)"
        with pytest.raises(SandboxStartError, match="start_timeout_s"):
            JupyterSandbox(bad)
    finally:
        launch.BOOT = saved


def test_pool_hands_out_fresh_kernels_and_closes(config):
    dirs = []
    with KernelPool(size=2, config=config) as pool:
        assert isinstance(pool, SandboxProvider)
        a = pool.acquire()
        b = pool.acquire()
        dirs += [a._slot.dir, b._slot.dir]
        try:
            a.run("v = 'a'")
            assert b.run("'v' in dir()").result == "False"
            assert a.kernel_pid != b.kernel_pid
        finally:
            a.close()
            b.close()
        c = pool.acquire()  # refilled in the background
        dirs.append(c._slot.dir)
        with c:
            assert c.run("2 ** 10").result == "1024"
    assert not any(d.exists() for d in dirs)  # closed sandboxes leave nothing behind


def test_arun_from_an_event_loop(sb):
    async def main():
        return await asyncio.gather(arun(sb, "6 * 7"), asyncio.sleep(0))

    r, _ = asyncio.run(main())
    assert r.result == "42"


def test_stale_slots_of_a_killed_run_are_swept(config, tmp_path):
    import signal
    import subprocess
    import sys

    base = tmp_path / "sandboxes"
    script = (
        "import sys, time\nfrom mathagent.sandbox import JupyterSandbox, SandboxConfig\n"
        f"sb = JupyterSandbox(SandboxConfig(base_dir=__import__('pathlib').Path({str(base)!r}), level={config.level!r}))\n"
        "print(sb._slot.index, flush=True)\ntime.sleep(600)\n"
    )
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        index = int(owner.stdout.readline())
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    slot_dir = base / f"slot-{index}"
    assert slot_dir.exists()  # left behind by the killed owner
    from mathagent.sandbox.isolation import make_plan
    from mathagent.sandbox.slots import sweep

    plan = make_plan(config)
    uid_base = config.uid_base if plan.drop_uid else None
    assert sweep(base, uid_base, plan.cgroups) >= 1
    assert not slot_dir.exists()
    for c in plan.cgroups:
        assert not Path(f"/sys/fs/cgroup/{c}/mathagent-sandbox/slot-{index}").exists()
    with JupyterSandbox(config.with_(base_dir=base)) as sb:  # the base dir is usable again
        assert sb.run("1").result == "1"


def test_cli_check_json(capsys):
    import json

    from mathagent.sandbox.cli import main

    assert main(["check", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["level"] in ("full", "reduced", "none")
    assert doc["selftest"]["cell_ok"] is True and doc["selftest"]["timeout_stopped"] is True
    assert set(doc["protections"]) >= {"network_namespace", "unprivileged_uid", "scrubbed_env"}
    if doc["level"] == "full":
        assert doc["selftest"]["network"] == "blocked"


def test_waiting_for_a_turn_does_not_count_against_the_timeout(config):
    import threading

    one_at_a_time = config.with_(max_concurrent_cells=1)
    with JupyterSandbox(one_at_a_time) as a, JupyterSandbox(one_at_a_time) as b:
        first = threading.Thread(target=lambda: a.run("import time\ntime.sleep(1.5)", timeout=5))
        first.start()
        time.sleep(0.3)  # a now holds the only turn
        r = b.run("'done'", timeout=0.5)  # waits ~1.2 s for its turn, then runs well within 0.5 s
        first.join()
        assert r.result == "'done'" and not r.timed_out, r


def test_interrupt_from_another_thread_stops_the_cell_and_keeps_the_state(config):
    import threading

    with JupyterSandbox(config=config) as box:
        box.run("kept = 7")
        timer = threading.Timer(1.0, box.interrupt)
        timer.start()
        t0 = time.monotonic()
        r = box.run("import time\ntime.sleep(30)", timeout=20)
        timer.join()
        assert time.monotonic() - t0 < 15  # far from the 30 s sleep and the 20 s timeout
        assert r.error is not None and r.error.ename == "KeyboardInterrupt" and not r.kernel_restarted
        assert box.run("print(kept)").stdout == "7\n"  # the kernel and its state survive


def test_acquire_fails_at_once_when_the_pool_closes_meanwhile(config):
    import threading

    pool = KernelPool(size=1, config=config)
    first = pool.acquire()  # the pool is now empty and refilling
    outcome: list[BaseException] = []

    def waiter() -> None:
        try:
            while True:  # drain whatever the refill thread produces until close() stops it
                pool.acquire().close()
        except BaseException as e:  # noqa: BLE001
            outcome.append(e)

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.5)
    pool.close()
    t.join(timeout=10)
    first.close()
    assert not t.is_alive(), "acquire() kept waiting after close()"
    assert outcome and isinstance(outcome[0], RuntimeError) and "closed" in str(outcome[0])
