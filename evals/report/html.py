"""Render a run folder as one self-contained HTML page (inline CSS, JS and SVG; nothing fetched)."""

from __future__ import annotations

import html
import json
from collections import defaultdict
from importlib import resources
from pathlib import Path
from typing import Any

from mathagent.evals.report.highlight import highlight_python
from mathagent.evals.runs import RunDir
from mathagent.evals.summary import summarize, summary_rows

esc = html.escape
COLORS = ("#3a7bd5", "#2e9e5b", "#d4463b", "#e0a526")


def _asset(name: str) -> str:
    return (resources.files("mathagent.evals.report") / name).read_text(encoding="utf-8")


def bar_chart(title: str, items: list[tuple[str, float]], width: int = 460) -> str:
    """Horizontal bars, values in [0, 1]."""
    if not items:
        return ""
    row, left = 22, 150
    h = 30 + row * len(items)
    parts = [
        f'<svg class="chart" width="{width}" height="{h}" role="img" aria-label="{esc(title)}">',
        f'<text x="8" y="18" font-size="13" font-weight="600">{esc(title)}</text>',
    ]
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


def line_chart(title: str, by_k: list[dict[str, Any]], width: int = 460, height: int = 220) -> str:
    """k on x (log-spaced points), maj@k / weighted / pass@k on y."""
    if len(by_k) < 1:
        return ""
    series = [("maj@k", "majority"), ("weighted", "weighted"), ("pass@k", "pass_at_k")]
    x0, y0, x1, y1 = 50, height - 30, width - 20, 30
    n = len(by_k)

    def xy(i: int, v: float) -> tuple[float, float]:
        x = x0 + (x1 - x0) * (i / (n - 1) if n > 1 else 0.5)
        return x, y0 - (y0 - y1) * v

    parts = [
        f'<svg class="chart" width="{width}" height="{height}" role="img" aria-label="{esc(title)}">',
        f'<text x="8" y="18" font-size="13" font-weight="600">{esc(title)}</text>',
        f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#999"/>',
        f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#999"/>',
    ]
    for t in (0, 0.5, 1):
        parts.append(
            f'<text x="{x0 - 34}" y="{y0 - (y0 - y1) * t + 4:.0f}" font-size="10">{int(100 * t)}%</text>'
        )
    for i, r in enumerate(by_k):
        x, _ = xy(i, 0)
        parts.append(f'<text x="{x - 4:.0f}" y="{y0 + 16}" font-size="10">{r["k"]}</text>')
    for si, (label, key) in enumerate(series):
        pts = [xy(i, float(r[key])) for i, r in enumerate(by_k)]
        color = COLORS[si + 1]
        if len(pts) > 1:
            parts.append(
                f'<polyline fill="none" stroke="{color}" stroke-width="2" points="'
                + " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
                + '"/>'
            )
        parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>' for x, y in pts]
        parts.append(
            f'<text x="{x1 - 70}" y="{y1 + 4 + 14 * si}" font-size="11" fill="{color}">{label}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _status(rec: dict[str, Any]) -> str:
    if rec.get("status") == "failed":
        return "error"
    return "correct" if rec.get("correct") else "wrong"


def render_steps(trace: dict[str, Any] | None) -> str:
    if not trace:
        return ""
    parts = []
    for s in trace.get("steps", []):
        kind, content, phase = s.get("kind"), s.get("content", ""), s.get("phase", "solve")
        tag = f'<div class="phase">{esc(kind)} · {esc(phase)}</div>'
        if kind == "code":
            parts.append(f'{tag}<pre class="code">{highlight_python(content)}</pre>')
        elif kind == "execution":
            ex = s.get("execution") or {}
            bad = ex.get("error") or ex.get("timed_out")
            parts.append(f'{tag}<pre class="out{" err" if bad else ""}">{esc(content)}</pre>')
        else:
            parts.append(f'{tag}<div class="text">{esc(content)}</div>')
    for v in trace.get("verification", []):
        parts.append(
            f'<div class="votes">verification round {v["round"]}: <b>{esc(v["state"])}</b> '
            f"on {esc(str(v.get('answer')))} — {esc(v.get('reason', ''))}</div>"
        )
    return "".join(parts)


def render_sample(rec: dict[str, Any], vote: str) -> str:
    st = _status(rec)
    trace = rec.get("trace")
    search = " ".join(
        str(x)
        for x in (
            rec.get("problem_id"),
            rec.get("question"),
            rec.get("answer"),
            rec.get("gold"),
            rec.get("error"),
            rec.get("subject"),
            rec.get("level"),
        )
    ).lower()
    badges = [f'<span class="badge {st}">{st}</span>']
    if rec.get("verification_state"):
        badges.append(f'<span class="badge">verified {esc(rec["verification_state"])}</span>')
    if rec.get("level"):
        badges.append(f'<span class="badge">level {esc(str(rec["level"]))}</span>')
    if rec.get("subject"):
        badges.append(f'<span class="badge">{esc(str(rec["subject"]))}</span>')
    ex = rec.get("exec") or {}
    err = f'<div class="out err">{esc(rec["error"])}</div>' if rec.get("error") else ""
    return (
        f'<details class="sample {st}" data-search="{esc(search)}" data-id="{esc(str(rec["problem_id"]))}">'
        f"<summary><b>#{esc(str(rec['problem_id']))}</b> sample {rec.get('sample_index', 0)} — answer "
        f"<code>{esc(str(rec.get('answer')))}</code> gold <code>{esc(str(rec.get('gold')))}</code>"
        f'{"".join(badges)}</summary><div class="body"><div class="q">{esc(rec.get("question") or "")}</div>'
        f'{err}{render_steps(trace)}<div class="votes">{vote} · cells {ex.get("cells", 0)}, errors '
        f"{ex.get('errors', 0)}, timeouts {ex.get('timeouts', 0)} · tokens {rec.get('tokens_in', 0)}+"
        f"{rec.get('tokens_out', 0)} · {rec.get('time_s', 0):.2f}s</div></div></details>"
    )


def render(run: RunDir, summary: dict[str, Any]) -> str:
    header = run.header
    records = sorted(run.records(), key=lambda r: (str(r["problem_id"]), int(r.get("sample_index", 0))))
    cfg = header.get("identity", {}).get("config", {})
    title = f"mathagent run — {cfg.get('dataset', run.path.name)}"
    rows = summary_rows(summary)
    table = [
        '<table class="summary"><tr><th>group</th><th>n</th><th>acc (first)</th>'
        f"<th>maj@{summary['overall'].get('k', 1)}</th><th>weighted</th><th>pass@k</th></tr>"
    ]
    table += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows]
    table.append("</table>")
    ex = summary.get("exec", {})
    totals = (
        f"<p>{summary['n_samples']} samples, {summary['n_failed']} failed · tokens in "
        f"{summary['tokens_in']}, out {summary['tokens_out']} · code cells {ex.get('cells', 0)} "
        f"(errors {ex.get('errors', 0)}, timeouts {ex.get('timeouts', 0)}, restarts {ex.get('restarts', 0)})</p>"
    )
    charts = []
    for key, label in (("by_level", "accuracy by level"), ("by_subject", "accuracy by subject")):
        items = [(k, v["accuracy"]) for k, v in summary.get(key, {}).items() if v.get("n_problems")]
        charts.append(bar_chart(label, items))
    charts.append(line_chart("k vs accuracy", summary["overall"].get("by_k", [])))
    votes: dict[str, list[str]] = defaultdict(list)
    for r in records:
        votes[str(r["problem_id"])].append(str(r.get("answer")))
    samples = [render_sample(r, "votes: " + esc(", ".join(votes[str(r["problem_id"])]))) for r in records]
    counts: dict[str, int] = defaultdict(int)
    for r in records:
        counts[_status(r)] += 1
    buttons = "".join(
        f'<button data-filter="{f}">{f} ({counts[f] if f != "all" else len(records)})</button>'
        for f in ("all", "correct", "wrong", "error")
    )
    meta = esc(" · ".join(f"{k}={v}" for k, v in cfg.items() if v not in (None, "", {})))
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f"<style>{_asset('style.css')}</style></head><body><header><h1>{esc(title)}</h1>"
        f'<div class="meta">{meta} · git {esc(str(header.get("git_revision")))}</div></header><main>'
        f'<section id="summary"><h2>Summary</h2>{"".join(table)}{totals}'
        f'<div class="charts">{"".join(charts)}</div></section>'
        f'<section id="samples"><h2>Samples</h2><div class="controls"><input id="search" type="search" '
        f'placeholder="search question, answer, id…">{buttons}<span id="shown"></span></div>'
        f"{''.join(samples)}</section></main>"
        f'<script type="application/json" id="summary-data">{esc(json.dumps(summary))}</script>'
        f"<script>{_asset('app.js')}</script></body></html>"
    )


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``report.html`` into the run folder (or ``out``); the summary is recomputed if missing."""
    run = RunDir.read(run_dir)
    summary = run.summary()
    if summary is None or summary.get("n_samples") != len(run.records()):
        cfg = run.header.get("identity", {}).get("config", {})
        summary = summarize(
            run.records(),
            k=cfg.get("k"),
            weights=cfg.get("weights"),
            dataset=cfg.get("grading_dataset") or "math",
        )
    path = Path(out) if out else run.path / "report.html"
    path.write_text(render(run, summary), encoding="utf-8")
    return path
