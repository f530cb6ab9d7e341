"""One writer per run folder (``run.lock``): a second process is refused with the holder named and the
folder untouched; a killed holder leaves no stale lock; RunDirs of one process share the folder."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from mathagent.evals.cli_eval import main as eval_main
from mathagent.evals.runs import RunBusy, RunDir, run_holder

ID = {"config": {"k": 1}, "dataset": {"name": "x", "sha256": "abc"}}


def can_open_elsewhere(path: Path) -> bool:
    """Whether a fresh process can take the folder now."""
    code = "import sys, json; from mathagent.evals.runs import RunDir; RunDir.open(sys.argv[1], json.loads(sys.argv[2]))"
    return (
        subprocess.run(
            [sys.executable, "-c", code, str(path), json.dumps(ID)], capture_output=True
        ).returncode
        == 0
    )


def test_second_process_is_refused_with_the_holder_named_and_nothing_touched(tmp_path, hold_run):
    path = tmp_path / "r"
    with RunDir.open(path, ID) as run:
        for pid in "abc":
            run.append({"problem_id": pid, "sample_index": 0, "status": "ok"})
    sp = path / "samples.jsonl"
    lines = sp.read_bytes().splitlines(keepends=True)
    sp.write_bytes(lines[0] + b"not json\n" + lines[2] + b'{"problem_id": "d", "sam')  # a repair awaits
    before = {p.name: p.read_bytes() for p in path.iterdir() if p.name != "run.lock"}
    with hold_run(path, ID) as holder:  # the holder repaired the folder as it opened it
        repaired = {p.name: p.read_bytes() for p in path.iterdir() if p.name != "run.lock"}
        assert repaired != before and (path / "samples.bad.jsonl").exists()
        with pytest.raises(RunBusy, match=rf"in use by another process \(pid {holder.proc.pid} since .*-c"):
            RunDir.open(path, ID)
        with pytest.raises(RunBusy):
            RunDir.open(path, ID, force=True)  # --force would move the holder's files away under it
        after = {p.name: p.read_bytes() for p in path.iterdir() if p.name != "run.lock"}
        assert after == repaired
        assert f"pid {holder.proc.pid}" in (run_holder(path) or "")
        holder.kill()
        assert run_holder(path) is None  # killed without cleanup: no stale lock
        with RunDir.open(path, ID) as run:
            assert sorted(r["problem_id"] for r in run.records()) == ["a", "c"]
    assert run_holder(path) is None and run_holder(tmp_path / "nothing") is None


def test_rundirs_of_one_process_share_the_folder_until_the_last_is_closed(tmp_path):
    path = tmp_path / "r"
    first = RunDir.open(path, ID)
    second = RunDir.open(path, ID)  # a resume simulated in-process, or a report of a running run
    assert run_holder(path) is not None and not can_open_elsewhere(path)
    first.close()
    first.close()  # closing twice counts once
    assert not can_open_elsewhere(path)
    second.close()
    assert run_holder(path) is None and can_open_elsewhere(path)
    RunDir.open(path, ID).append({"problem_id": "a", "sample_index": 0})  # dropped at once: released
    assert can_open_elsewhere(path)


def test_a_second_rundir_of_the_process_repairs_nothing_under_the_first(tmp_path):
    """A torn last line or a temporary file is a killed writer's leftover only when no RunDir of this
    process holds the folder; with one open it may be that RunDir's write in progress."""
    path = tmp_path / "r"
    first = RunDir.open(path, ID)
    first.append({"problem_id": "a", "sample_index": 0})
    sp = path / "samples.jsonl"
    with open(sp, "ab") as f:
        f.write(b'{"problem_id": "b", "sam')  # first's next line, half written
    (path / "summary.json.tmp").write_text("{")  # first's summary, before its rename
    second = RunDir.open(path, ID)
    assert sp.read_bytes().endswith(b'"sam') and (path / "summary.json.tmp").exists()
    assert [r["problem_id"] for r in second.records()] == ["a"]
    second.close()
    first.close()
    with RunDir.open(path, ID) as again:  # now a leftover: repaired
        assert [r["problem_id"] for r in again.records()] == ["a"]
    assert sp.read_bytes().endswith(b"}\n") and not (path / "summary.json.tmp").exists()


