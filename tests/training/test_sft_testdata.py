"""`mathagent train sft --data` refuses evaluation test data unless --allow-test, like `train grpo` and
`generate`: SFT records (raw traces, exported chat rows, exported MathCoder rows) whose problem is a
GSM8K test question are refused before the output folder is made or any model is looked at; the same
records built from GSM8K *train* questions pass, and so do the test ones with --allow-test."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from mathagent.agent.trace import Trace
from mathagent.evals.datasets import read_jsonl
from mathagent.training import export
from mathagent.training.cli_train import main

HAND_MADE = 5
"""Rows of each file whose problems are in no data set (``What is a + b?``)."""
FROM_GSM8K = 3
"""Rows of each file whose problems are GSM8K questions (the first of the test or the train split)."""
KINDS = {"traces": "mathcoder", "chat": "chat", "mathcoder": "mathcoder"}
"""SFT file kind -> the ``--format`` it is trained with (raw traces are exported on the fly)."""


def sft_file(tmp_path: Path, hand_made: list[Trace], questions: list[str], kind: str) -> Path:
    """A real SFT data file: one hand-made trace per question with that question as its problem, then
    :data:`HAND_MADE` more as they are; raw or exported as ``kind``."""
    n = len(questions)
    assert len(hand_made) >= n + HAND_MADE
    traces = [dataclasses.replace(t, problem=q) for t, q in zip(hand_made[:n], questions, strict=True)]
    traces += hand_made[n : n + HAND_MADE]
    path = tmp_path / f"{kind}.jsonl"
    if kind == "traces":
        path.write_text("".join(t.to_json() + "\n" for t in traces), encoding="utf-8")
    else:
        assert export.export_traces(traces, path, kind) == len(traces)
    return path


@pytest.fixture(scope="module")
def gsm8k(shared_data) -> dict[str, list[str]]:
    """The first GSM8K questions of each split, read from the reference data."""
    return {
        split: [
            r["question"] for r in read_jsonl(shared_data / "datasets" / f"gsm8k_{split}.jsonl")[:FROM_GSM8K]
        ]
        for split in ("test", "train")
    }


def sft(data: Path, out: Path, fmt: str, *extra: str) -> int:
    # a model name that cannot load: the refusal must come before any model is looked at
    return main(
        ["sft", "--data", str(data), "--model", "no-such-model", "--format", fmt, "--out", str(out), *extra]
    )


@pytest.mark.parametrize("kind", KINDS)
def test_test_questions_are_refused_with_a_clear_message(kind, gsm8k, traces, tmp_path, capsys):
    data = sft_file(tmp_path, traces, gsm8k["test"], kind)
    out = tmp_path / "out"
    assert sft(data, out, KINDS[kind]) == 2
    err = capsys.readouterr().err
    total = FROM_GSM8K + HAND_MADE
    assert f"--data {data}: {FROM_GSM8K} of its {total} problems are gsm8k test questions" in err, err
    assert "leaks" in err and "--allow-test" in err and "no-such-model" not in err
    assert not out.exists()  # refused before anything is written


@pytest.mark.parametrize("kind", KINDS)
def test_allow_test_lets_them_through(kind, gsm8k, traces, tmp_path, capsys):
    """With --allow-test the run goes on to the model, which here does not exist."""
    data = sft_file(tmp_path, traces, gsm8k["test"], kind)
    assert sft(data, tmp_path / "out", KINDS[kind], "--allow-test") == 2
    err = capsys.readouterr().err
    assert "'no-such-model' is not a model directory" in err and "test question" not in err, err


@pytest.mark.parametrize("kind", KINDS)
def test_train_questions_are_not_refused(kind, gsm8k, traces, tmp_path, capsys):
    data = sft_file(tmp_path, traces, gsm8k["train"], kind)
    assert sft(data, tmp_path / "out", KINDS[kind]) == 2
    err = capsys.readouterr().err
    assert "'no-such-model' is not a model directory" in err and "test question" not in err, err


def test_the_problem_of_each_record_kind(gsm8k, traces, tmp_path):
    """The problem text is found where the converters put it: a trace's ``problem``, the first user
    message of a chat row (after the system prompt), the first user block of a MathCoder row."""
    q = gsm8k["test"][0]
    for kind in KINDS:
        rec = json.loads(sft_file(tmp_path, traces, [q], kind).read_text(encoding="utf-8").splitlines()[0])
        assert export.row_problem(rec) == q, kind
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": q}]}]}
    assert export.row_problem(parts) == q
    assert export.row_problem({"text": "no markers"}) is None and export.row_problem({"x": 1}) is None


def test_the_flag_has_the_name_and_help_of_train_grpo():
    import argparse

    from mathagent.training import cli_grpo, cli_train

    p = argparse.ArgumentParser()
    sub = p.add_subparsers()
    cli_train._sft_parser(sub)
    cli_grpo.add_parser(sub)
    helps = {name: {a.dest: a.help for a in sp._actions} for name, sp in sub.choices.items()}
    assert helps["sft"]["allow_test"] == helps["grpo"]["allow_test"]
    assert "evaluation test set" in helps["sft"]["allow_test"]


@pytest.mark.slow
@pytest.mark.model
@pytest.mark.timeout(1800)
def test_allow_test_trains_for_real(gsm8k, traces, tmp_path, smol_dir):
    """The opt-out end to end: one real step of SmolLM2-135M on the test-question file."""
    data = sft_file(tmp_path, traces, gsm8k["test"], "mathcoder")
    out = tmp_path / "model"
    argv = ["sft", "--data", str(data), "--model", str(smol_dir), "--format", "mathcoder", "--out", str(out),
            "--max-steps", "1", "--batch-size", "2", "--max-length", "256", "--threads", "1",
            "--save-steps", "100", "--allow-test"]  # fmt: skip
    assert main(argv) == 0
    saved = json.loads((out / "train_result.json").read_text())
    assert saved["config"]["allow_test"] is True and saved["result"]["steps"] == 1
