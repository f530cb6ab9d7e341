"""The interactive ``mathagent solve`` REPL (see :mod:`mathagent.agent.repl.app` and docs/repl.md).

``main(argv)`` opens it; ``argv`` are ``mathagent solve``'s options (no problem).
"""

from __future__ import annotations

from mathagent.agent.repl.app import main

__all__ = ["main"]
