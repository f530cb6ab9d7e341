"""Run folder: durable appends, resume, torn-line repair, no double counting, retry-failed, header checks."""

from __future__ import annotations

import json

import pytest
from mathagent.evals import runs
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
    assert (run.invocations, run2.invocations) == (1, 2)


def test_records_of_keeps_the_selected_keys_latest_record_in_order(tmp_path):
    """What ``eval`` and ``generate`` summarise: the latest record of each selected key, not the
    folder's other samples (a larger ``--k`` or ``--limit`` of an earlier invocation)."""
    run = RunDir.open(tmp_path / "r", ID)
    for r in (rec("b", 0), rec("a", 0, "failed"), rec("a", 1), rec("a", 0, answer="7")):
        run.append(r)
    got = run.records_of([("a", 0), ("b", 0), ("c", 0)])
    assert [(r["problem_id"], r["sample_index"], r["status"]) for r in got] == [
        ("b", 0, "ok"),
        ("a", 0, "ok"),
    ]
    assert got[1]["answer"] == "7" and run.records_of([]) == []


def test_torn_last_line_is_repaired(tmp_path):
    run = RunDir.open(tmp_path / "r", ID)
    run.append(rec("a", 0))
    run.close()  # the writer is gone (a torn line of a RunDir still open is its write in progress)
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


def test_corrupt_middle_lines_are_moved_aside_and_run_again(tmp_path):
    """A line that is not JSON, or holds a byte that is not UTF-8, in the middle of samples.jsonl:
    resuming keeps every byte (samples.bad.jsonl), loads the rest and makes those samples pending."""
    run = RunDir.open(tmp_path / "r", ID)
    for pid in "abcd":
        run.append(rec(pid, 0))
    run.close()  # resumed by a later process: only then are bad lines moved aside
    sp = tmp_path / "r" / "samples.jsonl"
    lines = sp.read_bytes().splitlines(keepends=True)
    broken_b = lines[1][:-9] + b"\n"  # cut inside the record
    broken_c = lines[2].replace(b'"c"', b'"\xe9"')  # a Latin-1 byte in a JSON string
    sp.write_bytes(lines[0] + broken_b + broken_c + lines[3])
    run2 = RunDir.open(tmp_path / "r", ID)
    assert [n for n, _ in run2.moved_aside] == [2, 3]
    assert "UTF-8" in run2.moved_aside[1][1] and "JSON" in run2.moved_aside[0][1]
    assert sorted(r["problem_id"] for r in run2.records()) == ["a", "d"]
    keys = [(pid, 0) for pid in "abcd"]
    assert run2.pending(keys) == [("b", 0), ("c", 0)]
    assert (tmp_path / "r" / "samples.bad.jsonl").read_bytes() == broken_b + broken_c
    assert sp.read_bytes() == lines[0] + lines[3]
    run2.append(rec("b", 0))
    run2.append(rec("c", 0))
    run3 = RunDir.open(tmp_path / "r", ID)
    assert run3.pending(keys) == [] and run3.moved_aside == []


def test_read_only_open_lists_corrupt_lines_and_leaves_the_file(tmp_path):
    run = RunDir.open(tmp_path / "r", ID)
    run.append(rec("a", 0))
    sp = tmp_path / "r" / "samples.jsonl"
    with open(sp, "ab") as f:
        f.write(b"\xff\xfe garbage\n")
    run.append(rec("b", 0))
    before = sp.read_bytes()
    ro = RunDir.read(tmp_path / "r")
    assert [n for n, _ in ro.bad_lines] == [2]
    assert [r["problem_id"] for r in ro.records()] == ["a", "b"]
    assert sp.read_bytes() == before and not (tmp_path / "r" / "samples.bad.jsonl").exists()


def test_corrupt_header_is_a_clear_error(tmp_path):
    RunDir.open(tmp_path / "r", ID).append(rec("a", 0))
    (tmp_path / "r" / "header.json").write_bytes(b'{"identity": {"con')
    with pytest.raises(runs.RunError, match=r"header.json is corrupt.*Rename it"):
        RunDir.open(tmp_path / "r", ID)


