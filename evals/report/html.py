"""Render run folders as one self-contained HTML page (inline CSS, JS, SVG and fonts; nothing fetched).

One run: its settings, summary and every sample. Several runs: a comparison (settings side by side,
per-run metrics, accuracy-vs-k and state-precision charts, per-problem verdicts of each run and where
they differ). The page stays fast at any size: the sample/problem index is one JSON blob rendered
a page at a time by ``app.js``; each trace is pre-rendered HTML in its own inert
``<script type="text/x-trace">`` placed after the app, parsed only when its sample is opened.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mathagent.evals.report.assets import (
    asset,
    json_script_text,
    katex_css,
    katex_js,
    raw_html_text,
    script_text,
)
from mathagent.evals.report.charts import bar_chart, grouped_bars, k_chart, lines_chart
from mathagent.evals.report.highlight import highlight_python
from mathagent.evals.report.runs import LoadedRun, display_names, load_run, status_of
from mathagent.evals.report.settings import settings_rows
from mathagent.evals.summary import summary_rows

esc = html.escape
STATUS_CODE = {"wrong": 0, "correct": 1, "error": 2}
STATES = ("T", "U", "F")


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


# -- one sample's trace (pre-rendered; inserted when the sample is opened) --------------------------------
def render_steps(trace: dict[str, Any] | None) -> str:
    if not trace:
        return ""
    parts = []
    for s in trace.get("steps", []):
        kind, content, phase = s.get("kind"), s.get("content", ""), s.get("phase", "solve")
        tag = f'<div class="phase">{esc(str(kind))} · {esc(str(phase))}</div>'
        if kind == "code":
            parts.append(f'{tag}<pre class="code">{highlight_python(content)}</pre>')
        elif kind == "execution":
            ex = s.get("execution") or {}
            bad = ex.get("error") or ex.get("timed_out")
            parts.append(f'{tag}<pre class="out{" err" if bad else ""}">{esc(content)}</pre>')
        else:
            parts.append(f'{tag}<div class="text tex">{esc(content)}</div>')
    for v in trace.get("verification", []):
        parts.append(
            f'<div class="votes">verification round {esc(str(v.get("round")))}: <b>{esc(str(v.get("state")))}</b>'
            f' on <span class="math">{esc(str(v.get("answer")))}</span> — {esc(str(v.get("reason", "")))}</div>'
        )
    return "".join(parts)


def render_sample_body(rec: dict[str, Any]) -> str:
    ex = rec.get("exec") or {}
    err = f'<div class="out err">{esc(str(rec["error"]))}</div>' if rec.get("error") else ""
    return (
        f'{err}{render_steps(rec.get("trace"))}<div class="votes">cells {ex.get("cells", 0)}, errors '
        f"{ex.get('errors', 0)}, timeouts {ex.get('timeouts', 0)} · tokens {rec.get('tokens_in', 0)}+"
        f"{rec.get('tokens_out', 0)} · {float(rec.get('time_s') or 0):.2f}s · stop "
        f"{esc(str(rec.get('stop_reason')))}</div>"
    )


# -- page data -------------------------------------------------------------------------------------------
def _page_data(runs: Sequence[LoadedRun]) -> dict[str, Any]:
    """The JSON index the page script renders from (compact rows; see the schema in app.js)."""
    problems: dict[str, list[Any]] = {}
    samples: list[list[Any]] = []
    for run in runs:
        for rec in run.records:
            pid = str(rec["problem_id"])
            if pid not in problems:
                problems[pid] = [
                    pid,
                    rec.get("question") or "",
                    None if rec.get("gold") is None else str(rec.get("gold")),
                    rec.get("level"),
                    rec.get("subject"),
                ]
    index = {pid: i for i, pid in enumerate(problems)}
    for ri, run in enumerate(runs):
        for rec in run.records:
            samples.append(
                [
                    ri,
                    index[str(rec["problem_id"])],
                    int(rec.get("sample_index", 0)),
                    STATUS_CODE[status_of(rec)],
                    None if rec.get("answer") is None else str(rec.get("answer")),
                    rec.get("verification_state"),
                    int(rec.get("tokens_in") or 0),
                    int(rec.get("tokens_out") or 0),
                    round(float(rec.get("time_s") or 0), 3),
                    (rec.get("error") or "")[:300],
                ]
            )
    verdicts = []
    for run in runs:
        row = []
        for pid in problems:
            v = run.verdicts.get(pid)
            row.append(None if v is None else [v.n_correct, v.n, int(v.correct), v.voted])
        verdicts.append(row)
    return {
        "runs": [{"name": r.name, "mode": r.mode, "k": r.k} for r in runs],
        "problems": list(problems.values()),
        "samples": samples,
        "verdicts": verdicts,
    }


# -- header, settings and summary sections --------------------------------------------------------------
def settings_table(runs: Sequence[LoadedRun]) -> str:
    """Settings as a table: one value column per run; rows whose values differ are marked."""
    per_run = [{(sec, name): val for sec, name, val in settings_rows(r.header)} for r in runs]
    keys: list[tuple[str, str]] = []
    for d in per_run:
        keys += [k for k in d if k not in keys]
    order = {"run": 0, "agent": 1, "provenance": 2}
    keys.sort(key=lambda k: order.get(k[0], 3))
    head = "".join(f"<th>{esc(r.name)}</th>" for r in runs) if len(runs) > 1 else "<th>value</th>"
    out = [f'<table class="settings"><tr><th>setting</th>{head}</tr>']
    section = None
    for sec, name in keys:
        if sec != section:
            out.append(f'<tr class="section"><th colspan="{len(runs) + 1}">{esc(sec)}</th></tr>')
            section = sec
        vals = [d.get((sec, name), "—") for d in per_run]
        differs = len(runs) > 1 and len(set(vals)) > 1
        cells = "".join(f"<td>{esc(v)}</td>" for v in vals)
        cls = ' class="differs"' if differs else ""
        # several runs: provenance rows that agree fold away (checkbox "show provenance")
        fold = ' data-fold="1"' if len(runs) > 1 and sec == "provenance" and not differs else ""
        out.append(f"<tr{cls}{fold}><th>{esc(name)}</th>{cells}</tr>")
    out.append("</table>")
    return "".join(out)


def _run_metrics_table(runs: Sequence[LoadedRun]) -> str:
    calibrated = any(r.summary.get("overall", {}).get("weighted_calibrated_at_k") is not None for r in runs)
    cols = [
        "run",
        "mode",
        "problems",
        "k",
        "acc (first)",
        "maj@k",
        "weighted@k",
        *(["weighted@k (calibrated)"] if calibrated else []),
        "pass@k",
        "T / U / F share",
        "P(correct | T / U / F)",
        "tokens / problem",
        "s / problem",
        "failed",
    ]
    out = ['<table class="summary metrics"><tr>' + "".join(f"<th>{c}</th>" for c in cols) + "</tr>"]
    for r in runs:
        s, o = r.summary, r.summary.get("overall", {})
        n = o.get("n_problems") or 0
        ver = s.get("verification") or {}
        share, prec = ver.get("share") or {}, ver.get("precision") or {}
        vals = [
            r.name,
            r.mode,
            str(n),
            str(o.get("k", "–")),
            _pct(o.get("accuracy")),
            _pct(o.get("maj_at_k")),
            _pct(o.get("weighted_at_k")),
            *([_pct(o.get("weighted_calibrated_at_k"))] if calibrated else []),
            _pct(o.get("pass_at_k")),
            " / ".join(_pct(share.get(x)) for x in STATES),
            " / ".join(_pct(prec.get(x)) for x in STATES),
            f"{(s.get('tokens_in', 0) + s.get('tokens_out', 0)) / n:.0f}" if n else "–",
            f"{s.get('sample_time_s', 0) / n:.1f}" if n else "–",
            str(s.get("n_failed", 0)),
        ]
        out.append("<tr>" + "".join(f"<td>{esc(v)}</td>" for v in vals) + "</tr>")
    out.append("</table>")
    return "".join(out)


def mcnemar_p(b: int, c: int) -> float:
    """Two-sided exact McNemar test on the discordant counts (binomial, p = 1/2): how surprising a
    split this lopsided is if the two runs were equally good."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def _agreement(runs: Sequence[LoadedRun]) -> str:
    """Pairwise: problems both runs solved, only one solved, neither (the discordant cells are what a
    paired test such as McNemar's looks at)."""
    out = [
        '<table class="summary agreement"><tr><th>run A</th><th>run B</th><th>common problems</th>'
        "<th>both right</th><th>only A right</th><th>only B right</th><th>both wrong</th>"
        "<th>McNemar exact p</th></tr>"
    ]
    for i, a in enumerate(runs):
        for b in runs[i + 1 :]:
            common = [p for p in a.verdicts if p in b.verdicts]
            cells = [0, 0, 0, 0]
            for p in common:
                va, vb = a.verdicts[p].correct, b.verdicts[p].correct
                cells[0 if va and vb else 1 if va else 2 if vb else 3] += 1
            out.append(
                f"<tr><td>{esc(a.name)}</td><td>{esc(b.name)}</td><td>{len(common)}</td>"
                + "".join(f"<td>{c}</td>" for c in cells)
                + f"<td>{mcnemar_p(cells[1], cells[2]):.3g}</td></tr>"
            )
    out.append("</table>")
    return "".join(out)