def test_a_probe_never_makes_a_starting_writer_fail(tmp_path):
    """run_holder takes a shared lock for an instant; a writer opening at that moment retries past it."""
    path = tmp_path / "r"
    stop = threading.Event()

    def probe() -> None:
        while not stop.is_set():
            run_holder(path)

    RunDir.open(path, ID).close()
    t = threading.Thread(target=probe)
    t.start()
    try:
        for _ in range(200):
            RunDir.open(path, ID).close()
    finally:
        stop.set()
        t.join()


def test_a_contended_folder_holds_up_no_other_folder_of_the_process(tmp_path, hold_run, monkeypatch):
    """While one thread retries a folder another process holds, a thread opening another folder does
    not wait for those retries; threads opening one free folder at once share its lock."""
    import mathagent.evals.runs as runs

    busy, free = tmp_path / "busy", tmp_path / "free"
    opened_meanwhile: list[bool] = []
    real_sleep = runs.time.sleep

    def sleep(seconds: float) -> None:  # the busy folder's retry: open the free one from another thread
        if not opened_meanwhile:
            t = threading.Thread(target=lambda: RunDir.open(free, ID).close())
            t.start()
            t.join(timeout=30)
            opened_meanwhile.append(not t.is_alive())
        real_sleep(seconds)

    with hold_run(busy, ID):
        monkeypatch.setattr(runs.time, "sleep", sleep)
        with pytest.raises(RunBusy):
            RunDir.open(busy, ID)
        monkeypatch.setattr(runs.time, "sleep", real_sleep)
    assert opened_meanwhile == [True]

    gate = threading.Barrier(8)
    got: list[RunDir] = []
    errors: list[BaseException] = []

    def open_together() -> None:
        gate.wait()
        try:
            got.append(RunDir.open(free, ID))
        except BaseException as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=open_together) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(got) == 8 and not can_open_elsewhere(free)
    for run in got:
        run.close()
    assert can_open_elsewhere(free)


def test_eval_on_a_folder_in_use_exits_2_and_resumes_once_it_is_free(tmp_path, capsys, hold_run):
    problems = tmp_path / "p.jsonl"
    problems.write_text(
        "".join(
            json.dumps({"id": str(i), "question": f"{i}+1?", "answer": str(i + 1)}) + "\n" for i in range(3)
        )
    )
    script = tmp_path / "s.jsonl"
    script.write_text(
        "".join(
            json.dumps({"problem_id": str(i), "turns": [f"So $\\boxed{{{i + 1}}}$."]}) + "\n"
            for i in range(3)
        )
    )
    run_dir = tmp_path / "run"
    args = ["--dataset", str(problems), "--backend", "scripted", "--script", str(script), "--run-dir", str(run_dir),
            "--no-verify", "--concurrency", "1", "--json"]  # fmt: skip
    assert eval_main(args) == 0
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.name != "run.lock"}
    with hold_run(run_dir) as holder:
        assert eval_main(args) == 2
        err = capsys.readouterr().err
        assert f"is in use by another process (pid {holder.proc.pid}" in err and "Traceback" not in err
        # the holder's own open added a resume stamp to the header; this eval wrote nothing
        now = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.name != "run.lock"}
        assert now["samples.jsonl"] == before["samples.jsonl"]
        assert now["summary.json"] == before["summary.json"]
        assert len(json.loads(now["header.json"])["resumed"]) == 1
    assert eval_main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["counts"]["total"] == 3 and summary["counts"]["pending"] == 0
    assert run_holder(run_dir) is None  # eval released the folder when it ended


def test_generate_into_a_folder_in_use_exits_2(tmp_path, capsys, hold_run):
    from mathagent.training.cli_generate import main as generate_main

    problems = tmp_path / "p.jsonl"
    problems.write_text(json.dumps({"id": "0", "question": "1+1?", "answer": "2"}) + "\n")
    script = tmp_path / "s.jsonl"
    script.write_text(json.dumps({"problem_id": "0", "turns": ["So $\\boxed{2}$."]}) + "\n")
    out = tmp_path / "g"
    argv = ["--problems", str(problems), "--backend", "scripted", "--script", str(script), "--out", str(out)]
    assert generate_main(argv) == 0
    capsys.readouterr()
    before = (out / "samples.jsonl").read_bytes()
    with hold_run(out) as holder:  # a second generate job on the same folder
        assert generate_main(argv) == 2
        err = capsys.readouterr().err
        assert f"mathagent generate: {out} is in use by another process (pid {holder.proc.pid}" in err
        assert (out / "samples.jsonl").read_bytes() == before
    assert generate_main(argv) == 0
    assert run_holder(out) is None
