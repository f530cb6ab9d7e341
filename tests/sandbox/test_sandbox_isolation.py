"""Level detection from host capabilities (pure), and the config's environment fallbacks."""

from __future__ import annotations

import pytest
from mathagent.sandbox.base import IsolationLevel
from mathagent.sandbox.config import SandboxConfig
from mathagent.sandbox.isolation import PROTECTIONS, Capabilities, SandboxUnavailable, make_plan

ALL = Capabilities(
    bwrap=None, root=True, setpriv=True, cgroups=("memory", "pids", "cpu", "cpuacct"), seccomp=None
)


def caps(**kw):
    return Capabilities(**{**ALL.__dict__, **kw})


def test_everything_available_is_full():
    plan = make_plan(SandboxConfig(), ALL)
    assert plan.level is IsolationLevel.FULL
    assert all(plan.report.protections[p] for p in PROTECTIONS)
    assert plan.report.missing_reasons == {}


@pytest.mark.parametrize(
    "missing, protection, reason_part",
    [
        (dict(bwrap="/usr/bin/bwrap not installed"), "network_namespace", "not installed"),
        (dict(root=False), "unprivileged_uid", "not root"),
        (dict(setpriv=False), "unprivileged_uid", "setpriv"),
        (dict(cgroups=("cpu",)), "memory_cgroup", "memory"),
        (dict(cgroups=("memory",)), "pids_cgroup", "pids"),
    ],
)
def test_a_missing_requirement_degrades_to_reduced_and_says_why(missing, protection, reason_part):
    plan = make_plan(SandboxConfig(), caps(**missing))
    assert plan.level is IsolationLevel.REDUCED
    assert plan.report.protections[protection] is False
    assert reason_part in plan.report.missing_reasons[protection]
    with pytest.raises(SandboxUnavailable):
        make_plan(SandboxConfig(level="full"), caps(**missing))


def test_missing_seccomp_is_reported_but_keeps_full():
    plan = make_plan(SandboxConfig(), caps(seccomp="pyseccomp not usable: no module"))
    assert plan.level is IsolationLevel.FULL
    assert not plan.report.protections["seccomp"]
    assert "pyseccomp" in plan.report.missing_reasons["seccomp"]


def test_requested_levels():
    reduced = make_plan(SandboxConfig(level="reduced"), ALL)
    assert reduced.level is IsolationLevel.REDUCED and not reduced.bwrap and not reduced.drop_uid
    assert reduced.report.missing_reasons["network_namespace"] == "level reduced requested"
    none = make_plan(SandboxConfig(level="none"), ALL)
    assert none.level is IsolationLevel.NONE and not none.rlimits
    assert none.report.protections["scrubbed_env"]


def test_config_from_env(monkeypatch):
    monkeypatch.setenv("MATHAGENT_SANDBOX_LEVEL", "Reduced")
    monkeypatch.setenv("MATHAGENT_SANDBOX_MEMORY_MB", "512")
    cfg = SandboxConfig.from_env(default_timeout_s=3.0)
    assert (cfg.level, cfg.memory_mb, cfg.default_timeout_s) == ("reduced", 512, 3.0)
    assert SandboxConfig.from_dict(cfg.to_dict()) == cfg
    monkeypatch.setenv("MATHAGENT_SANDBOX_LEVEL", "bogus")
    with pytest.raises(ValueError):
        SandboxConfig.from_env()


def test_kernel_env_is_an_allow_list(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret")
    env = SandboxConfig().kernel_env("/work")
    assert "OPENAI_API_KEY" not in env and "JPY_PARENT_PID" not in env
    assert env["OMP_NUM_THREADS"] == "1" and env["MPLBACKEND"] == "Agg" and env["HOME"] == "/work"
