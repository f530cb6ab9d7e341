"""Run folder: durable appends, resume, torn-line repair, no double counting, retry-failed, header checks."""

from __future__ import annotations

import json

import pytest
from mathagent.evals.runs import RunDir, RunMismatch

ID = {"config": {"k": 2}, "dataset": {"name": "x", "sha256": "abc"}}


def rec(pid: str, i: int, status: str = "ok", **kw) -> dict:
    return {"problem_id": pid, "sample_index": i, "status": status, **kw}


def test_append_and_resume_skips_done(tmp_path):
    run = RunDir.open(tmp_path / "r", ID, {"git": "x"})
    run.append(rec("a", 0))
    run.append(rec("a", 1))
    header = json.loads((tmp_path / "r" / "header.json").read_text())
    assert header["identity"] == ID and header["git"] == "x"
    run2 = RunDir.open(tmp_path / "r", ID)
    keys = [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    assert run2.pending(keys) == [("b", 0), ("b", 1)]
    assert len(run2.records()) == 2
    assert "resumed" in json.loads((tmp_path / "r" / "header.json").read_text())


def test_torn_last_line_is_repaired(tmp_path):
    run = RunDir.open(tmp_path / "r", ID)
    run.append(rec("a", 0))
    with open(tmp_path / "r" / "samples.jsonl", "a") as f:
        f.write('{"problem_id": "b", "sample_in')  # killed mid-write
    run2 = RunDir.open(tmp_path / "r", ID)
    assert run2.repaired_bytes > 0
    assert [r["problem_id"] for r in run2.records()] == ["a"]
    assert (tmp_path / "r" / "samples.jsonl").read_text().endswith("}\n")
    run2.append(rec("b", 0))
    lines = (tmp_path / "r" / "samples.jsonl").read_text().splitlines()
    assert [json.loads(x)["problem_id"] for x in lines] == ["a", "b"]


def test_no_double_counting_and_retry_failed(tmp_path):
    run = RunDir.open(tmp_path / "r", ID)
    run.append(rec("a", 0, "failed", error="BackendError: down"))
    run.append(rec("b", 0))
    run2 = RunDir.open(tmp_path / "r", ID)
    assert run2.pending([("a", 0), ("b", 0)]) == []
    assert run2.pending([("a", 0), ("b", 0)], retry_failed=True) == [("a", 0)]
    run2.append(rec("a", 0, "ok"))
    run3 = RunDir.open(tmp_path / "r", ID)
    recs = run3.records()
    assert len(recs) == 2 and all(r["status"] == "ok" for r in recs)


def test_header_mismatch_refuses_unless_forced(tmp_path):
    RunDir.open(tmp_path / "r", ID).append(rec("a", 0))
    other = {"config": {"k": 4}, "dataset": ID["dataset"]}
    with pytest.raises(RunMismatch, match=r"config.k: 2 -> 4"):
        RunDir.open(tmp_path / "r", other)
    run = RunDir.open(tmp_path / "r", other, force=True)
    assert run.records() == []
    assert list((tmp_path / "r").glob("samples.jsonl.old-*"))


def test_corrupt_middle_line_names_file_and_line(tmp_path):
    run = RunDir.open(tmp_path / "r", ID)
    run.append(rec("a", 0))
    with open(tmp_path / "r" / "samples.jsonl", "a") as f:
        f.write("garbage\n")
    with pytest.raises(ValueError, match=r"samples.jsonl:2"):
        RunDir.open(tmp_path / "r", ID)
