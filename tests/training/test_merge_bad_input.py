"""`generate merge` refuses a shard whose samples.jsonl has corrupt lines, naming file and lines."""

from __future__ import annotations

import json

import pytest
from mathagent.evals.runs import RunDir
from mathagent.training.merge import KIND, MergeError, merge_runs


def shard(path, i: int) -> None:
    ident = {"kind": KIND, "config": {"k": 1, "extra": {"shard": f"{i}/2"}}, "dataset": {"sha256": "x"}}
    run = RunDir.open(path, ident)
    run.append({"problem_id": str(i), "sample_index": 0, "status": "ok", "question": "q", "trace": None})


def test_merge_refuses_a_shard_with_corrupt_lines(tmp_path):
    shard(tmp_path / "s0", 0)
    shard(tmp_path / "s1", 1)
    with open(tmp_path / "s1" / "samples.jsonl", "ab") as f:
        f.write(b"\x00\xff not a record\n")
        f.write(json.dumps({"problem_id": "3", "sample_index": 0, "status": "ok"}).encode() + b"\n")
    with pytest.raises(MergeError, match=r"s1/samples.jsonl has 1 corrupt line\(s\) \(2\): re-run"):
        merge_runs([tmp_path / "s0", tmp_path / "s1"], tmp_path / "all")
    assert not (tmp_path / "all").exists()
