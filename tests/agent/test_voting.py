"""Tables for the voting functions: weights, ties, equivalence grouping, pruning, pass@k, at-k summaries."""

from __future__ import annotations

import math
from itertools import combinations

import pytest
from mathagent.agent.grading.voting import (
    MAJORITY,
    Sample,
    Weights,
    claimed_outputs,
    exact_cluster_fn,
    majority_vote,
    pass_at_k,
    pass_at_k_samples,
    prune,
    state_stats,
    trace_fabricates_output,
    trace_ran_code,
    vote_accuracy_at_k,
    weighted_vote,
)
from mathagent.agent.trace import Step, StepKind, Trace, VerificationRound, VerificationState
from mathagent.sandbox.base import ExecResult

T, U, F = VerificationState.TRUE, VerificationState.UNCERTAIN, VerificationState.FALSE
EX = exact_cluster_fn


# ------------------------------------------------------------------ weights


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1,0.5,0.2", Weights(1.0, 0.5, 0.2)),
        (" 1 , 0.3 ,0.1 ", Weights(1.0, 0.3, 0.1)),
        ("1,1,1", MAJORITY),
        ("2,1,0", Weights(2.0, 1.0, 0.0)),
    ],
)
def test_weights_parse(text, expected):
    assert Weights.parse(text) == expected
    assert Weights.parse(str(expected)) == expected
    assert Weights.from_dict(expected.to_dict()) == expected


@pytest.mark.parametrize("bad", ["1,0.5", "1,0.5,0.2,0.1", "a,b,c", "1,,0.2", "1,-0.5,0", "1,nan,0", ""])
def test_weights_parse_rejects(bad):
    with pytest.raises(ValueError):
        Weights.parse(bad)


def test_default_weights_follow_csv_ordering():
    w = Weights()
    assert w.is_monotone and w.true > w.uncertain >= w.false
    assert not MAJORITY.is_monotone
    assert w.for_state(None) == w.uncertain  # unverified counts as uncertain
    assert w.for_state("T") == w.true and w.for_state(F) == w.false


# ------------------------------------------------------------------ votes


@pytest.mark.parametrize(
    "samples, weights, winner, tie",
    [
        # the verified minority beats an unverified majority of two...
        ([("5", T), ("7", U), ("7", U)], "1,0.3,0.1", "5", None),
        # ...but not of four
        ([("5", T), ("7", U), ("7", U), ("7", U), ("7", U)], "1,0.3,0.1", "7", None),
        # refuted answers lose to an uncertain one
        ([("3", F), ("3", F), ("4", U)], "1,0.5,0.1", "4", None),
        # weighted tie (1.0 vs 0.5+0.5) -> more samples wins
        ([("5", T), ("7", U), ("7", U)], "1,0.5,0.2", "7", "count"),
        # weighted tie with equal counts -> earliest first appearance
        ([("9", U), ("8", U)], "1,0.5,0.2", "9", "first_appearance"),
        # float sums that should tie exactly: 0.1+0.2 vs 0.3
        ([("a", F), ("a", U), ("b", T)], "0.3,0.2,0.1", "a", "count"),
        # samples without an answer never score; without a state they count as uncertain
        ([(None, T), (None, T), ("2", None)], "1,0.5,0.2", "2", None),
        ([(None, T)], "1,0.5,0.2", None, None),
        ([], "1,0.5,0.2", None, None),
    ],
)
def test_weighted_vote_table(samples, weights, winner, tie):
    r = weighted_vote(samples, weights, cluster_fn=EX)
    assert r.winner == winner
    assert r.tie_broken_by == tie
    if winner is not None:
        assert r.clusters[0].answer == winner
        assert [c.score for c in r.clusters] == sorted((c.score for c in r.clusters), reverse=True)


def test_vote_result_records_scores_and_states():
    r = weighted_vote([("5", T), ("7", U), ("5", F), ("7", None)], Weights(1, 0.5, 0.2), cluster_fn=EX)
    by = {c.answer: c for c in r.clusters}
    assert by["5"].score == pytest.approx(1.2) and by["5"].count == 2 and by["5"].states == {"T": 1, "F": 1}
    assert by["7"].score == pytest.approx(1.0) and by["7"].states == {"U": 1, "none": 1}
    assert r.winner == "5" and r.winner_index == 0 and r.n_samples == r.n_voted == 4
    d = r.to_dict()
    assert d["weights"] == {"true": 1, "uncertain": 0.5, "false": 0.2} and d["clusters"][0]["answer"] == "5"


