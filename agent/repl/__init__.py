"""The interactive ``mathagent solve`` REPL (see :mod:`mathagent.agent.repl.app` and docs/repl.md)."""

from __future__ import annotations

from mathagent.agent.repl.app import main as _main


def main(argv: list[str] | None = None) -> int:
    """Open the REPL; ``argv`` are ``mathagent solve``'s options (no problem)."""
    return _main(argv)


__all__ = ["main"]