def test_question_is_stored_once_and_old_records_still_load(tmp_path):
    question = "Q" * 200_000
    trace = {"problem": question, "steps": [], "final_answer": "1"}
    run = RunDir.open(tmp_path / "r", ID)
    run.append(rec("a", 0, question=question, trace=trace))
    line = (tmp_path / "r" / "samples.jsonl").read_text()
    assert line.count(question) == 1 and len(line) < len(question) + 1000
    assert run.records()[0]["trace"]["problem"] == question  # the caller's record is unchanged
    # an old record (question twice) next to a new one
    with open(tmp_path / "r" / "samples.jsonl", "a") as f:
        f.write(json.dumps(rec("b", 0, question="old", trace={"problem": "old", "steps": []})) + "\n")
    loaded = {r["problem_id"]: r for r in RunDir.open(tmp_path / "r", ID).records()}
    assert loaded["a"]["trace"]["problem"] == question and loaded["b"]["trace"]["problem"] == "old"
    from mathagent.agent.trace import Trace

    assert Trace.from_dict(loaded["a"]["trace"]).problem == question


def test_resume_from_another_directory_and_by_another_path(tmp_path, monkeypatch):
    """Relative paths in the identity are compared as files: the header records the working directory,
    and a data file with the same sha256 is the same data."""
    data = tmp_path / "work" / "data"
    data.mkdir(parents=True)
    (data / "p.jsonl").write_text('{"question": "1+1", "answer": "2"}\n')
    (data / "s.jsonl").write_text('{"problem_id": "0", "turns": ["2"]}\n')

    def ident(ds: str, script: str) -> dict:
        return {
            "config": {"k": 1, "dataset": ds, "extra": {"script": script}},
            "dataset": {"name": "p", "path": ds, "sha256": "abc"},
        }

    monkeypatch.chdir(tmp_path / "work")
    RunDir.open(tmp_path / "r", ident("data/p.jsonl", "data/s.jsonl")).append(rec("a", 0))
    monkeypatch.chdir(data)
    run = RunDir.open(tmp_path / "r", ident("p.jsonl", "./s.jsonl"))
    assert run.pending([("a", 0)]) == []
    run = RunDir.open(tmp_path / "r", ident(str(data / "p.jsonl"), str(data / "s.jsonl")))
    assert run.pending([("a", 0)]) == []
    (data / "copy.jsonl").write_bytes((data / "p.jsonl").read_bytes())  # same bytes, another file
    RunDir.open(tmp_path / "r", ident("copy.jsonl", "s.jsonl"))
    # a different script, or different data, is still another configuration
    (data / "t.jsonl").write_text("")
    with pytest.raises(RunMismatch, match="script"):
        RunDir.open(tmp_path / "r", ident("p.jsonl", "t.jsonl"))
    other = ident("p.jsonl", "s.jsonl")
    other["dataset"]["sha256"] = "def"
    with pytest.raises(RunMismatch, match="sha256"):
        RunDir.open(tmp_path / "r", other)


def test_header_without_cwd_from_older_versions_still_resumes(tmp_path, monkeypatch):
    """Headers written before the working directory was recorded: the data set matches by content,
    the script by file name (its content never was part of the identity)."""
    (tmp_path / "p.jsonl").write_text("{}\n")
    (tmp_path / "s.jsonl").write_text("{}\n")
    old = {
        "config": {"dataset": "p.jsonl", "extra": {"script": "s.jsonl"}},
        "dataset": {"name": "p", "path": "p.jsonl", "sha256": "abc"},
    }
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "header.json").write_text(json.dumps({"schema_version": 1, "identity": old}))
    (tmp_path / "r" / "samples.jsonl").write_text(json.dumps(rec("a", 0)) + "\n")
    sub = tmp_path / "sub"
    sub.mkdir()
    monkeypatch.chdir(sub)
    new = {
        "config": {"dataset": "../p.jsonl", "extra": {"script": "../s.jsonl"}},
        "dataset": {"name": "p", "path": str(tmp_path / "p.jsonl"), "sha256": "abc"},
    }
    run = RunDir.open(tmp_path / "r", new)
    assert run.pending([("a", 0)]) == [] and run.header["identity"] == old


def test_default_run_dir_is_the_same_from_another_directory(tmp_path, monkeypatch):
    (tmp_path / "p.jsonl").write_text("{}\n")
    monkeypatch.chdir(tmp_path)
    a = runs.default_run_dir("x", {"dataset": "p.jsonl", "k": 1})
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    assert runs.default_run_dir("x", {"dataset": "../p.jsonl", "k": 1}) == a
    assert runs.default_run_dir("x", {"dataset": "gsm8k", "k": 1}).name == "x-" + runs.legacy_config_digest(
        {"dataset": "gsm8k", "k": 1}
    )
