"""Selection filters and near-duplicate detection as tables over hand-made records (no kernel)."""

from __future__ import annotations

import json

import pytest
from mathagent.agent.trace import Step, StepKind, StopReason, Trace, VerificationRound, VerificationState
from mathagent.sandbox.base import ExecError, ExecResult
from mathagent.training import dedup
from mathagent.training.filters import REASONS, FilterConfig, quality_reason, select

OK = ExecResult(stdout="5\n")
ERR = ExecResult(error=ExecError("ZeroDivisionError", "division by zero", ""))


def rec(pid="p", i=0, *, answer="5", gold="5", steps=None, correct=None, status="ok", verification=(), **kw):
    steps = steps if steps is not None else [("text", "Compute."), ("code", "print(2+3)"), ("exec", OK)]
    built = []
    for kind, x in steps:
        if kind == "exec":
            built.append(Step(StepKind.EXECUTION, x.stdout or (x.error.ename if x.error else ""), x))
        else:
            built.append(Step(StepKind(kind), x))
    built.append(Step(StepKind.TEXT, f"The answer is \\boxed{{{answer}}}."))
    trace = Trace(
        problem=f"problem {pid}",
        steps=tuple(built),
        final_answer=answer,
        stop_reason=StopReason.ANSWERED if answer else StopReason.NO_ANSWER,
        verification=tuple(verification),
        problem_id=pid,
        sample_index=i,
    )
    return {
        "problem_id": pid,
        "sample_index": i,
        "dataset": "gsm8k" if gold else "interpolated",
        "question": trace.problem,
        "gold": gold,
        "status": status,
        "answer": answer,
        "correct": (answer == gold) if correct is None else correct,
        "trace": trace.to_dict(),
        **kw,
    }


CASES = [
    # (why, record, expected reason) — each row is one rule of the filters docstring
    ("kept", rec(), None),
    ("backend failure", {**rec(), "status": "failed"}, "failed"),
    ("no answer", rec(answer=None), "no_answer"),
    ("prose only", rec(steps=[("text", "I just know it.")]), "no_code"),
    ("last cell raised", rec(steps=[("code", "1/0"), ("exec", ERR)]), "unrepaired_error"),
    (
        "error repaired later",
        rec(steps=[("code", "1/0"), ("exec", ERR), ("code", "print(5)"), ("exec", OK)]),
        None,
    ),
    (
        "cut output",
        rec(steps=[("code", "x"), ("exec", ExecResult(stdout="1\n", truncated=True))]),
        "truncated_output",
    ),
    (
        "over the view",
        rec(steps=[("code", "x"), ("exec", ExecResult(stdout="9" * 2500))]),
        "truncated_output",
    ),
    (
        "made-up output",
        rec(steps=[("code", "print(2+3)"), ("exec", OK), ("text", "```output\n7\n```")]),
        "fabricated_output",
    ),
    ("too long", rec(steps=[("text", "word " * 5000), ("code", "print(5)"), ("exec", OK)]), "too_long"),
    ("refuted", rec(verification=[VerificationRound(1, VerificationState.FALSE, "5")]), "refuted"),
    (
        "revised",
        rec(
            verification=[
                VerificationRound(1, VerificationState.FALSE, "4"),
                VerificationRound(2, VerificationState.TRUE, "5"),
            ]
        ),
        "refuted",
    ),
]


@pytest.mark.parametrize("why,record,expected", CASES, ids=[c[0] for c in CASES])
def test_quality_reason_table(why, record, expected):
    assert quality_reason(record, FilterConfig()) == expected


def test_every_reason_counted_once_and_gold_vs_agreement():
    records = [
        rec("g1", 0),
        rec("g1", 1, answer="6"),  # wrong against gold
        rec("g2", 0, steps=[("text", "no code")]),
        # no gold: 3 of 3 agree (one is a duplicate solution of another)
        rec(
            "n1", 0, gold="", answer="12", steps=[("text", "First way."), ("code", "print(12)"), ("exec", OK)]
        ),
        rec(
            "n1", 1, gold="", answer="12", steps=[("text", "First way."), ("code", "print(12)"), ("exec", OK)]
        ),
        rec(
            "n1",
            2,
            gold="",
            answer="12.0",
            steps=[("text", "Another route: 3*4."), ("code", "print(3*4)"), ("exec", OK)],
        ),
        # no gold: 2 of 3 agree -> nothing kept
        rec("n2", 0, gold="", answer="7"),
        rec("n2", 1, gold="", answer="7", steps=[("text", "Other."), ("code", "print(7)"), ("exec", OK)]),
        rec("n2", 2, gold="", answer="8"),
    ]
    sel = select(records, FilterConfig(agree=3))
    kept = {(r["problem_id"], r["sample_index"]) for r in sel.kept}
    assert kept == {("g1", 0), ("n1", 0), ("n1", 2)}
    assert sel.dropped["wrong_answer"] == 1 and sel.dropped["no_code"] == 1
    assert sel.dropped["duplicate_solution"] == 1 and sel.dropped["no_agreement"] == 3
    assert sum(sel.dropped.values()) + len(sel.kept) == len(records)
    assert set(sel.dropped) == set(REASONS)
    assert sel.counts()["problems"] == 4 and sel.counts()["problems_kept"] == 2
    # 2 of 3 is enough with --agree 2; the per-problem cap then applies
    sel2 = select(records, FilterConfig(agree=2, max_per_problem=1))
    assert ("n2", 0) in {(r["problem_id"], r["sample_index"]) for r in sel2.kept}
    assert sel2.dropped["over_per_problem"] == 2


DEDUP = [
    # (a, b, near-duplicate at PROBLEM_JACCARD?) — rows from GSM8K train/test templates
    (
        "A train travels 270 miles in 3 hours. At the same rate, how many additional hours would it take to travel an additional 180 miles?",
        "A train travels 270 miles in 3 hours. At the same rate, how many additional hours would it take to travel an additional 180 miles?",
        True,
    ),
    (
        "Tom has 1,000 apples and gives 20 to Ann. How many apples does Tom have now?",
        "tom has 1000 apples and gives 20 to ann.  How many apples does Tom have now ?",
        True,
    ),
    (
        "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
        "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting.",
        False,
    ),
]


@pytest.mark.parametrize("a,b,dup", DEDUP)
def test_problem_near_duplicates(a, b, dup):
    score = dedup.jaccard(dedup.shingles(a), dedup.shingles(b))
    assert (score >= dedup.PROBLEM_JACCARD) is dup


def test_index_finds_best_and_long_ngram_overlap(shared_data):
    rows = [
        json.loads(x) for x in (shared_data / "datasets" / "gsm8k_test.jsonl").read_text().splitlines()[:200]
    ]
    index = dedup.NearDupIndex(long_n=dedup.LEAK_NGRAM).add_all(
        (str(i), r["question"]) for i, r in enumerate(rows)
    )
    q = rows[17]["question"]
    m = index.best("Here is a question. " + q)
    assert m.key == "17" and m.jaccard > 0.8 and m.long_overlap
    assert index.best("Completely unrelated words about purple zebras dancing") is None
    kept, dropped = dedup.dedup_texts([("a", q), ("b", q.upper()), ("c", rows[3]["question"])], 0.6)
    assert kept == ["a", "c"] and dropped == {"b": "a"}
