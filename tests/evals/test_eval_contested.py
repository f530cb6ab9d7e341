"""``eval --verify-contested``: a problem's k samples are solved together and verify only when their
answers disagree; scripted turns per sample, the real loop and kernel, a real run folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mathagent.evals.cli_eval import main as eval_main
from mathagent.evals.datasets import load_problems
from mathagent.evals.study import find_runs, verification_rows

pytestmark = pytest.mark.kernel

VERIFY = ["Check.\n```python\nprint(True)\n```", "VERDICT: TRUE"]


def _solve(answer: str | None) -> list[str]:
    if answer is None:
        return ["I cannot solve this one."]
    return [f"Compute.\n```python\nprint({answer})\n```", f"So the answer is \\boxed{{{answer}}}."]


def write_script(path: Path) -> list:
    """Problem 0: both samples give the gold answer; problem 1: they disagree; problem 2: sample 1
    gives no answer and sample 0 the gold one."""
    problems = load_problems("gsm8k", limit=3)
    plan = [
        (problems[0].gold, problems[0].gold),
        (problems[1].gold, str(int(problems[1].gold) + 1)),
        (problems[2].gold, None),
    ]
    with open(path, "w") as f:
        for p, answers in zip(problems, plan, strict=True):
            f.write(json.dumps({"problem_id": p.id, "samples": [_solve(a) + VERIFY for a in answers]}) + "\n")
    return problems


def records(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "samples.jsonl").read_text().splitlines()]


def test_eval_verifies_only_contested_problems_and_resumes_by_problem(tmp_path, capsys):
    script = tmp_path / "script.jsonl"
    problems = write_script(script)
    run_dir = tmp_path / "run"
    args = ["--dataset", "gsm8k", "--limit", "3", "--k", "2", "--backend", "scripted", "--script", str(script),
            "--run-dir", str(run_dir), "--verify", "--verify-contested", "--json"]  # fmt: skip
    assert eval_main(args) == 0
    recs = {(r["problem_id"], r["sample_index"]): r for r in records(run_dir)}
    assert len(recs) == 6
    agreed, contested, half = (p.id for p in problems)
    for i in (0, 1):
        assert recs[(agreed, i)]["verification_state"] is None and recs[(agreed, i)]["correct"]
        assert recs[(agreed, i)]["trace"]["meta"]["verification_skipped"]
        assert recs[(contested, i)]["verification_state"] == "T"
        assert "verification_skipped" not in recs[(contested, i)]["trace"]["meta"]
    assert [recs[(contested, i)]["correct"] for i in (0, 1)] == [True, False]
    assert recs[(half, 0)]["verification_state"] is None and recs[(half, 1)]["answer"] is None
    header = json.loads((run_dir / "header.json").read_text())
    assert header["identity"]["config"]["extra"]["verify_contested"] is True
    summary = json.loads(capsys.readouterr().out)
    assert summary["counts"]["total"] == 6 and summary["counts"]["pending"] == 0

    # the study reads skipped samples as their own row, not as unverified ones
    [run] = find_runs([run_dir])
    states = verification_rows(run)["states"]
    assert (states["skipped"]["n"], states["T"]["n"], states["none"]["n"]) == (3, 2, 1)  # none: no answer

    # killed after one sample of the last problem was saved: that problem is solved again in full
    lines = (run_dir / "samples.jsonl").read_text().splitlines(keepends=True)
    (run_dir / "samples.jsonl").write_text("".join(lines[:5]))
    assert eval_main(args) == 0
    after = records(run_dir)
    assert len(after) == 7 and [(r["problem_id"], r["sample_index"]) for r in after[5:]] == [
        (half, 0),
        (half, 1),
    ]
    assert json.loads(capsys.readouterr().out)["counts"]["pending"] == 0


def test_without_the_flag_every_sample_verifies_and_the_identity_is_unchanged(tmp_path, capsys):
    script = tmp_path / "script.jsonl"
    problems = write_script(script)
    run_dir = tmp_path / "run"
    args = ["--dataset", "gsm8k", "--limit", "3", "--k", "2", "--backend", "scripted", "--script", str(script),
            "--run-dir", str(run_dir), "--verify", "--json"]  # fmt: skip
    assert eval_main(args) == 0
    recs = {(r["problem_id"], r["sample_index"]): r for r in records(run_dir)}
    assert all(recs[(problems[0].id, i)]["verification_state"] == "T" for i in (0, 1))
    header = json.loads((run_dir / "header.json").read_text())
    assert "verify_contested" not in header["identity"]["config"]["extra"]
    # the same folder asked to verify contested problems only is another run: refused, not mixed
    capsys.readouterr()
    assert eval_main([*args, "--verify-contested"]) == 2
    assert "different configuration" in capsys.readouterr().err


def test_calibration_leaves_out_skipped_samples():
    from mathagent.agent.calibrate import calibrate_records

    def rec(pid: str, i: int, state: str | None, ok: bool, skipped: bool = False) -> dict:
        meta = {"verification_skipped": "agreed"} if skipped else {}
        return {"problem_id": pid, "sample_index": i, "answer": "1" if ok else "2", "correct": ok,
                "verification_state": state, "status": "ok", "trace": {"meta": meta}}  # fmt: skip

    recs = [rec("a", 0, "T", True), rec("a", 1, "F", False)]
    recs += [rec(f"s{j}", i, None, True, skipped=True) for j in range(5) for i in (0, 1)]
    cal = calibrate_records(recs, model="m", prompt_hash="h", dataset="gsm8k")
    assert cal.counts == {"T": [1, 1], "U": [0, 0], "F": [1, 0]} and cal.source["samples"] == 2