def _one_run_summary(run: LoadedRun) -> str:
    summary = run.summary
    table = [
        '<table class="summary"><tr><th>group</th><th>n</th><th>acc (first)</th>'
        f"<th>maj@{summary['overall'].get('k', 1)}</th><th>weighted</th><th>pass@k</th></tr>"
    ]
    table += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in summary_rows(summary)]
    table.append("</table>")
    ex = summary.get("exec", {})
    ver = summary.get("verification") or {}
    vline = ""
    if ver.get("total"):
        vline = (
            "<p>verification: "
            + " · ".join(
                f"{x} {ver['counts'].get(x, 0)} ({_pct(ver['share'].get(x))}%, precision "
                f"{_pct(ver['precision'].get(x))}%)"
                for x in (*STATES, "none")
                if ver["counts"].get(x)
            )
            + "</p>"
        )
    totals = (
        f"<p>{summary['n_samples']} samples, {summary['n_failed']} failed · tokens in "
        f"{summary['tokens_in']}, out {summary['tokens_out']} · code cells {ex.get('cells', 0)} "
        f"(errors {ex.get('errors', 0)}, timeouts {ex.get('timeouts', 0)}, restarts {ex.get('restarts', 0)})</p>"
    )
    charts = []
    for key, label in (("by_level", "accuracy by level"), ("by_subject", "accuracy by subject")):
        items = [(k, v["accuracy"]) for k, v in summary.get(key, {}).items() if v.get("n_problems")]
        charts.append(bar_chart(label, items))
    charts.append(k_chart("k vs accuracy", summary["overall"].get("by_k", [])))
    prec = ver.get("precision") or {}
    if any(prec.get(x) is not None for x in STATES):
        charts.append(
            grouped_bars(
                "state precision P(correct | state)", STATES, [(run.name, [prec.get(x) for x in STATES])]
            )
        )
    return f'{"".join(table)}{totals}{vline}<div class="charts">{"".join(charts)}</div>'


