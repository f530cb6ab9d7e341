"""Cgroup v2 support: which subtree is chosen (pure, on fake hierarchies), the files a slot group
gets, and, on this machine's real unified hierarchy, what it can run here (create a group, move a
process in, read its cpu time, kill it with ``cgroup.kill``, remove it).

What this machine cannot show: its unified hierarchy offers no ``memory``/``pids``/``cpu``
controllers (they are bound to v1), so the enforcement of ``memory.max``, ``pids.max`` and
``cpu.max`` is checked here only as the values written, against the kernel's cgroup-v2
documentation.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from mathagent.sandbox.base import IsolationLevel
from mathagent.sandbox.cgroups import CgroupSetup, unified_mount, v2_setup
from mathagent.sandbox.config import SandboxConfig
from mathagent.sandbox.isolation import Capabilities, make_plan


def _fake_group(d: Path, controllers: str = "", subtree: str = "") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "cgroup.controllers").write_text(controllers + "\n")
    (d / "cgroup.subtree_control").write_text(subtree + "\n")
    (d / "cgroup.procs").write_text("")
    return d


def test_root_uses_a_subtree_of_the_unified_root_with_limits(tmp_path):
    mount = _fake_group(tmp_path / "cg", "cpuset cpu io memory hugetlb pids")
    setup = v2_setup(mount=mount, root=True)
    assert setup is not None and setup.version == 2
    assert setup.parent == mount / "mathagent-sandbox" and setup.how.startswith("v2 root subtree")
    assert set(setup.controllers) == {"memory", "pids", "cpu", "cpuacct"}
    g = setup.group("slot-3")
    g.create(memory_mb=512, pids_max=64, cpu_quota=0.5)
    d = mount / "mathagent-sandbox" / "slot-3"
    # controllers enabled on the way down (cgroup.subtree_control), limits in the slot's own group
    assert set((mount / "cgroup.subtree_control").read_text().split()) >= {"+memory", "+pids", "+cpu"}
    assert "+memory" in (mount / "mathagent-sandbox" / "cgroup.subtree_control").read_text()
    assert (d / "memory.max").read_text() == str(512 * 2**20)
    assert (d / "memory.swap.max").read_text() == "0"
    assert (d / "pids.max").read_text() == "64"
    assert (d / "cpu.max").read_text() == "50000 100000"
    assert g.procs_files() == [str(d / "cgroup.procs")]
    (d / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n")
    (d / "cpu.stat").write_text("usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n")
    assert g.oom_kills() == 2 and g.cpu_s() == pytest.approx(1.5)


def test_an_ordinary_user_uses_the_delegated_group_above_its_own(tmp_path):
    mount = _fake_group(tmp_path / "cg", "memory pids cpu")
    service = "user.slice/user-1000.slice/user@1000.service"
    for part in ("user.slice", "user.slice/user-1000.slice", service):
        _fake_group(mount / part, "memory pids cpu")
    _fake_group(mount / service / "app.slice", "memory pids")
    _fake_group(mount / service / "app.slice" / "run-1.scope", "")
    setup = v2_setup(mount=mount, own=f"/{service}/app.slice/run-1.scope", root=False, uid=1000)
    assert setup is not None
    assert setup.parent == mount / service / "app.slice" / "mathagent-sandbox-1000"
    assert setup.how.startswith("v2 delegated subtree")
    assert "cpu" not in setup.controllers  # not offered there
    # a process at the top of the hierarchy has no group above its own to use
    assert v2_setup(mount=mount, own="/user.slice", root=False, uid=1000) is None


def test_no_v2_subtree_without_memory_and_pids(tmp_path):
    mount = _fake_group(tmp_path / "cg", "cpu io hugetlb")
    assert v2_setup(mount=mount, root=True) is None


def test_the_report_says_which_hierarchy_was_used():
    v2 = CgroupSetup(
        2,
        ("memory", "pids", "cpu", "cpuacct"),
        Path("/sys/fs/cgroup/mathagent-sandbox"),
        "v2 root subtree /sys/fs/cgroup/mathagent-sandbox",
    )
    caps = Capabilities(
        bwrap=None, root=True, setpriv=True, cgroups=v2.controllers, seccomp=None, cgroup_setup=v2
    )
    plan = make_plan(SandboxConfig(), caps)
    assert plan.level is IsolationLevel.FULL and plan.cgroup_setup is v2
    assert (
        plan.report.cgroup.startswith("v2 root subtree")
        and plan.report.to_dict()["cgroup"] == plan.report.cgroup
    )
    reduced = make_plan(SandboxConfig(level="reduced"), caps)
    assert reduced.report.cgroup == "" and reduced.cgroup_setup is None
    none = Capabilities(bwrap=None, root=True, setpriv=True, cgroups=(), seccomp=None)
    plan = make_plan(SandboxConfig(), none)
    assert plan.level is IsolationLevel.REDUCED and "v2" in plan.report.missing_reasons["memory_cgroup"]


def test_a_v2_group_on_this_machines_unified_hierarchy():
    """Runs for real where a unified hierarchy is mounted and writable (root): create, enter, account,
    kill, remove. The limits themselves need controllers this machine's v2 root may not offer."""
    mount = unified_mount()
    if mount is None or os.geteuid() != 0 or not os.access(mount, os.W_OK):
        pytest.skip("no writable cgroup v2 hierarchy here")
    parent = mount / f"mathagent-sandbox-test-{os.getpid()}"
    g = CgroupSetup(2, ("cpuacct",), parent, "test").group("slot-0")
    try:
        g.create(memory_mb=256, pids_max=16, cpu_quota=1.0)
        proc = subprocess.Popen(
            ["/bin/sh", "-c", f"echo $$ > {g.procs_files()[0]} && exec sh -c 'while :; do :; done'"]
        )
        deadline = time.monotonic() + 30
        while proc.pid not in g.pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert g.pids() == {proc.pid}
        while (g.cpu_s() or 0) < 0.05 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert g.cpu_s() > 0  # cpu.stat works without the cpu controller
        assert g.kill_all()  # cgroup.kill
        assert proc.wait(timeout=10) == -9
    finally:
        g.remove()
        parent.rmdir()
    assert not parent.exists()
