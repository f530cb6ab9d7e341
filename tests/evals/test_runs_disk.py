"""Run folders on a full disk (a real small tmpfs): clear errors, nothing partial, resume with space."""

from __future__ import annotations

import json

import pytest
from mathagent.evals import runs
from mathagent.evals.runs import RunDir

ID = {"config": {"k": 1}, "dataset": {"name": "x", "sha256": "abc"}}


def rec(pid: str, size: int = 5000) -> dict:
    return {"problem_id": pid, "sample_index": 0, "status": "ok", "pad": "x" * size}


def leftovers(path) -> list[str]:
    return sorted(p.name for p in path.rglob("*.tmp"))


def test_append_on_a_full_disk_leaves_no_partial_line(small_disk):
    run = RunDir.open(small_disk.path / "r", ID)
    saved = 0
    with pytest.raises(
        runs.DiskFull, match=r"no space left.*sample\(s\) are saved.*run the same command again"
    ) as ei:
        for i in range(100):
            run.append(rec(str(i)))
            saved += 1
    assert ei.value.saved == saved > 0
    sp = small_disk.path / "r" / "samples.jsonl"
    data = sp.read_bytes()
    assert data.endswith(b"\n") and len(data.splitlines()) == saved  # the failed line was cut back
    assert all(json.loads(x)["problem_id"] == str(i) for i, x in enumerate(data.splitlines()))
    assert (str(saved), 0) not in run.done()
    small_disk.resize("1m")
    run.append(rec(str(saved)))  # the same process goes on once there is space: no glued line
    again = RunDir.open(small_disk.path / "r", ID)
    assert len(again.records()) == saved + 1 and again.moved_aside == [] and again.repaired_bytes == 0
    assert leftovers(small_disk.path) == []


def test_header_and_summary_on_a_full_disk_leave_no_temporary_file(small_disk):
    (small_disk.path / "filler").write_bytes(b"x" * (small_disk.free() - 4096))
    big = {**ID, "note": "n" * 8000}  # the header does not fit in the last page
    with pytest.raises(runs.DiskFull, match=r"cannot write .*header.json.*nothing was run"):
        RunDir.open(small_disk.path / "r", big)
    assert leftovers(small_disk.path) == [] and not (small_disk.path / "r" / "header.json").exists()
    small_disk.resize("1m")
    run = RunDir.open(small_disk.path / "r", big)
    run.append(rec("a", 100))
    (small_disk.path / "filler2").write_bytes(b"x" * (small_disk.free() - 4096))
    with pytest.raises(runs.DiskFull, match=r"summary.json"):
        run.write_summary({"pad": "y" * 20000})
    assert leftovers(small_disk.path) == [] and not (small_disk.path / "r" / "summary.json").exists()


def test_stale_temporary_files_are_removed_on_open(tmp_path):
    RunDir.open(tmp_path / "r", ID)
    (tmp_path / "r" / "header.json.tmp").write_text("{")  # a process killed between write and rename
    RunDir.open(tmp_path / "r", ID)
    assert leftovers(tmp_path) == []
