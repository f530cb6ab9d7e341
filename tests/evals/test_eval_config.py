"""``eval --config``: a TOML file gives the flags, and a finished run's ``header.json`` given back as
the config reproduces the run (scripted backend, real kernels)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mathagent.evals.cli_eval import main as eval_main
from mathagent.evals.cli_merge import main as merge_main
from mathagent.evals.datasets import load_problems
from mathagent.evals.runs import identities_match
from mathagent.evals.summary import result_differences

pytestmark = pytest.mark.kernel


def write_script(path: Path, n: int, *, wrong: set[int], fail: set[int]) -> None:
    with open(path, "w") as f:
        for i, p in enumerate(load_problems("gsm8k", limit=n)):
            answer = str(int(p.gold) + 1) if i in wrong else p.gold
            turn = f"```python\nprint({answer})\n```\n```output\n{answer}\n```\nThe answer is $\\boxed{{{answer}}}$."
            row = {"problem_id": p.id, **({"error": "server down (503)"} if i in fail else {"turns": [turn]})}
            f.write(json.dumps(row) + "\n")


def _run(capsys, *argv: str) -> dict:
    assert eval_main([*argv, "--json"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def test_header_as_config_reproduces_the_run(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_script(tmp_path / "script.jsonl", 4, wrong={1}, fail={2})
    (tmp_path / "eval.toml").write_text(
        'dataset = "gsm8k"\nlimit = 4\nbackend = "scripted"\nscript = "script.jsonl"\n'
        "verify = false\nconcurrency = 2\nmax-rounds = 3\nprune = true\n"
    )
    first = _run(capsys, "--config", "eval.toml", "--run-dir", "first")
    assert first["n_samples"] == 4 and first["overall"]["accuracy"] == pytest.approx(0.5)
    header = json.loads(Path("first/header.json").read_text())
    assert header["settings"]["max_rounds"] == 3 and header["settings"]["script"] == "script.jsonl"
    assert header["identity"]["config"]["max_rounds"] == 3 and header["settings"]["prune"] is True

    # from another working directory: the relative script path is found through the header's cwd
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    again = _run(capsys, "--config", str(tmp_path / "first/header.json"), "--run-dir", "again")
    assert result_differences(again, first) == []
    new = json.loads(Path("again/header.json").read_text())["identity"]
    assert identities_match(header["identity"], new, header["cwd"])  # the script named by another path

    # a header from before settings were recorded: mapped from its identity, same run
    # (--prune, not part of a run's identity, is read from the summary.json next to it)
    old = {k: v for k, v in header.items() if k != "settings"}
    Path("old").mkdir()
    Path("old/header.json").write_text(json.dumps(old))
    Path("old/summary.json").write_text(Path(tmp_path / "first/summary.json").read_text())
    legacy = _run(capsys, "--config", "old/header.json", "--run-dir", "legacy")
    assert result_differences(legacy, first) == []

    # and the unsharded run merges as shard 0/1 into the same summary
    assert merge_main([str(tmp_path / "first"), "--out", "merged", "--json"]) == 0
    merged = json.loads(capsys.readouterr().out)
    assert result_differences(merged, first) == []


def test_bad_config_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: gsm8k\nmax_round: 3\n")
    with pytest.raises(SystemExit) as e:
        eval_main(["--config", str(bad)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"{bad}: unknown key 'max_round'" in err and "did you mean 'max_rounds'" in err
    bad.write_text("k: two\n")
    with pytest.raises(SystemExit):
        eval_main(["--config", str(bad)])
    assert "key 'k': expected a whole number, got 'two'" in capsys.readouterr().err