@pytest.mark.parametrize(
    "answers, winner, tie",
    [
        (["1", "2", "2"], "2", None),
        (["1", "2", "1", "2"], "1", "first_appearance"),
        (["3", None, None, None], "3", None),
        ([" 4 ", "4", "5"], " 4 ", None),  # representative is the earliest sample as written
    ],
)
def test_majority_vote_table(answers, winner, tie):
    r = majority_vote(answers, cluster_fn=EX)
    assert (r.winner, r.tie_broken_by, r.method) == (winner, tie, "majority")


def test_majority_ignores_states():
    samples = [("5", T), ("7", F), ("7", F)]
    assert majority_vote(samples, cluster_fn=EX).winner == "7"
    assert weighted_vote(samples, MAJORITY, cluster_fn=EX).winner == "7"
    assert weighted_vote(samples, cluster_fn=EX).winner == "5"


def test_cluster_fn_length_is_checked():
    with pytest.raises(ValueError):
        weighted_vote([("1", T), ("2", T)], cluster_fn=lambda a: [0])


@pytest.mark.parametrize(
    "samples, dataset, winner_in",
    [
        # 1/2, 0.5 and \frac{1}{2} are one answer: it beats 2 which has more identical strings
        ([("1/2", U), ("0.5", U), ("\\frac{1}{2}", U), ("2", U), ("2", U)], "math", {"1/2"}),
        ([("\\frac{1}{2}", T), ("2", U), ("2", U), ("0.5", T)], "math", {"\\frac{1}{2}"}),
        # GSM8K: thousands commas and trailing zeros group with the plain integer
        ([("2,125", U), ("2125", U), ("2125.0", U), ("2000", U), ("2000", U)], "gsm8k", {"2,125"}),
    ],
)
def test_vote_groups_by_equivalence_with_real_grader(samples, dataset, winner_in):
    pytest.importorskip("mathagent.agent.grading")
    r = weighted_vote(samples, dataset=dataset)
    assert r.winner in winner_in
    assert majority_vote(samples, dataset=dataset).winner in winner_in


# ------------------------------------------------------------------ pruning


@pytest.mark.parametrize(
    "samples, kept, pruned, fallback",
    [
        (
            [Sample("1"), Sample(None), Sample("2", ran_code=False)],
            [0],
            {"no_answer": 1, "no_code": 1},
            False,
        ),
        ([Sample("1", fabricated_output=True), Sample("1")], [1], {"fabricated_output": 1}, False),
        ([Sample(" "), Sample("3", ran_code=False)], [0, 1], {"no_answer": 1, "no_code": 1}, True),
        ([Sample("1"), Sample("2")], [0, 1], {}, False),
        ([], [], {}, False),
    ],
)
def test_prune_table(samples, kept, pruned, fallback):
    assert prune(samples) == (kept, pruned, fallback)


def test_pruning_changes_the_vote_and_is_reported():
    samples = [Sample("9", ran_code=False), Sample("9", ran_code=False), Sample("4")]
    assert weighted_vote(samples, cluster_fn=EX).winner == "9"
    r = weighted_vote(samples, cluster_fn=EX, prune_candidates=True)
    assert r.winner == "4" and r.pruned == {"no_code": 2} and r.n_voted == 1 and not r.pruned_fallback
    r = majority_vote([Sample("9", ran_code=False)], cluster_fn=EX, prune_candidates=True)
    assert r.winner == "9" and r.pruned_fallback


def _exec(stdout="", result=None):
    return ExecResult(stdout=stdout, result=result)


def _trace(*steps):
    return Trace(problem="p", steps=tuple(steps), final_answer="42")


@pytest.mark.parametrize(
    "text, claims",
    [
        ("so\n```output\n42\n```\ndone", ["42\n"]),
        ("```python\nprint(1)\n```", []),
        ("<|execution|>7<|endofblock|>", ["7"]),
        ("```output\n\n```", []),
    ],
)
def test_claimed_outputs(text, claims):
    assert claimed_outputs(text) == claims


