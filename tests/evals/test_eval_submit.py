"""The multi-machine recipe run locally: ``python -m mathagent.evals.submit --cluster local`` submits
the shards as a submitit job array (separate processes, each with its own kernels), merges them, and the
merged summary equals the unsharded run's."""

from __future__ import annotations

import json

import pytest
from mathagent.evals import submit
from mathagent.evals.cli_eval import main as eval_main
from mathagent.evals.summary import result_differences
from test_eval_shards import K, N, write_script

pytestmark = [pytest.mark.kernel, pytest.mark.slow]


def test_submitit_local_job_array_then_merge_equals_the_unsharded_run(tmp_path, capsys):
    pytest.importorskip("submitit")  # the optional `cluster` extra
    script = tmp_path / "script.jsonl"
    write_script(script)
    flags = ["--dataset", "gsm8k", "--limit", str(N), "--k", str(K), "--temperature", "0.7"]
    flags += ["--backend", "scripted", "--script", str(script), "--no-verify", "--concurrency", "3"]
    assert eval_main([*flags, "--run-dir", str(tmp_path / "full"), "--json"]) == 0
    full = json.loads(capsys.readouterr().out)
    out = tmp_path / "sub"
    assert (
        submit.main(
            ["--shards", "3", "--out", str(out), "--cluster", "local", "--timeout-min", "20", "--", *flags]
        )
        == 0
    )
    merged = json.loads(capsys.readouterr().out)
    assert result_differences(merged, full) == []  # the merged shards reproduce every result field
    assert merged["merge"]["shards"] == ["0/3", "1/3", "2/3"]
    assert sorted(p.name for p in out.iterdir()) == ["merged", "shard-0", "shard-1", "shard-2", "submitit"]
    # each shard ran in its own process (submitit's job logs, one per array task)
    assert len(list((out / "submitit").glob("*_log.out"))) == 3


def test_submit_refuses_per_job_flags(tmp_path, capsys):
    assert submit.main(["--shards", "2", "--out", str(tmp_path), "--", "--shard", "0/2"]) == 2
    assert "--shard are set per job" in capsys.readouterr().err
