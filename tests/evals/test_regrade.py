"""Verdicts under one grader: records are stamped with the grader that judged them, and a summary
judges again the records another grader judged (a run resumed after an upgrade), appending today's
verdict to the run folder. Scripted turns, real kernel pool, real grader."""

from __future__ import annotations

import json
from pathlib import Path

from mathagent.agent.grading import grader_version
from mathagent.evals.cli_eval import main as eval_main
from mathagent.evals.summary import regrade

ROWS = [
    ("How many hours a day?", "6", "It is $\\boxed{6 \\text{ hours/day}}$."),
    ("2+3?", "5", "So $\\boxed{5}$."),
]


def _files(tmp_path: Path) -> tuple[Path, Path]:
    problems, script = tmp_path / "p.jsonl", tmp_path / "s.jsonl"
    problems.write_text(
        "".join(
            json.dumps({"id": str(i), "question": q, "answer": a}) + "\n" for i, (q, a, _) in enumerate(ROWS)
        )
    )
    script.write_text(
        "".join(json.dumps({"problem_id": str(i), "turns": [t]}) + "\n" for i, (_, _, t) in enumerate(ROWS))
    )
    return problems, script


def _lines(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "samples.jsonl").read_text().splitlines() if x.strip()]


def test_grader_version_names_this_grader():
    v = grader_version()
    assert len(v) == 12 and int(v, 16) >= 0 and grader_version() == v


def test_regrade_judges_only_records_of_another_grader():
    today = grader_version()
    recs = [
        # judged by an older grader that read '3*sqrt(3)/4' as letters: wrong then, right today
        {"problem_id": "a", "status": "ok", "answer": "3*sqrt(3)/4", "gold": "\\frac{3\\sqrt{3}}{4}",
         "dataset": "math", "correct": False, "grader": "0ld0ld0ld0ld"},
        # no stamp (written before stamps): judged again, unchanged, left as it was
        {"problem_id": "b", "status": "ok", "answer": "5", "gold": "5", "dataset": "gsm8k", "correct": True},
        # stamped by today's grader: trusted as it is (no grading cost), even if it looks odd
        {"problem_id": "c", "status": "ok", "answer": "5", "gold": "5", "dataset": "gsm8k", "correct": False,
         "grader": today},
        # a failed sample keeps its verdict
        {"problem_id": "d", "status": "failed", "answer": None, "gold": "5", "correct": False},
    ]  # fmt: skip
    out, changed = regrade(recs)
    assert [r["correct"] for r in out] == [True, True, False, False]
    assert [r["problem_id"] for r in changed] == ["a"]
    assert changed[0]["grader"] == today and changed[0]["regraded_from"] is False
    assert recs[0]["correct"] is False  # the caller's records are not modified
    assert out[1] is recs[1] and out[2] is recs[2]


def test_eval_resumed_after_a_grader_change_counts_todays_verdicts(tmp_path, capsys):
    problems, script = _files(tmp_path)
    run_dir = tmp_path / "run"
    args = ["--dataset", str(problems), "--backend", "scripted", "--script", str(script), "--run-dir", str(run_dir),
            "--no-verify", "--concurrency", "1", "--json"]  # fmt: skip
    assert eval_main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["grading"] == {"grader": grader_version(), "regraded": 0}
    lines = _lines(run_dir)
    assert [(r["answer"], r["correct"], r["grader"]) for r in lines] == [
        ("6 hours/day", True, grader_version()),  # a rate after the number: right today
        ("5", True, grader_version()),
    ]
    # as an older grader would have left it: sample 0 judged wrong, stamped with that grader
    lines[0].update(correct=False, grader="0ld0ld0ld0ld")
    (run_dir / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert eval_main(args) == 0  # nothing to run: the summary alone
    resumed = json.loads(capsys.readouterr().out)
    assert resumed["grading"]["regraded"] == 1 and resumed["overall"]["accuracy"] == 1.0
    after = _lines(run_dir)
    assert len(after) == 3 and after[-1]["problem_id"] == "0" and after[-1]["regraded_from"] is False
    assert after[-1]["correct"] is True and after[-1]["grader"] == grader_version()
    assert eval_main(args) == 0  # again: the folder already holds today's verdicts, nothing is added
    assert json.loads(capsys.readouterr().out)["grading"]["regraded"] == 0 and len(_lines(run_dir)) == 3
