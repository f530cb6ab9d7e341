"""The run summary: maj@k and weighted@k side by side, verification-state shares and precision."""

from __future__ import annotations

import pytest
from mathagent.evals.summary import summarize


def rec(pid: str, i: int, answer: str, correct: bool, state: str | None) -> dict:
    return {
        "problem_id": pid,
        "sample_index": i,
        "answer": answer,
        "correct": correct,
        "verification_state": state,
        "status": "ok",
    }


def test_state_precision_and_weighted_vote_beside_majority():
    # problem a: the majority (3 x "5", all refuted) is wrong; the one verified "7" is right.
    records = [
        rec("a", 0, "5", False, "F"),
        rec("a", 1, "5", False, "F"),
        rec("a", 2, "5", False, "F"),
        rec("a", 3, "7", True, "T"),
        rec("b", 0, "2", True, "T"),
        rec("b", 1, "2", True, "U"),
        rec("b", 2, "3", False, "U"),
        rec("b", 3, "2", True, "T"),
    ]
    s = summarize(records, k=4, weights="1,0.3,0.1", dataset="gsm8k")
    assert s["overall"]["maj_at_k"] == pytest.approx(0.5)
    assert s["overall"]["weighted_at_k"] == pytest.approx(1.0)
    assert [row["k"] for row in s["overall"]["by_k"]] == [1, 2, 4]
    v = s["verification"]
    assert v["counts"] == {"T": 3, "U": 2, "F": 3, "none": 0}
    assert v["precision"]["T"] == pytest.approx(1.0)
    assert v["precision"]["U"] == pytest.approx(0.5)
    assert v["precision"]["F"] == pytest.approx(0.0)
    assert v["share"]["F"] == pytest.approx(3 / 8)
