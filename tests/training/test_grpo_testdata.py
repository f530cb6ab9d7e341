"""`mathagent train grpo --data` refuses evaluation test data unless --allow-test, like `generate`: a test set
by name, a renamed copy by its bytes, a re-serialised subset question by question (the fingerprints of
:mod:`mathagent.evals.testsets`). It is refused before anything is written, a kernel starts or a model
loads; a training set passes the check."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from mathagent.evals.datasets import read_jsonl, shipped_path
from mathagent.training.cli_train import main
from mathagent.training.grpo import GRPORunConfig, load_rows


def _argv(data: str, out: Path, *extra: str) -> list[str]:
    # a model name that cannot load: the refusal must come before any model is looked at
    return ["grpo", "--data", data, "--model", "no-such-model", "--out", str(out), *extra]


def test_a_test_set_name_is_refused(tmp_path, capsys, monkeypatch, shared_data):
    monkeypatch.setenv("MATHAGENT_DATA_DIR", str(shared_data / "datasets"))
    monkeypatch.setenv("MATHAGENT_NO_HUB", "1")
    out = tmp_path / "out"
    assert main(_argv("gsm8k", out, "--limit", "4")) == 2
    err = capsys.readouterr().err
    assert "--data gsm8k is a test set" in err and "leaks" in err and "--allow-test" in err
    assert "gsm8k-train" in err  # says what to use instead
    assert not out.exists()  # refused before anything is written


def test_a_renamed_copy_and_a_reserialised_subset_are_refused(tmp_path, capsys):
    copy = tmp_path / "word_problems.jsonl"
    shutil.copy(shipped_path("gsm8k"), copy)
    assert main(_argv(str(copy), tmp_path / "o1")) == 2
    assert "it is the gsm8k test set, byte for byte" in capsys.readouterr().err
    assert not (tmp_path / "o1").exists()

    gsm = read_jsonl(shipped_path("gsm8k"))[:3]
    rows = [{"question": "  " + r["question"].upper(), "answer": r["answer"]} for r in gsm]
    rows += [{"question": f"What is {i} plus {i}?", "answer": str(2 * i)} for i in range(9)]
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(_argv(str(mixed), tmp_path / "o2")) == 2
    err = capsys.readouterr().err
    assert "--data " + str(mixed) in err and "3 of its 12 problems are gsm8k test questions" in err
    assert not (tmp_path / "o2").exists()
    # the same file without the test rows passes the check
    clean = tmp_path / "clean.jsonl"
    clean.write_text("".join(json.dumps(r) + "\n" for r in rows[3:]))
    got, grading = load_rows(GRPORunConfig(data=str(clean), model="m", out="o"))
    assert len(got) == 9 and grading == "math"


def test_allow_test_lets_it_through(tmp_path):
    gsm = read_jsonl(shipped_path("gsm8k"))[:2]
    path = tmp_path / "gsm8k_subset.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in gsm))
    with pytest.raises(ValueError, match="gsm8k test questions"):
        load_rows(GRPORunConfig(data=str(path), model="m", out="o"))
    rows, grading = load_rows(GRPORunConfig(data=str(path), model="m", out="o", allow_test=True))
    assert [r["prompt"] for r in rows] == [r["question"] for r in gsm] and grading == "gsm8k"


def test_the_flag_and_the_config_file_reach_the_run_config(tmp_path):
    from argparse import ArgumentParser

    from mathagent.training import cli_grpo

    p = ArgumentParser()
    cli_grpo.add_parser(p.add_subparsers())
    args = p.parse_args(["grpo", "--data", "d.jsonl", "--model", "m", "--out", "o", "--allow-test"])
    assert cli_grpo.config_from_args(args).allow_test is True
    args = p.parse_args(["grpo", "--data", "d.jsonl", "--model", "m", "--out", "o"])
    assert cli_grpo.config_from_args(args).allow_test is False
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"data": "d.jsonl", "model": "m", "out": "o", "allow_test": True}))
    args = p.parse_args(["grpo", "--config", str(cfg)])
    assert cli_grpo.config_from_args(args).allow_test is True
