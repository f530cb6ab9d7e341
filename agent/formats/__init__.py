"""Trace formats: ``markdown`` (```python / ```output), ``mathcoder`` (special tokens), ``tools`` (native calls)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mathagent.agent.formats.base import FormatError, Generation, RenderChat, TraceFormat
from mathagent.agent.formats.markdown import MarkdownFormat
from mathagent.agent.formats.mathcoder import MathCoderFormat, parse_mathcoder, steps_from_debug_result
from mathagent.agent.formats.tools import PYTHON_TOOL, ToolsFormat

if TYPE_CHECKING:
    from mathagent.agent.presets import Preset

FORMATS: dict[str, type[TraceFormat]] = {
    "markdown": MarkdownFormat,
    "mathcoder": MathCoderFormat,
    "tools": ToolsFormat,
}


def get_format(name: str, preset: Preset | None = None) -> TraceFormat:
    """A format by name, shaped by ``preset`` when given; raises ``ValueError`` naming the known ones."""
    try:
        cls = FORMATS[name]
    except KeyError:
        raise ValueError(f"unknown trace format {name!r}; known: {', '.join(FORMATS)}") from None
    if preset is not None and preset.format not in (None, name):
        raise ValueError(f"preset {preset.name} is for the {preset.format} format, not {name}")
    return cls(preset) if preset is not None else cls()


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
