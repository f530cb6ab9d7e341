"""Trace formats: ``markdown`` (```python / ```output), ``mathcoder`` (special tokens), ``tools`` (native calls)."""

from __future__ import annotations

from mathagent.agent.formats.base import FormatError, Generation, RenderChat, TraceFormat
from mathagent.agent.formats.markdown import MarkdownFormat
from mathagent.agent.formats.mathcoder import MathCoderFormat, parse_mathcoder, steps_from_debug_result
from mathagent.agent.formats.tools import PYTHON_TOOL, ToolsFormat

FORMATS: dict[str, type[TraceFormat]] = {
    "markdown": MarkdownFormat,
    "mathcoder": MathCoderFormat,
    "tools": ToolsFormat,
}


def get_format(name: str) -> TraceFormat:
    """A format by name; raises ``ValueError`` naming the known ones."""
    try:
        return FORMATS[name]()
    except KeyError:
        raise ValueError(f"unknown trace format {name!r}; known: {', '.join(FORMATS)}") from None


__all__ = [
    "FORMATS",
    "PYTHON_TOOL",
    "FormatError",
    "Generation",
    "MarkdownFormat",
    "MathCoderFormat",
    "RenderChat",
    "ToolsFormat",
    "TraceFormat",
    "get_format",
    "parse_mathcoder",
    "steps_from_debug_result",
]