def test_trace_pruning_signals():
    ran = _trace(
        Step(StepKind.CODE, "print(6*7)"),
        Step(StepKind.EXECUTION, "42", execution=_exec("42\n")),
        Step(StepKind.TEXT, "As shown:\n```output\n42\n```\nthe answer is 42."),
    )
    assert trace_ran_code(ran) and not trace_fabricates_output(ran)
    invented = _trace(Step(StepKind.TEXT, "```python\nprint(6*7)\n```\n```output\n41\n```"))
    assert not trace_ran_code(invented) and trace_fabricates_output(invented)
    s = Sample.from_trace(invented.with_(verification=(VerificationRound(0, VerificationState.TRUE, "42"),)))
    assert s == Sample("42", T, ran_code=False, fabricated_output=True)


# ------------------------------------------------------------------ pass@k


def _brute_pass_at_k(n, c, k):
    items = [True] * c + [False] * (n - c)
    subsets = list(combinations(range(n), k))
    return sum(any(items[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (10, 0, 1, 0.0),
        (10, 10, 1, 1.0),
        (10, 3, 1, 0.3),
        (10, 3, 5, 1 - 21 / 252),  # 1 - C(7,5)/C(10,5)
        (5, 1, 5, 1.0),
        (4, 2, 3, 1.0),  # n - c < k
        (16, 4, 4, 1 - 495 / 1820),  # 1 - C(12,4)/C(16,4)
    ],
)
def test_pass_at_k_known_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)
    assert pass_at_k(n, c, k) == pytest.approx(_brute_pass_at_k(n, c, k))


def test_pass_at_k_large_n_is_stable_and_validates():
    assert pass_at_k(2000, 1, 1) == pytest.approx(1 / 2000)
    assert 0 < pass_at_k(2000, 3, 100) < 1 and math.isfinite(pass_at_k(2000, 3, 100))
    assert pass_at_k_samples([True, False, False, False], 2) == pytest.approx(0.5)
    for bad in [(3, 4, 1), (3, 1, 0), (3, 1, 4), (3, -1, 1)]:
        with pytest.raises(ValueError):
            pass_at_k(*bad)


# ------------------------------------------------------------------ summaries


def test_vote_accuracy_at_k_full_set_and_subsamples():
    # problem 0: weighted picks the verified right answer, majority the wrong one.
    p0 = [("r", T), ("w", F), ("w", F)]
    c0 = [True, False, False]
    # problem 1: both right (weighted: 0.5 + 0.5 ties 1.0, more samples wins).
    p1 = [("r", U), ("r", U), ("w", T)]
    c1 = [True, True, False]
    w = Weights(1, 0.5, 0.2)
    rows = vote_accuracy_at_k([p0, p1], [c0, c1], ks=(1, 3, 4), weights=w, cluster_fn=EX, draws=50, seed=1)
    by = {r.k: r for r in rows}
    assert 4 not in by  # no problem has 4 samples
    assert by[3].majority == 0.5 and by[3].weighted == 1.0 and by[3].pass_at_k == 1.0 and by[3].draws == 1
    # k = 1: both methods equal the mean per-sample accuracy of the drawn samples
    assert by[1].majority == by[1].weighted and by[1].draws == 50
    assert by[1].pass_at_k == pytest.approx((1 / 3 + 2 / 3) / 2)
    again = vote_accuracy_at_k([p0, p1], [c0, c1], ks=(3, 1), weights=w, cluster_fn=EX, draws=50, seed=1)
    assert {r.k: r for r in again} == by  # reproducible, independent of the order of ks


def test_state_stats_precision():
    samples = [("1", T), ("2", T), ("3", F), ("4", U), ("5", None)]
    st = state_stats(samples, [True, True, False, True, False])
    assert st.total == 5 and st.share("T") == 0.4
    assert st.precision("T") == 1.0 and st.precision("F") == 0.0 and st.precision("U") == 1.0
    d = st.to_dict()
    assert d["counts"] == {"T": 2, "U": 1, "F": 1, "none": 1} and d["precision"]["none"] == 0.0
    assert state_stats([], []).precision("T") is None
