"""`mathagent report`: self-contained pages (one run, or several compared), checked in headless Chromium
driven over the DevTools protocol with the network cut off."""

from __future__ import annotations

import json
import re

import pytest
from mathagent.agent.trace import Step, StepKind, StopReason, Trace, VerificationRound, VerificationState
from mathagent.evals.cli_report import main as report_main
from mathagent.evals.report.cdp import Chromium, find_chromium
from mathagent.evals.report.settings import run_mode, settings_rows
from mathagent.evals.runs import RunDir
from mathagent.sandbox.base import ExecResult

QUESTION = "question {pid} needle{pid}: if $x^2 = 16$ and a pen costs $5 and a book $10, find \\(x > 0\\)."


def make_run(path, *, verify=True, mode=None, answers=None, weights="1,0.5,0.2"):
    """A k=2 run of three problems (one failed sample) in the run-folder format, graded by hand."""
    cfg = {"dataset": "math500", "k": 2, "weights": weights, "verify": verify, "model": "tiny", "seed": 0}
    if mode:
        cfg["mode"] = mode
    run = RunDir.open(
        path,
        {"config": cfg, "grading_dataset": "math500"},
        {"git_revision": "abc123", "package_versions": {"sympy": "1.13"}, "argv": ["--k", "2"]},
    )
    rows = answers or {"p1": ["4", "4"], "p2": ["7", "8"], "p3": [None, "2"]}
    meta = {
        "p1": ("1", "Algebra", "4"),
        "p2": ("3", "Geometry", "8"),
        "p3": ("5", "Algebra", "3"),
        "p4": ("2", "Algebra", "1"),
    }
    for pid, ans_list in rows.items():
        level, subject, gold = meta[pid]
        for i, ans in enumerate(ans_list):
            steps = (
                Step(StepKind.TEXT, "Compute $\\frac{a}{b}$ first. It costs $5 and $10 here."),
                Step(StepKind.CODE, "x = 2 + 2  # add\nprint(x)"),
                Step(StepKind.EXECUTION, "4", ExecResult(stdout="4\n")),
                Step(StepKind.TEXT, f"So \\boxed{{{ans}}}"),
            )
            tr = Trace(
                problem=QUESTION.format(pid=pid),
                steps=steps,
                final_answer=ans,
                stop_reason=StopReason.ANSWERED if ans else StopReason.ERROR,
                verification=(VerificationRound(1, VerificationState.TRUE, ans, "checked"),)
                if verify
                else (),
            )
            failed = ans is None
            run.append(
                {
                    "problem_id": pid,
                    "sample_index": i,
                    "status": "failed" if failed else "ok",
                    "error": "BackendError: 503" if failed else None,
                    "question": tr.problem,
                    "gold": gold,
                    "answer": ans,
                    "correct": ans == gold,
                    "level": level,
                    "subject": subject,
                    "verification_state": "T" if verify and not failed else None,
                    "exec": {"cells": 1, "errors": 0, "timeouts": 0, "restarts": 0},
                    "tokens_in": 10,
                    "tokens_out": 5,
                    "time_s": 0.5,
                    "trace": tr.to_dict(),
                }
            )
    return run


def page_data(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S)
    return json.loads(m.group(1))


# -- no browser ----------------------------------------------------------------------------------------
def test_mode_of_a_run_and_old_runs_without_one():
    assert run_mode({"identity": {"config": {"mode": "pot", "verify": True}}}) == "pot"
    assert run_mode({"identity": {"config": {"verify": True}}}) == "loop+verify"
    assert run_mode({"identity": {"config": {"verify": False}}}) == "loop"
    assert run_mode({"identity": {"config": {"extra": {"agent": {"mode": "cot"}}}}}) == "cot"


def test_settings_are_a_readable_table_with_every_field():
    header = {
        "identity": {
            "config": {"k": 4, "verify": False, "base_url": None, "extra": {"agent": {"max_rounds": 6}}},
            "dataset": {"name": "gsm8k", "sha256": "3730d312aaaaaaaaaaaa"},
        },
        "git_revision": "abc",
        "package_versions": {"sympy": "1.13", "openai": None},
        "argv": ["--k", "4", "--dataset", "my file.jsonl"],
    }
    rows = {(sec, name): val for sec, name, val in settings_rows(header)}
    assert rows[("run", "mode")] == "loop"
    assert rows[("run", "samples per problem (k)")] == "4"
    assert rows[("run", "self-verification")] == "no"
    assert rows[("run", "server")] == "—"
    assert rows[("run", "data set sha256")] == "3730d312aaaa"
    assert rows[("agent", "max_rounds")] == "6"
    assert rows[("provenance", "package versions")] == "sympy 1.13 · openai —"
    assert rows[("provenance", "argv")] == "mathagent eval --k 4 --dataset 'my file.jsonl'"
    assert not any("{" in v for v in rows.values())  # no raw dicts


