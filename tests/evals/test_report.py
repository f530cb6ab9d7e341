"""`mathagent report`: a self-contained HTML page, checked in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from mathagent.agent.trace import Step, StepKind, StopReason, Trace, VerificationRound, VerificationState
from mathagent.evals.cli_report import main as report_main
from mathagent.evals.runs import RunDir
from mathagent.sandbox.base import ExecResult

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def make_run(path):
    run = RunDir.open(
        path, {"config": {"dataset": "math500", "k": 2, "weights": "1,0.5,0.2"}, "grading_dataset": "math500"}
    )
    for pid, level, subject, answers, gold in (
        ("p1", "1", "Algebra", ["4", "4"], "4"),
        ("p2", "3", "Geometry", ["7", "8"], "8"),
        ("p3", "5", "Algebra", [None, "2"], "3"),
    ):
        for i, ans in enumerate(answers):
            steps = (
                Step(StepKind.TEXT, "Compute it."),
                Step(StepKind.CODE, "x = 2 + 2  # add\nprint(x)"),
                Step(StepKind.EXECUTION, "4", ExecResult(stdout="4\n")),
                Step(StepKind.TEXT, f"So \\boxed{{{ans}}}"),
            )
            tr = Trace(
                problem=f"question {pid} needle{pid}",
                steps=steps,
                final_answer=ans,
                stop_reason=StopReason.ANSWERED if ans else StopReason.ERROR,
                verification=(VerificationRound(1, VerificationState.TRUE, ans, "checked"),),
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
                    "verification_state": "T",
                    "exec": {"cells": 1, "errors": 0, "timeouts": 0, "restarts": 0},
                    "tokens_in": 10,
                    "tokens_out": 5,
                    "time_s": 0.5,
                    "trace": tr.to_dict(),
                }
            )
    return run


def test_report_html_is_self_contained(tmp_path):
    make_run(tmp_path / "run")
    assert report_main([str(tmp_path / "run")]) == 0
    html = (tmp_path / "run" / "report.html").read_text()
    assert "<svg" in html and "needlep2" in html and 'class="bi"' in html and 'class="cm"' in html
    assert not re.search(r'(src|href)="https?://', html)  # nothing fetched from the network


def _chromium(*args, tmp_path):
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'chrome'}",
            "--virtual-time-budget=3000",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.browser
@pytest.mark.skipif(not shutil.which(CHROMIUM) and not shutil.os.path.exists(CHROMIUM), reason="no chromium")
def test_report_in_headless_chromium(tmp_path):
    make_run(tmp_path / "run")
    assert report_main([str(tmp_path / "run")]) == 0
    url = (tmp_path / "run" / "report.html").as_uri()
    dom = _chromium("--dump-dom", url, tmp_path=tmp_path).stdout
    assert 'data-ready="1"' in dom  # the script ran
    assert "6 of 6 samples shown" in dom
    assert "accuracy by level" in dom and "k vs accuracy" in dom
    wrong = _chromium("--dump-dom", url + "#filter=wrong", tmp_path=tmp_path).stdout
    assert "2 of 6 samples shown" in wrong
    found = _chromium("--dump-dom", url + "#q=needlep3", tmp_path=tmp_path).stdout
    assert "2 of 6 samples shown" in found
    errors = _chromium("--dump-dom", url + "#filter=error", tmp_path=tmp_path).stdout
    assert "1 of 6 samples shown" in errors
    shot = tmp_path / "report.png"
    _chromium(f"--screenshot={shot}", "--window-size=1200,1400", url, tmp_path=tmp_path)
    assert shot.exists() and shot.stat().st_size > 10_000
