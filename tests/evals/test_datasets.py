"""Data sets load with the right counts and gold answers; shipped copies are byte-identical."""

from __future__ import annotations

import pytest
from mathagent.evals.datasets import (
    STANDARD,
    DatasetError,
    dataset_info,
    load_problems,
    sha256_file,
    shipped_path,
)

COUNTS = {
    "gsm8k": 1319,
    "math500": 500,
    "math": 5000,
    "gsm-hard": 1319,
    "svamp": 1000,
    "aime24": 30,
    "amc23": 40,
    "gsm8k-train": 7473,
    "math-train": 7500,
}


@pytest.mark.parametrize("name", STANDARD)
def test_standard_sets_load(name, shared_data, monkeypatch):
    monkeypatch.setenv("MATHAGENT_DATA_DIR", str(shared_data / "datasets"))
    if name == "math-train" and not (shared_data / "datasets" / "math_train.jsonl").is_file():
        pytest.skip("MATH train is not in the reference data; test_hub.py loads it through a fake hub")
    problems = load_problems(name)
    assert len(problems) == COUNTS[name]
    assert all(p.question.strip() and p.gold.strip() for p in problems)
    assert len({p.id for p in problems}) == len(problems)


def test_gold_values(shared_data, monkeypatch):
    monkeypatch.setenv("MATHAGENT_DATA_DIR", str(shared_data / "datasets"))
    gsm = load_problems("gsm8k")
    assert gsm[0].gold == "18"
    assert all("," not in p.gold for p in gsm)  # thousands commas removed (e.g. "2,125")
    math = load_problems("math")
    # MARIO gold, not the last \boxed{} of the solution (the README's trap: idx 414 -> "-2,1")
    assert [p for p in math if p.id == "414"][0].gold == "-2,1"
    assert {p.level for p in math} == {"1", "2", "3", "4", "5"} | (
        {None} if any(p.level is None for p in math) else set()
    )
    m500 = load_problems("math500")
    assert m500[0].subject == "Precalculus" and m500[0].level == "2"


def test_shipped_copies_match_reference(shared_data):
    for name, ref in (("gsm8k", "gsm8k_test.jsonl"), ("math500", "math500_test.jsonl")):
        assert sha256_file(shipped_path(name)) == sha256_file(shared_data / "datasets" / ref)
    assert dataset_info("gsm8k")["sha256"].startswith("3730d312")


def test_limit_and_seeded_shuffle():
    a = load_problems("gsm8k", limit=5, seed=1, shuffle=True)
    b = load_problems("gsm8k", limit=5, seed=1, shuffle=True)
    assert [p.id for p in a] == [p.id for p in b] and len(a) == 5
    assert [p.id for p in load_problems("gsm8k", limit=3)] == ["0", "1", "2"]


def test_user_jsonl_and_malformed_line(tmp_path):
    good = tmp_path / "mine.jsonl"
    good.write_text('{"question": "1+1?", "answer": "2"}\n{"problem": "2+2?", "gold": "4", "id": "x"}\n')
    ps = load_problems(str(good))
    assert [(p.id, p.gold, p.dataset) for p in ps] == [("0", "2", "mine"), ("x", "4", "mine")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "1+1?", "answer": "2"}\n{"question": oops}\n')
    with pytest.raises(DatasetError, match=r"bad.jsonl:2"):
        load_problems(str(bad))
    missing = tmp_path / "missing.jsonl"
    missing.write_text('{"question": "1+1?"}\n')
    with pytest.raises(DatasetError, match=r"missing.jsonl: row 1: missing field"):
        load_problems(str(missing))
    with pytest.raises(DatasetError, match="neither a known data set"):
        load_problems("nope")