def test_report_html_is_self_contained(tmp_path):
    make_run(tmp_path / "run")
    assert report_main([str(tmp_path / "run")]) == 0
    html = (tmp_path / "run" / "report.html").read_text()
    assert "<svg" in html and "needlep2" in html and 'class="bi"' in html and 'class="cm"' in html
    assert not re.search(r'(src|href)=["\']?(https?:)?//', html)  # nothing fetched from the network
    assert "url(fonts/" not in html and html.count("data:font/woff2;base64,") == 20  # KaTeX fonts inlined
    assert "katex" in html and '<table class="settings">' in html
    assert "<th>self-verification</th><td>yes</td>" in html and "<th>mode</th><td>loop+verify</td>" in html
    data = page_data(html)
    assert [p[0] for p in data["problems"]] == ["p1", "p2", "p3"]
    assert [s[3] for s in data["samples"]] == [
        1,
        1,
        0,
        1,
        2,
        0,
    ]  # correct, correct, wrong, correct, error, wrong
    # verdicts: the weighted vote's winner, graded (p2: 7 and 8 tie on score and count -> first wins, wrong)
    assert data["verdicts"][0] == [[2, 2, 1, "4"], [1, 2, 0, "7"], [0, 2, 0, "2"]]
    # each trace is its own inert script, pre-rendered, and nothing in it can close the script early
    assert len(re.findall(r'<script type="text/x-trace" id="t\d+">', html)) == 6


def test_a_trace_cannot_break_out_of_its_script(tmp_path):
    run = make_run(tmp_path / "run")
    evil = "</script><script>document.title='pwned'</script><!--"
    rec = dict(run.records()[0], question=evil, answer=evil)
    rec["trace"] = dict(rec["trace"], steps=[{"kind": "text", "content": evil, "phase": "solve"}])
    run.append(rec)
    assert report_main([str(tmp_path / "run")]) == 0
    html = (tmp_path / "run" / "report.html").read_text()
    scripts = _scripts(html)
    assert not any("pwned" in body for attrs, body in scripts if attrs.get("type") is None)  # nothing runs
    assert [a.get("type") for a, _ in scripts].count(None) == 2  # KaTeX and the app, nothing more
    assert page_data(html)["samples"][0][4] == evil


