"""``eval --shard i/n`` and ``eval merge``: shards run as separate processes (scripted backend, real
kernels), merged, compared with the unsharded run; and merges that must be refused."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mathagent.evals.cli_eval import main as eval_main
from mathagent.evals.datasets import load_problems
from mathagent.evals.shards import Shard
from mathagent.evals.summary import result_differences

pytestmark = [pytest.mark.kernel, pytest.mark.slow]  # several processes, each with its kernels

N, K = 8, 3


def _turn(answer: str) -> list[str]:
    return [
        f"```python\nprint({answer})\n```\n```output\n{answer}\n```\nThe answer is $\\boxed{{{answer}}}$."
    ]


def write_script(path: Path) -> None:
    """K samples per problem whose answers disagree in a fixed pattern (so maj@k, weighted@k and
    pass@k differ from first-sample accuracy), and one problem whose backend fails."""
    with open(path, "w") as f:
        for i, p in enumerate(load_problems("gsm8k", limit=N)):
            right, wrong = p.gold, str(int(p.gold) + 1)
            if i == 5:
                f.write(json.dumps({"problem_id": p.id, "error": "server down (503)"}) + "\n")
                continue
            pattern = [[right, right, right], [wrong, right, right], [wrong, wrong, right], [wrong] * 3][
                i % 4
            ]
            f.write(json.dumps({"problem_id": p.id, "samples": [_turn(a) for a in pattern]}) + "\n")


def _cmd(script: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mathagent.agent.cli",
        "eval",
        "--dataset",
        "gsm8k",
        "--limit",
        str(N),
        "--k",
        str(K),
        "--temperature",
        "0.7",
        "--backend",
        "scripted",
        "--script",
        str(script),
        "--no-verify",
        "--concurrency",
        "3",
        "--json",
        *extra,
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "MATHAGENT_LOG_LEVEL": "ERROR"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """The unsharded run and three shards, each its own process (the shards at the same time)."""
    tmp = tmp_path_factory.mktemp("shards")
    script = tmp / "script.jsonl"
    write_script(script)
    full = subprocess.run(
        _cmd(script, "--run-dir", str(tmp / "full")), env=_env(), capture_output=True, text=True, timeout=600
    )
    assert full.returncode == 0, full.stderr
    procs = [
        subprocess.Popen(
            _cmd(script, "--shard", f"{i}/3", "--run-dir", str(tmp / f"s{i}")),
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    return {"tmp": tmp, "script": script, "full": tmp / "full", **{f"s{i}": tmp / f"s{i}" for i in range(3)}}


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def test_shards_split_the_problems_disjointly(runs):
    ids = [set(json.loads((runs[f"s{i}"] / "header.json").read_text())["problems"]["ids"]) for i in range(3)]
    assert sum(len(s) for s in ids) == N and len(set().union(*ids)) == N
    for i, s in enumerate(ids):
        assert all(Shard(i, 3).holds(pid) for pid in s)
        assert _summary(runs[f"s{i}"])["n_samples"] == len(s) * K


def test_merged_summary_equals_the_unsharded_run(runs):
    out = runs["tmp"] / "merged"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "mathagent.agent.cli",
            "eval",
            "merge",
            *(str(runs[f"s{i}"]) for i in (2, 0, 1)),
        ]
        + ["--out", str(out), "--json"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    merged, full = json.loads(res.stdout), _summary(runs["full"])
    # the scripted pattern makes the vote columns differ from one another, so equality means something
    o = full["overall"]
    assert (o["accuracy"], o["maj_at_k"], o["pass_at_k"]) == pytest.approx((2 / 8, 3 / 8, 5 / 8))
    assert full["n_failed"] == K
    assert result_differences(merged, full) == []  # a merge reproduces every result field exactly
    assert merged["counts"]["total"] == merged["counts"]["done"] == N * K
    assert _summary(out) == merged

    # the merged folder is a run folder: same records as the unsharded run
    def keys(d: Path) -> set:
        return {
            (r["problem_id"], r["sample_index"], r["answer"])
            for r in map(json.loads, (d / "samples.jsonl").open())
        }

    assert keys(out) == keys(runs["full"])
    # merging again writes nothing new
    assert eval_main(["merge", *(str(runs[f"s{i}"]) for i in range(3)), "--out", str(out), "--json"]) == 0
    assert len((out / "samples.jsonl").read_text().splitlines()) == N * K


def _merge_err(capsys, *dirs: Path, out: Path) -> str:
    assert eval_main(["merge", *map(str, dirs), "--out", str(out)]) == 2
    assert not (out / "samples.jsonl").exists()
    return capsys.readouterr().err


def test_merge_refuses_missing_overlapping_and_foreign_shards(runs, capsys):
    s0, s1, s2, tmp = runs["s0"], runs["s1"], runs["s2"], runs["tmp"]
    assert "missing shards: 1/3" in _merge_err(capsys, s0, s2, out=tmp / "m1")
    err = _merge_err(capsys, s0, s1, s2, s1, out=tmp / "m2")
    assert "overlapping" in err and "shard 1/3 given 2 times" in err
    # a shard of another run (another seed): not the same config
    other = tmp / "other-s1"
    res = subprocess.run(
        _cmd(runs["script"], "--shard", "1/3", "--seed", "5", "--run-dir", str(other)),
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr
    err = _merge_err(capsys, s0, other, s2, out=tmp / "m3")
    assert "not a shard of the same run" in err and "seed" in err
    # the unsharded run is shard 0/1: it cannot join shards of 3
    assert "different counts" in _merge_err(capsys, s0, runs["full"], out=tmp / "m4")


def test_merge_refuses_an_unfinished_shard(runs, capsys):
    cut = runs["tmp"] / "s1-cut"
    shutil.copytree(runs["s1"], cut)
    lines = (cut / "samples.jsonl").read_text().splitlines(keepends=True)
    (cut / "samples.jsonl").write_text("".join(lines[:-2]))
    err = _merge_err(capsys, runs["s0"], cut, runs["s2"], out=runs["tmp"] / "m5")
    assert "unfinished: 2 of" in err and "run its `mathagent eval` command again" in err


def test_shard_flag_is_validated(runs, capsys):
    assert eval_main(["--backend", "scripted", "--script", str(runs["script"]), "--shard", "3/3"]) == 2
    assert "--shard 3/3: need 0 <= i < n" in capsys.readouterr().err
