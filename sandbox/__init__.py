"""mathagent.sandbox: a sandboxed, persistent Jupyter kernel per trajectory.

Public names: :class:`JupyterSandbox`, :class:`KernelPool`, :class:`SandboxConfig`, :func:`model_view`,
:func:`isolation_report`, :func:`arun`, and the seam types from :mod:`mathagent.sandbox.base`.
Heavy modules load lazily, so ``import mathagent.sandbox`` stays cheap.
"""

from __future__ import annotations

from typing import Any

from mathagent.sandbox.base import (
    ExecError,
    ExecResult,
    IsolationLevel,
    IsolationReport,
    Sandbox,
    SandboxProvider,
)

_LAZY = {
    "JupyterSandbox": "mathagent.sandbox.kernel",
    "SandboxStartError": "mathagent.sandbox.kernel",
    "KernelPool": "mathagent.sandbox.pool",
    "SandboxConfig": "mathagent.sandbox.config",
    "model_view": "mathagent.sandbox.output",
    "isolation_report": "mathagent.sandbox.isolation",
    "SandboxUnavailable": "mathagent.sandbox.isolation",
    "arun": "mathagent.sandbox.aio",
}

__all__ = [
    "ExecError",
    "ExecResult",
    "IsolationLevel",
    "IsolationReport",
    "Sandbox",
    "SandboxProvider",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mathagent.sandbox' has no attribute {name!r}")