def _scripts(html: str) -> list[tuple[dict, str]]:
    """Script elements as an HTML parser sees them (script content is raw text up to ``</script``)."""
    from html.parser import HTMLParser

    found: list[tuple[dict, str]] = []

    class P(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag == "script":
                found.append((dict(attrs), ""))

        def handle_data(self, data):
            if found and self.lasttag == "script":
                found[-1] = (found[-1][0], found[-1][1] + data)

    P().feed(html)
    return found


def test_compare_cli_writes_one_page_with_verdicts_and_pairwise_counts(tmp_path, monkeypatch):
    make_run(tmp_path / "a" / "loop", verify=False)
    make_run(
        tmp_path / "b" / "loop", mode="pot", answers={"p1": ["5", "5"], "p2": ["8", "8"], "p4": ["1", "1"]}
    )
    monkeypatch.chdir(tmp_path)
    assert report_main([str(tmp_path / "a" / "loop"), str(tmp_path / "b" / "loop")]) == 0
    html = (tmp_path / "compare.html").read_text()
    data = page_data(html)
    assert [r["name"] for r in data["runs"]] == ["a/loop", "b/loop"]  # same folder names: parents added
    assert [r["mode"] for r in data["runs"]] == ["loop", "pot"]
    ids = [p[0] for p in data["problems"]]
    assert ids == ["p1", "p2", "p3", "p4"]
    verdict = {
        (r, ids[p]): (v[2] if v else None)
        for r, row in enumerate(data["verdicts"])
        for p, v in enumerate(row)
    }
    assert verdict[(0, "p1")] == 1 and verdict[(1, "p1")] == 0  # they differ on p1
    assert verdict[(0, "p4")] is None and verdict[(1, "p3")] is None  # not run
    # pairwise over common problems p1, p2: both right 0, only A 1 (p1), only B 1 (p2), both wrong 0
    assert re.search(
        r"<td>a/loop</td><td>b/loop</td><td>2</td><td>0</td><td>1</td><td>1</td><td>0</td><td>1</td>", html
    )
    assert 'class="differs"><th>mode</th>' in html  # settings side by side, differences marked


def test_mcnemar_exact_p_matches_hand_computed_values():
    from mathagent.evals.report.html import mcnemar_p

    assert mcnemar_p(0, 0) == 1.0 and mcnemar_p(1, 1) == 1.0
    assert mcnemar_p(0, 5) == pytest.approx(2 / 32)  # 2 * (1/2)^5
    assert mcnemar_p(2, 10) == pytest.approx(2 * (1 + 12 + 66) / 4096)
    assert mcnemar_p(10, 2) == mcnemar_p(2, 10)


def test_report_cli_errors_clearly(tmp_path, capsys):
    assert report_main([str(tmp_path / "nothing")]) == 2
    assert "not a run folder" in capsys.readouterr().err
    make_run(tmp_path / "bad")
    (tmp_path / "bad" / "header.json").write_text("{not json")
    assert report_main([str(tmp_path / "bad")]) == 2
    assert "header.json" in capsys.readouterr().err
    make_run(tmp_path / "ok")
    assert report_main([str(tmp_path / "ok"), "--out", str(tmp_path / "no" / "such" / "dir.html")]) == 2
    assert "mathagent report:" in capsys.readouterr().err and not (tmp_path / "no").exists()
    (tmp_path / "ok" / "summary.json").write_text("{torn")  # derived data: recomputed, not fatal
    assert report_main([str(tmp_path / "ok")]) == 0
    assert page_data((tmp_path / "ok" / "report.html").read_text())["verdicts"][0][0] == [2, 2, 1, "4"]
    empty = tmp_path / "empty"
    RunDir.open(empty, {"config": {"dataset": "gsm8k"}})  # a run that has no samples yet
    assert report_main([str(empty)]) == 0
    assert page_data((empty / "report.html").read_text())["samples"] == []


def test_mode_and_vote_weights_from_a_newer_header(tmp_path):
    """Runs written with --mode record it at the header's top level and the weights they voted with."""
    run = make_run(tmp_path / "run", answers={"p1": ["4", "5"], "p2": ["8", "8"], "p3": ["3", "3"]})
    run.header.update(mode="pot", vote_weights={"weights": "0.1,1,1", "source": "calibrated"})
    (run.path / "header.json").write_text(json.dumps(run.header))
    assert report_main([str(run.path)]) == 0
    html = (run.path / "report.html").read_text()
    assert "<th>mode</th><td>pot</td>" in html and "<td>0.1,1,1 (calibrated)</td>" in html
    assert page_data(html)["runs"][0]["mode"] == "pot"
    hdr = {"identity": {"config": {"verify": True, "extra": {"agent": {"mode": "loop", "verify": True}}}}}
    assert run_mode(hdr) == "loop+verify"
    hdr["identity"]["config"]["extra"]["agent"]["verify"] = False
    assert run_mode(hdr) == "loop"


def test_verdicts_an_older_grader_recorded_are_shown_as_todays_grader_judges_them(tmp_path):
    """A record graded by an older grader (no stamp here) is judged again on the page, its summary is
    recomputed, the page says which samples changed, and the run folder is left as it was."""
    run = make_run(tmp_path / "run", answers={"p1": ["4", "4"], "p2": ["8.0", "7"], "p3": ["3", "2"]})
    before = (run.path / "samples.jsonl").read_bytes()
    assert [r["correct"] for r in run.records() if r["problem_id"] == "p2"] == [False, False]
    assert report_main([str(run.path)]) == 0
    html = (run.path / "report.html").read_text()
    data = page_data(html)
    assert data["verdicts"][0][1] == [1, 2, 1, "8.0"]  # p2: 8.0 now right, and the vote's winner
    assert "1 verdict(s) recorded by an older grader differ" in html and "p2#0" in html
    assert (run.path / "samples.jsonl").read_bytes() == before
    make_run(tmp_path / "same")  # nothing to regrade: no note
    assert report_main([str(tmp_path / "same")]) == 0
    assert "older grader" not in (tmp_path / "same" / "report.html").read_text()


# -- in Chromium, offline --------------------------------------------------------------------------------
needs_chromium = pytest.mark.skipif(find_chromium() is None, reason="no chromium")


def _offline_page(browser, url):
    browser.open(url)
    assert browser.js("document.body.dataset.ready") == "1"  # the script ran
    return browser


def _no_network(browser):
    bad = [u for u in browser.requests if not (u.startswith("file://") or u.startswith("data:"))]
    assert not bad, bad


@pytest.mark.browser
@needs_chromium
def test_report_in_chromium_offline(tmp_path):
    make_run(tmp_path / "run")
    assert report_main([str(tmp_path / "run"), "--page-size", "4"]) == 0
    url = (tmp_path / "run" / "report.html").as_uri()
    with Chromium(tmp_path / "chrome") as b:
        _offline_page(b, url)
        assert b.js("document.getElementById('shown').dataset.shown") == "6"
        # pagination: 4 per page -> 2 pages; the second holds the last two samples
        assert b.js("[document.body.dataset.pages, document.querySelectorAll('#list details').length]") == [
            "2",
            4,
        ]
        b.js("document.querySelector('.pager button[data-page=\"2\"]').click()")
        assert b.js("[...document.querySelectorAll('#list details')].map(d => d.dataset.i).join()") == "4,5"
        # a trace is not in the DOM until its sample is opened, then it is, with LaTeX typeset by KaTeX
        assert b.js("document.querySelector('#list details .body').childElementCount") == 0
        opened = b.js(
            "(() => { const d = document.querySelector('#list details'); d.open = true;"
            " return new Promise(r => setTimeout(() => r({code: d.querySelectorAll('pre.code').length,"
            " katex: d.querySelectorAll('.body .katex').length, text: d.querySelector('.body').innerText}), 50)); })()"
        )
        assert opened["code"] == 1 and opened["katex"] >= 3  # question x^2 and x>0, \frac, \boxed
        assert "a pen costs $5 and a book $10" in opened["text"]  # currency stays text
        assert "x = 2 + 2" in opened["text"]
        # the KaTeX fonts came from the page itself
        fonts = b.js(
            "document.fonts.ready.then(() => [...document.fonts].filter(f => f.status === 'loaded')"
            ".map(f => f.family))"
        )
        assert any(f.startswith("KaTeX_Main") or f == "KaTeX_Main" for f in fonts), fonts
        # filters and search
        b.js("document.querySelector('button[data-filter=\"wrong\"]').click()")
        assert b.js("document.getElementById('shown').dataset.shown") == "2"
        b.js("document.querySelector('button[data-filter=\"all\"]').click()")
        b.js(
            "const s = document.getElementById('search'); s.value = 'needlep3'; s.dispatchEvent(new Event('input'))"
        )
        assert b.js("document.getElementById('shown').dataset.shown") == "2"
        # how text is split into math: pandoc's rule for $, currency stays text
        cases = {
            "a pen costs $5 and a book $10": [[0, "a pen costs $5 and a book $10"]],
            "so $x^2$ and $$y$$": [[0, "so "], [1, "x^2"], [0, " and "], [2, "y"]],
            "\\(a\\) then \\[b\\]": [[1, "a"], [0, " then "], [2, "b"]],
            "answer \\boxed{\\frac{1}{2}}.": [[0, "answer "], [1, "\\boxed{\\frac{1}{2}}"], [0, "."]],
            "$ 5 $ and \\$3": [[0, "$ 5 $ and $3"]],
            "total $x$5": [[0, "total $x$5"]],
        }
        for text, parts in cases.items():
            assert b.js(f"mathagentReport.splitTex({json.dumps(text)})") == parts, text
        _offline_page(b, url + "#filter=error")
        assert b.js("document.getElementById('shown').dataset.shown") == "1"
        _no_network(b)
        shot = b.send("Page.captureScreenshot", {"format": "png"})["data"]
        assert len(shot) > 10_000


@pytest.mark.browser
@needs_chromium
def test_compare_in_chromium_offline(tmp_path):
    make_run(tmp_path / "loop", verify=False)
    make_run(tmp_path / "pot", mode="pot", answers={"p1": ["5", "5"], "p2": ["8", "8"], "p3": ["3", "1"]})
    out = tmp_path / "compare.html"
    assert report_main([str(tmp_path / "loop"), str(tmp_path / "pot"), "--out", str(out)]) == 0
    with Chromium(tmp_path / "chrome") as b:
        _offline_page(b, out.as_uri())
        assert b.js("document.getElementById('shown').dataset.shown") == "3"
        b.js("document.querySelector('button[data-filter=\"differ\"]').click()")  # p1 (loop right), p2, p3
        assert (
            b.js("[...document.querySelectorAll('#list details.problem')].map(d => d.dataset.p).join()")
            == "0,1,2"
        )
        b.js("document.querySelector('button[data-filter=\"all-wrong\"]').click()")
        assert b.js("document.getElementById('shown').dataset.shown") == "0"
        b.js("document.querySelector('button[data-filter=\"all\"]').click()")
        cols = b.js(
            "(() => { const d = document.querySelector('#list details.problem'); d.open = true;"
            " return new Promise(r => setTimeout(() => r([...d.querySelectorAll('.runcol')].map(c =>"
            " [c.querySelector('.runname').textContent, c.querySelectorAll('details.sample').length])), 50)); })()"
        )
        assert cols == [["loop · loop", 2], ["pot · pot", 2]]
        text = b.js(
            "(() => { const s = document.querySelector('#list details.problem .runcol details.sample'); s.open = true;"
            " return new Promise(r => setTimeout(() => r(s.querySelector('.body').innerText), 50)); })()"
        )
        assert "x = 2 + 2" in text
        assert b.js("document.querySelectorAll('svg.chart').length") >= 3
        _no_network(b)


@pytest.mark.browser
@pytest.mark.slow
@needs_chromium
def test_ten_thousand_samples_open_paginated_and_load_traces_on_demand(tmp_path):
    from mathagent.evals.report.synthetic import write_synthetic_run

    run = write_synthetic_run(tmp_path / "big", n_samples=10_000, k=4)
    assert report_main([str(run)]) == 0
    with Chromium(tmp_path / "chrome") as b:
        _offline_page(b, (run / "report.html").as_uri())
        assert b.js("document.getElementById('shown').dataset.total") == "10000"
        assert b.js("document.querySelectorAll('#list details').length") == 50  # one page in the DOM
        assert b.js("document.querySelectorAll('#list .body *').length") == 0  # no trace rendered yet
        b.js("document.querySelector('.pager button[data-page=\"200\"]').click()")
        assert b.js("document.body.dataset.page") == "200"
        last = b.js(
            "(() => { const d = [...document.querySelectorAll('#list details')].pop(); d.open = true;"
            " return new Promise(r => setTimeout(() => r([d.dataset.i, d.querySelectorAll('.katex').length]), 50)); })()"
        )
        assert last[0] == "9999" and last[1] > 0
        b.js(
            "const s = document.getElementById('search'); s.value = 'triangle'; s.dispatchEvent(new Event('input'))"
        )
        n = int(b.js("document.getElementById('shown').dataset.shown"))
        assert 0 < n < 10_000
        _no_network(b)


@pytest.mark.kernel
@pytest.mark.browser
@pytest.mark.slow
@needs_chromium
def test_report_of_a_real_eval_run(tmp_path, capsys):
    """`mathagent eval` (scripted model, real kernel) writes the run; its report opens offline and shows
    the real header as a table and the real traces, code output included."""
    from mathagent.evals.cli_eval import main as eval_main
    from mathagent.evals.datasets import load_problems

    with open(tmp_path / "script.jsonl", "w") as f:  # the scripted model: one turn per problem, p1 wrong
        for i, p in enumerate(load_problems("gsm8k", limit=3)):
            a = str(int(p.gold) + (i == 1))
            turn = f"Let me compute.\n```python\nprint({a})\n```\n```output\n{a}\n```\nSo $\\boxed{{{a}}}$."
            f.write(json.dumps({"problem_id": p.id, "turns": [turn]}) + "\n")
    run = tmp_path / "run"
    args = [
        "--dataset",
        "gsm8k",
        "--limit",
        "3",
        "--backend",
        "scripted",
        "--script",
        str(tmp_path / "script.jsonl"),
    ]
    assert eval_main([*args, "--run-dir", str(run), "--no-verify", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_failed"] == 0, summary["failed_reasons"]  # the kernel ran every sample
    assert report_main([str(run)]) == 0
    with Chromium(tmp_path / "chrome") as b:
        _offline_page(b, (run / "report.html").as_uri())
        settings = b.js(
            "Object.fromEntries([...document.querySelectorAll('table.settings tr')]"
            ".filter(r => r.querySelector('td')).map(r => [r.querySelector('th').textContent,"
            " r.querySelector('td').textContent]))"
        )
        assert settings["mode"] == "loop" and settings["self-verification"] == "no"
        assert settings["backend"] == "scripted" and settings["data set"] == "gsm8k"
        assert settings["argv"].startswith("mathagent eval --dataset gsm8k")
        b.js("document.querySelector('button[data-filter=\"wrong\"]').click()")
        body = b.js(
            "(() => { const d = document.querySelector('#list details'); d.open = true;"
            " return new Promise(r => setTimeout(() => r(d.querySelector('.body').innerText), 50)); })()"
        )
        assert "print(" in body and "EXECUTION" in body.upper()
        _no_network(b)
