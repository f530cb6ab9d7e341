"""`mathagent generate --shard i/n` and `mathagent generate merge`: validation, overlap, no duplicates."""

from __future__ import annotations

import json

import pytest
from mathagent.training.cli_generate import main as generate_main
from mathagent.training.generate import Shard

pytestmark = pytest.mark.kernel


def solved(ans: str) -> str:
    return f"Let me compute.\n```python\nprint({ans})\n```\n```output\n{ans}\n```\nSo $\\boxed{{{ans}}}$."


def gsm8k_train(shared_data, n: int) -> list[str]:
    rows = (shared_data / "datasets" / "gsm8k_train.jsonl").read_text().splitlines()[:n]
    return [json.loads(x)["answer"].split("####")[-1].strip().replace(",", "") for x in rows]


def write_script(path, golds) -> None:
    path.write_text(
        "".join(json.dumps({"problem_id": str(i), "turns": [solved(g)]}) + "\n" for i, g in enumerate(golds))
    )


def jsonl(path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def base_args(shared_data, script, out, n: int) -> list[str]:
    problems = str(shared_data / "datasets" / "gsm8k_train.jsonl")
    return ["--problems", problems, "--limit", str(n), "--backend", "scripted", "--script", str(script),
            "--out", str(out), "--concurrency", "2", "--json"]  # fmt: skip


def test_two_shards_with_an_overlap_merge_without_duplicates(shared_data, tmp_path, capsys):
    n = 8
    script = tmp_path / "script.jsonl"
    write_script(script, gsm8k_train(shared_data, n))
    s0, s1, extra, out = (tmp_path / x for x in ("s0", "s1", "extra", "all"))
    # shard 0/2 and 1/2 of the first 8 problems (each shard would point at its own --base-url)
    for shard, folder in (("0/2", s0), ("1/2", s1)):
        assert generate_main([*base_args(shared_data, script, folder, n), "--shard", shard]) == 0
        capsys.readouterr()
    ids0 = {r["problem_id"] for r in jsonl(s0 / "samples.jsonl")}
    ids1 = {r["problem_id"] for r in jsonl(s1 / "samples.jsonl")}
    assert ids0 and ids1 and not ids0 & ids1 and ids0 | ids1 == {str(i) for i in range(n)}
    assert all(Shard(0, 2).holds(i) for i in ids0)
    # a third folder: the whole first 3 problems again, unsharded -> overlaps both shards
    assert generate_main(base_args(shared_data, script, extra, 3)) == 0
    capsys.readouterr()

    assert generate_main(["merge", str(s0), str(s1), str(extra), "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    merge = summary["merge"]
    assert merge["duplicate_keys"] == 3 and merge["records"] == n and merge["shards_missing"] == []
    assert summary["dataset"]["kept"] == n and summary["dataset"]["samples"] == n
    chat = jsonl(out / "data" / "train_chat.jsonl")
    keys = [(r["problem_id"], r["sample_index"]) for r in chat]
    assert len(keys) == len(set(keys)) == n
    assert len(jsonl(out / "data" / "train_mathcoder.jsonl")) == n
    assert "duplicate_keys" in (out / "README.md").read_text()

    # merging again adds nothing
    assert generate_main(["merge", str(s0), str(s1), str(extra), "--out", str(out), "--json"]) == 0
    capsys.readouterr()
    assert len(jsonl(out / "samples.jsonl")) == n

    # a missing shard is reported; a run of another configuration is refused
    assert generate_main(["merge", str(s0), "--out", str(tmp_path / "half"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["merge"]["shards_missing"] == ["1/2"]
    other = tmp_path / "other"
    assert generate_main([*base_args(shared_data, script, other, 2), "--k", "2"]) == 0
    capsys.readouterr()
    assert generate_main(["merge", str(s0), str(other), "--out", str(tmp_path / "bad")]) == 2
    assert "not a shard of the same generation" in capsys.readouterr().err
    assert generate_main(["merge", str(tmp_path), "--out", str(tmp_path / "bad2")]) == 2
