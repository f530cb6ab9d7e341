"""Inline SVG charts for the report pages (no chart library, nothing fetched)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

esc = html.escape
COLORS = ("#3a7bd5", "#2e9e5b", "#d4463b", "#e0a526", "#8e44ad", "#16a085", "#7f8c8d", "#c0392b")


def _open(title: str, width: int, height: int) -> list[str]:
    return [
        f'<svg class="chart" width="{width}" height="{height}" role="img" aria-label="{esc(title)}">',
        f'<text x="8" y="18" font-size="13" font-weight="600">{esc(title)}</text>',
    ]


def bar_chart(title: str, items: list[tuple[str, float]], width: int = 460) -> str:
    """Horizontal bars, values in [0, 1]."""
    if not items:
        return ""
    row, left = 22, 150
    parts = _open(title, width, 30 + row * len(items))
    span = width - left - 60
    for i, (label, v) in enumerate(items):
        y = 28 + i * row
        parts.append(f'<text x="8" y="{y + 14}" font-size="12">{esc(label[:22])}</text>')
        parts.append(
            f'<rect x="{left}" y="{y + 3}" width="{max(1, span * v):.1f}" height="14" fill="{COLORS[0]}"/>'
        )
        parts.append(f'<text x="{left + span * v + 4:.1f}" y="{y + 14}" font-size="11">{100 * v:.1f}%</text>')
    parts.append("</svg>")
    return "".join(parts)


def lines_chart(
    title: str,
    series: Sequence[tuple[str, Sequence[tuple[int, float]], bool]],
    width: int = 520,
    height: int = 240,
) -> str:
    """Accuracy (y, 0–100 %) against k (x, one tick per k seen). ``series``: ``(label, [(k, v)], dashed)``."""
    ks = sorted({k for _, pts, _ in series for k, _ in pts})
    if not ks:
        return ""
    legend_h = 14 * len(series)
    x0, y0, x1, y1 = 50, height - 30, width - 24, 30 + legend_h
    pos = {k: x0 + (x1 - x0) * (i / (len(ks) - 1) if len(ks) > 1 else 0.5) for i, k in enumerate(ks)}
    parts = _open(title, width, height)
    parts += [
        f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#999"/>',
        f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#999"/>',
    ]
    for t in (0, 0.5, 1):
        parts.append(
            f'<text x="{x0 - 34}" y="{y0 - (y0 - y1) * t + 4:.0f}" font-size="10">{int(100 * t)}%</text>'
        )
    for k, x in pos.items():
        parts.append(f'<text x="{x - 4:.0f}" y="{y0 + 16}" font-size="10">{k}</text>')
    parts.append(f'<text x="{x1 + 8}" y="{y0 + 4}" font-size="10">k</text>')
    for si, (label, pts, dashed) in enumerate(series):
        color = COLORS[si % len(COLORS)]
        xy = [(pos[k], y0 - (y0 - y1) * v) for k, v in sorted(pts)]
        dash = ' stroke-dasharray="5,3"' if dashed else ""
        if len(xy) > 1:
            parts.append(
                f'<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="'
                + " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
                + '"/>'
            )
        parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>' for x, y in xy]
        parts.append(
            f'<text x="{x0 + 8}" y="{30 + 14 * si}" font-size="11" fill="{color}">{esc(label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def k_chart(title: str, by_k: list[dict[str, Any]]) -> str:
    """One run: maj@k, weighted and pass@k against k."""
    series = [
        (label, [(int(r["k"]), float(r[key])) for r in by_k if r.get(key) is not None], False)
        for label, key in (("maj@k", "majority"), ("weighted", "weighted"), ("pass@k", "pass_at_k"))
    ]
    return lines_chart(title, series)


def grouped_bars(
    title: str, groups: Sequence[str], series: Sequence[tuple[str, Sequence[float | None]]], width: int = 520
) -> str:
    """Vertical bars, values in [0, 1]: one group per entry of ``groups``, one bar per series in it.
    A missing value (None) draws "n/a" instead of a bar."""
    if not groups or not series:
        return ""
    height = 250
    x0, y0, y1 = 50, height - 40, 36
    gw = (width - x0 - 10) / len(groups)
    bw = max(4.0, min(28.0, (gw - 12) / len(series)))
    parts = _open(title, width, height)
    parts.append(f'<line x1="{x0}" y1="{y0}" x2="{width - 10}" y2="{y0}" stroke="#999"/>')
    for t in (0, 0.5, 1):
        parts.append(
            f'<text x="{x0 - 34}" y="{y0 - (y0 - y1) * t + 4:.0f}" font-size="10">{int(100 * t)}%</text>'
        )
    for si, (label, _) in enumerate(series):
        parts.append(
            f'<text x="{x0 + 8 + 90 * si}" y="32" font-size="11" fill="{COLORS[si % len(COLORS)]}">'
            f"{esc(label)}</text>"
        )
    for gi, g in enumerate(groups):
        gx = x0 + gi * gw + 6
        for si, (_, vals) in enumerate(series):
            v = vals[gi] if gi < len(vals) else None
            x = gx + si * bw
            if v is None:
                parts.append(f'<text x="{x:.1f}" y="{y0 - 4}" font-size="8" fill="#999">n/a</text>')
                continue
            h = (y0 - y1) * v
            parts.append(
                f'<rect x="{x:.1f}" y="{y0 - h:.1f}" width="{bw - 2:.1f}" height="{max(h, 0.5):.1f}" '
                f'fill="{COLORS[si % len(COLORS)]}"><title>{esc(series[si][0])} {esc(g)}: '
                f"{100 * v:.1f}%</title></rect>"
            )
        parts.append(f'<text x="{gx:.1f}" y="{y0 + 16}" font-size="11">{esc(g[:18])}</text>')
    parts.append("</svg>")
    return "".join(parts)
