"""The sandbox seam: what the rest of mathagent may rely on.

Everything outside ``mathagent.sandbox`` depends only on this module: :class:`ExecResult` (one
cell's typed outcome), :class:`Sandbox` (one trajectory's persistent kernel) and
:class:`SandboxProvider` (hands out fresh sandboxes, e.g. from a pool of pre-started kernels).
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

SCHEMA_VERSION = 1


class IsolationLevel(str, enum.Enum):
    """How strongly a sandbox is isolated from the host.

    FULL: network namespace, read-only system, private bounded work dir, unprivileged uid, resource
    limits, scrubbed environment. REDUCED: some of those protections are missing (the report says
    which). NONE: a plain local kernel; only for trusted code and tests of the kernel driver itself.
    """

    FULL = "full"
    REDUCED = "reduced"
    NONE = "none"


@dataclass(frozen=True)
class ExecError:
    """An exception raised by a cell."""

    ename: str
    """Exception class name, e.g. ``ZeroDivisionError``."""
    evalue: str
    """The exception's message."""
    traceback: str
    """Plain-text traceback (ANSI colours removed), trimmed to the frames of the user's code."""


@dataclass(frozen=True)
class ExecResult:
    """The outcome of running one cell."""

    stdout: str = ""
    """Everything the cell printed to stdout (up to the hard cap)."""
    stderr: str = ""
    """Everything the cell printed to stderr (up to the hard cap)."""
    result: str | None = None
    """``text/plain`` of the cell's displayed value (the last expression), if any."""
    error: ExecError | None = None
    """Set when the cell raised."""
    wall_s: float = 0.0
    """Wall-clock seconds from submit to idle."""
    cpu_s: float | None = None
    """CPU seconds the kernel process spent on the cell, when measurable."""
    timed_out: bool = False
    """The cell hit its timeout and was interrupted (or the kernel was killed)."""
    truncated: bool = False
    """Output went over the hard cap; the rest was dropped."""
    kernel_restarted: bool = False
    """The kernel died or was killed during this cell and was replaced: all state is lost."""
    output_bytes: int = 0
    """Bytes of output the cell tried to emit, including any dropped past the cap."""

    @property
    def ok(self) -> bool:
        return self.error is None and not self.timed_out and not self.kernel_restarted

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExecResult:
        d = dict(d)
        err = d.pop("error", None)
        return cls(error=ExecError(**err) if err else None, **d)


@runtime_checkable
class Sandbox(Protocol):
    """One trajectory's kernel: state persists across ``run`` calls, nothing leaks to the next one."""

    @property
    def level(self) -> IsolationLevel: ...

    def run(self, code: str, timeout: float | None = None) -> ExecResult:
        """Execute ``code``; never raises for anything the code does (errors come back in the result)."""
        ...

    def reset(self) -> None:
        """Replace the kernel with a fresh one (state is lost)."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Sandbox: ...

    def __exit__(self, *exc: object) -> None: ...


@runtime_checkable
class SandboxProvider(Protocol):
    """Hands out a fresh sandbox per trajectory (typically from a pool of pre-started kernels)."""

    @property
    def level(self) -> IsolationLevel: ...

    def acquire(self) -> Sandbox: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class IsolationReport:
    """Which isolation level a sandbox reached, and the state of each protection."""

    level: IsolationLevel
    protections: dict[str, bool] = field(default_factory=dict)
    """Protection name -> in force."""
    missing_reasons: dict[str, str] = field(default_factory=dict)
    """Protection name -> why it is not in force."""
    cgroup: str = ""
    """Which cgroup hierarchy slots use, in words (``v1 ...``, ``v2 root subtree ...``,
    ``v2 delegated subtree ...``), or empty when none."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": self.level.value,
            "protections": dict(self.protections),
            "missing_reasons": dict(self.missing_reasons),
            "cgroup": self.cgroup,
        }
