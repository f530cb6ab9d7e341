"""Fixtures for the sandbox tests: the level this machine reaches, shared kernels, a warm pool."""

from __future__ import annotations

import pytest
from mathagent.sandbox.base import IsolationLevel
from mathagent.sandbox.config import SandboxConfig

RANK = {IsolationLevel.NONE: 0, IsolationLevel.REDUCED: 1, IsolationLevel.FULL: 2}


@pytest.fixture(scope="session")
def machine_level() -> IsolationLevel:
    from mathagent.sandbox.isolation import isolation_report

    return isolation_report(SandboxConfig.from_env()).level  # MATHAGENT_SANDBOX_LEVEL lowers it


@pytest.fixture(scope="session")
def require_level(machine_level):
    """``require_level(needed, what)``: skip (never pass) a check this machine's level cannot honour."""

    def check(needed: IsolationLevel, what: str) -> None:
        if RANK[machine_level] < RANK[needed]:
            pytest.skip(
                f"{what} needs isolation level {needed.value}; this machine reaches {machine_level.value}"
            )

    return check


@pytest.fixture(scope="module")
def config() -> SandboxConfig:
    # a generous start timeout: on a loaded shared machine a new sandbox has taken over 20 s to start
    return SandboxConfig.from_env(default_timeout_s=5.0, interrupt_grace_s=0.5, start_timeout_s=120.0)


@pytest.fixture(scope="module")
def sb(config):
    """One kernel shared by the cases of a module that cannot damage its state."""
    from mathagent.sandbox.kernel import JupyterSandbox

    with JupyterSandbox(config) as s:
        yield s
