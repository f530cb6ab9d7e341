"""A tiny Python syntax highlighter for the report (HTML-escaped spans, no dependencies)."""

from __future__ import annotations

import builtins
import html
import keyword
import re

_TOKEN = re.compile(
    r"(?P<cm>#[^\n]*)"
    r"|(?P<st>[rRbBfFuU]{0,2}(?:\"\"\"[\s\S]*?\"\"\"|'''[\s\S]*?'''|\"(?:\\.|[^\"\\\n])*\"|'(?:\\.|[^'\\\n])*'))"
    r"|(?P<nu>\b\d+(?:\.\d*)?(?:[eE][-+]?\d+)?j?\b)"
    r"|(?P<id>[A-Za-z_][A-Za-z0-9_]*)"
)
_BUILTINS = set(dir(builtins))


def highlight_python(code: str) -> str:
    """``code`` as escaped HTML with ``<span class=kw|st|nu|cm|bi>`` around tokens."""
    out: list[str] = []
    pos = 0
    for m in _TOKEN.finditer(code):
        out.append(html.escape(code[pos : m.start()]))
        kind, text = m.lastgroup, m.group(0)
        if kind == "id":
            kind = "kw" if keyword.iskeyword(text) else "bi" if text in _BUILTINS else None
        out.append(f'<span class="{kind}">{html.escape(text)}</span>' if kind else html.escape(text))
        pos = m.end()
    out.append(html.escape(code[pos:]))
    return "".join(out)
