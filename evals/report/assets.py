"""The page's static parts: our CSS/JS and the vendored KaTeX (fonts inlined as ``data:`` URIs)."""

from __future__ import annotations

import base64
import functools
import json
import re
from importlib import resources
from typing import Any

KATEX_VERSION = "0.19.1"
_FONT_URL = re.compile(
    r"url\(fonts/(KaTeX_[A-Za-z0-9_-]+)\.woff2\) format\(\"woff2\"\)(?:,url\([^)]*\) format\(\"[a-z]+\"\))*"
)


def _root():
    return resources.files("mathagent.evals.report")


def asset(name: str) -> str:
    """A text file of the report package (``app.js``, ``style.css``, ``vendor/katex/...``)."""
    return (_root() / name).read_text(encoding="utf-8")


@functools.lru_cache(maxsize=1)
def katex_css() -> str:
    """KaTeX's stylesheet with every woff2 font inlined and the woff/ttf fallbacks removed."""
    css = asset("vendor/katex/katex.min.css")
    fonts = _root() / "vendor" / "katex" / "fonts"

    def inline(m: re.Match[str]) -> str:
        data = (fonts / f"{m.group(1)}.woff2").read_bytes()
        return f'url(data:font/woff2;base64,{base64.b64encode(data).decode()}) format("woff2")'

    out, n = _FONT_URL.subn(inline, css)
    if "url(fonts/" in out or not n:
        raise RuntimeError("vendored katex.min.css refers to fonts the report cannot inline")
    return out


@functools.lru_cache(maxsize=1)
def katex_js() -> str:
    return asset("vendor/katex/katex.min.js")


def script_text(text: str) -> str:
    """JavaScript or JSON made safe inside a ``<script>`` element: no ``</script`` or ``<!--`` can end
    it early (``<\\/`` and ``<\\!`` mean the same inside JS strings, regexes and JSON)."""
    return text.replace("</", "<\\/").replace("<!--", "<\\!--")


def json_script_text(data: Any) -> str:
    """``data`` as JSON for a ``<script type="application/json">``: every ``<`` written ``\\u003c``."""
    return json.dumps(data, ensure_ascii=False).replace("<", "\\u003c")


_RAW_END = re.compile(r"<(?=/script|!--)", re.IGNORECASE)


def raw_html_text(markup: str) -> str:
    """HTML markup stored as the raw text of an inert ``<script type="text/x-...">`` (read back with
    ``textContent`` and inserted as HTML): a ``<`` that would end the element early becomes ``&lt;``."""
    return _RAW_END.sub("&lt;", markup)