def _reading_notes(runs: Sequence[LoadedRun]) -> str:
    notes = [
        f"{esc(r.name)}: {len(r.bad_lines)} corrupt line(s) in samples.jsonl left out of this page "
        f"(line {esc(', '.join(str(b[0] if isinstance(b, (list, tuple)) else b) for b in r.bad_lines[:10]))})"
        for r in runs
        if r.bad_lines
    ]
    for r in runs:
        if r.regraded:
            ids = ", ".join(f"{x.get('problem_id')}#{x.get('sample_index', 0)}" for x in r.regraded[:10])
            more = " …" if len(r.regraded) > 10 else ""
            notes.append(
                f"{esc(r.name)}: {len(r.regraded)} verdict(s) recorded by an older grader differ under "
                f"today's and are shown as today's grader judges them (sample {esc(ids)}{more})"
            )
    return "".join(f'<p class="warn">{n}</p>' for n in notes)


def _ver(run: LoadedRun, key: str) -> dict[str, Any]:
    return ((run.summary.get("verification") or {}).get(key)) or {}


def _verified(run: LoadedRun) -> bool:
    return any(_ver(run, "counts").get(x) for x in STATES)


def _compare_summary(runs: Sequence[LoadedRun]) -> str:
    series = []
    for r in runs:
        by_k = r.summary.get("overall", {}).get("by_k", [])
        series.append((f"{r.name} maj", [(int(x["k"]), float(x["majority"])) for x in by_k], False))
        if any(x.get("weighted") != x.get("majority") for x in by_k):
            series.append((f"{r.name} weighted", [(int(x["k"]), float(x["weighted"])) for x in by_k], True))
    charts = [
        lines_chart(
            "accuracy vs k (solid: majority, dashed: weighted)",
            series,
            width=560,
            height=260 + 14 * len(series),
        )
    ]
    verified = [r for r in runs if _verified(r)]  # a run without verification has no states to chart
    prec = [(r.name, [_ver(r, "precision").get(x) for x in STATES]) for r in verified]
    charts.append(grouped_bars("state precision P(correct | state)", STATES, prec))
    share = [(r.name, [_ver(r, "share").get(x) for x in STATES]) for r in verified]
    charts.append(grouped_bars("state share (of finished samples)", STATES, share))
    levels = sorted({lv for r in runs for lv in r.summary.get("by_level", {})}, key=lambda x: (len(x), x))
    if levels:
        charts.append(
            grouped_bars(
                "accuracy (first sample) by level",
                [f"L{lv}" for lv in levels],
                [
                    (r.name, [r.summary.get("by_level", {}).get(lv, {}).get("accuracy") for lv in levels])
                    for r in runs
                ],
                width=max(520, 60 + 40 * len(levels) * len(runs)),
            )
        )
    warn = ""
    ds = {json.dumps(r.header.get("identity", {}).get("dataset"), sort_keys=True, default=str) for r in runs}
    if len(ds) > 1:
        warn = (
            '<p class="warn">These runs are on different data sets (or different versions of one): only the '
            "problems they share are compared per problem.</p>"
        )
    return f'{warn}{_run_metrics_table(runs)}<h3>Pairwise</h3>{_agreement(runs)}<div class="charts">{"".join(charts)}</div>'


