"""`mathagent generate` refuses evaluation test data unless --allow-test (issue 14 §5), by the
registered split of a named set and by question fingerprints for files; train splits load by name;
the per-call --max-tokens and the kept-trace --max-trace-tokens never share a name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from mathagent.evals import testsets
from mathagent.evals.datasets import load_problems, read_jsonl, shipped_path
from mathagent.training.cli_generate import main as generate_main


def _script(path: Path, ids: list[str], golds: list[str]) -> Path:
    rows = [
        {"problem_id": i, "turns": [f"```python\nprint({g})\n```\n```output\n{g}\n```\nSo $\\boxed{{{g}}}$."]}
        for i, g in zip(ids, golds, strict=True)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _argv(problems: str, tmp_path: Path, *extra: str) -> list[str]:
    script = tmp_path / "script.jsonl"
    if not script.exists():
        script.write_text(json.dumps({"problem_id": "0", "turns": ["x"]}) + "\n")
    return ["--problems", problems, "--backend", "scripted", "--script", str(script),
            "--out", str(tmp_path / "out"), "--json", *extra]  # fmt: skip


@pytest.mark.parametrize("name", testsets.TEST_SETS)
def test_every_registered_test_set_is_refused_by_name(name, tmp_path, capsys, monkeypatch, shared_data):
    monkeypatch.setenv("MATHAGENT_DATA_DIR", str(shared_data / "datasets"))
    monkeypatch.setenv("MATHAGENT_NO_HUB", "1")
    assert generate_main(_argv(name, tmp_path, "--limit", "2")) == 2
    err = capsys.readouterr().err
    assert f"--problems {name} is a test set" in err and "leaks" in err and "--allow-test" in err
    assert "gsm8k-train, math-train" in err  # says what to use instead
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_a_renamed_copy_of_gsm8k_test_is_caught(tmp_path, capsys):
    copy = tmp_path / "my_word_problems.jsonl"
    shutil.copy(shipped_path("gsm8k"), copy)
    assert generate_main(_argv(str(copy), tmp_path)) == 2
    err = capsys.readouterr().err
    assert "it is the gsm8k test set, byte for byte" in err and "--allow-test" in err


def test_a_reserialised_mixed_subset_is_caught_question_by_question(tmp_path, capsys):
    """Other keys, other order, changed case and spacing, a few test questions among new ones."""
    gsm = read_jsonl(shipped_path("gsm8k"))[:7]
    m500 = read_jsonl(shipped_path("math500"))[:3]
    rows = [
        {"gold": r["answer"].split("####")[-1].strip(), "problem": "  " + r["question"].upper()} for r in gsm
    ]
    rows += [{"problem": r["problem"].replace(" ", "\n  "), "gold": r["answer"]} for r in m500]
    rows += [{"problem": f"What is {i} plus {i}?", "gold": str(2 * i)} for i in range(20)]
    path = tmp_path / "train_mix.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert generate_main(_argv(str(path), tmp_path)) == 2
    err = capsys.readouterr().err
    assert "7 of its 30 problems are gsm8k test questions (of 1319)" in err
    assert "3 of its 30 problems are math500 test questions (of 500)" in err


def test_fingerprints_normalise_case_spacing_and_unicode_forms():
    fp = testsets.fingerprint
    assert fp("What is  2+2?\n") == fp("what is 2+2?") == fp("WHAT\tIS 2+2?")
    assert fp("ﬁve apples") == fp("five apples")  # NFKC folds the ligature
    assert fp("What is 2+3?") != fp("What is 2+2?")
    assert len(fp("x")) == testsets.DIGITS


def test_shipped_fingerprints_match_the_reference_test_sets(shared_data, monkeypatch):
    monkeypatch.setenv("MATHAGENT_DATA_DIR", str(shared_data / "datasets"))
    monkeypatch.setenv("MATHAGENT_NO_HUB", "1")
    shipped = json.loads(shipped_path("gsm8k").with_name(testsets.FINGERPRINTS_FILE).read_text())
    assert shipped == testsets.build_fingerprints()
    assert set(shipped["sets"]) == set(testsets.TEST_SETS)


def test_train_splits_hold_no_test_question(shared_data, monkeypatch):
    monkeypatch.setenv("MATHAGENT_DATA_DIR", str(shared_data / "datasets"))
    problems = load_problems("gsm8k-train")
    assert len(problems) == 7473 and problems[0].dataset == "gsm8k-train"
    assert not testsets.match_test(p.question for p in problems)
    testsets.refuse_test_data("gsm8k-train", [])  # by name: a train split passes


def test_merge_refuses_the_old_flag_with_the_new_name(tmp_path, capsys):
    assert generate_main(["merge", str(tmp_path), "--out", str(tmp_path / "m"), "--max-tokens", "100"]) == 2
    assert "--max-tokens was renamed --max-trace-tokens" in capsys.readouterr().err


@pytest.mark.kernel
def test_train_split_by_name_allow_test_and_the_two_token_limits(shared_data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MATHAGENT_DATA_DIR", str(shared_data / "datasets"))
    train = load_problems("gsm8k-train", limit=2)
    script = _script(tmp_path / "script.jsonl", [p.id for p in train], [p.gold for p in train])
    argv = _argv("gsm8k-train", tmp_path, "--limit", "2", "--max-tokens", "300", "--max-trace-tokens", "900")
    assert generate_main([*argv, "--concurrency", "2", "--pool-size", "1"]) == 0
    cap = capsys.readouterr()
    assert "--max-tokens is the model's limit per call" in cap.err  # the changed meaning is said
    assert json.loads(cap.out)["dataset"]["kept"] == 2
    header = json.loads((tmp_path / "out" / "header.json").read_text())
    assert header["identity"]["dataset"]["name"] == "gsm8k-train"
    assert header["identity"]["config"]["extra"]["agent"]["max_tokens"] == 300  # per call
    assert header["filters"]["max_tokens"] == 900  # kept-trace budget
    assert header["limits"]["pool_size"] == 1 and header["limits"]["concurrency"] == 2
    assert header["allow_test"] is False

    test = load_problems("gsm8k", limit=2)
    _script(script, [p.id for p in test], [p.gold for p in test])
    argv = ["--problems", "gsm8k", "--limit", "2", "--backend", "scripted", "--script", str(script),
            "--out", str(tmp_path / "t"), "--json", "--allow-test", "--concurrency", "2"]  # fmt: skip
    assert generate_main(argv) == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "t" / "header.json").read_text())["allow_test"] is True