def render(runs: Sequence[LoadedRun], *, page_size: int = 50) -> str:
    compare = len(runs) > 1
    if compare:
        title = f"mathagent compare — {len(runs)} runs: " + ", ".join(f"{r.name} ({r.mode})" for r in runs)
    else:
        ds = settings_rows(runs[0].header)
        dataset = next((v for sec, k, v in ds if k == "data set"), runs[0].name)
        title = f"mathagent run — {dataset} · {runs[0].mode}"
    body_summary = _reading_notes(runs) + (_compare_summary(runs) if compare else _one_run_summary(runs[0]))
    view = "problems" if compare else "samples"
    filters = (
        ("all", "differ", "all-correct", "all-wrong") if compare else ("all", "correct", "wrong", "error")
    )
    buttons = "".join(f'<button data-filter="{f}">{f.replace("-", " ")}</button>' for f in filters)
    data = _page_data(runs)
    listhead = ""
    if compare:
        listhead = (
            '<div class="prow listhead"><span class="pid">problem</span><span class="qtext">question</span>'
            '<span class="gold">gold</span>'
            + "".join(
                f'<span class="verdict">{esc(r.name)}<br><small>{esc(r.mode)}</small></span>' for r in runs
            )
            + "</div>"
        )
    traces = []
    i = 0
    for run in runs:
        for rec in run.records:
            traces.append(
                f'<script type="text/x-trace" id="t{i}">{raw_html_text(render_sample_body(rec))}</script>'
            )
            i += 1
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f"<style>{katex_css()}</style><style>{asset('style.css')}</style></head>"
        f'<body data-view="{view}" data-page-size="{int(page_size)}"><header><h1>{esc(title)}</h1></header><main>'
        f'<section id="settings"><h2>Settings</h2><label class="fold"{"" if compare else " hidden"}>'
        f'<input type="checkbox" id="show-all-settings"> show provenance that agrees</label>'
        f"{settings_table(runs)}</section>"
        f'<section id="summary"><h2>Summary</h2>{body_summary}</section>'
        f'<section id="items"><h2>{"Problems" if compare else "Samples"}</h2><div class="controls">'
        f'<input id="search" type="search" placeholder="search question, answer, id…">{buttons}'
        f'<span id="shown"></span></div><div class="pager"></div>{listhead}<div id="list"></div><div class="pager"></div>'
        f"</section></main>"
        f'<script type="application/json" id="report-data">{json_script_text(data)}</script>'
        f"<script>{script_text(katex_js())}</script><script>{script_text(asset('app.js'))}</script>"
        + "".join(traces)
        + "</body></html>"
    )


def write_report(run_dir: str | Path, out: str | Path | None = None, *, page_size: int = 50) -> Path:
    """Write ``report.html`` for one run into its folder (or ``out``)."""
    run = load_run(run_dir)
    path = Path(out) if out else run.path / "report.html"
    path.write_text(render([run], page_size=page_size), encoding="utf-8")
    return path


def write_compare(run_dirs: Sequence[str | Path], out: str | Path, *, page_size: int = 50) -> Path:
    """Write one page comparing several runs side by side."""
    paths = [Path(p) for p in run_dirs]
    runs = [load_run(p, name) for p, name in zip(paths, display_names(paths), strict=True)]
    path = Path(out)
    path.write_text(render(runs, page_size=page_size), encoding="utf-8")
    return path
