"""Peer grader suites (Math-Verify, hendrycks MATH, NeMo-Skills) run against our grader.

Each row of ../shared/data/grader_cases/*.jsonl is one case. Where OUR policy deliberately differs from
the suite, the row is listed in OVERRIDES with the reason (mirrored in docs/grading.md) and the test
asserts our decision instead of the suite's.
"""

from __future__ import annotations

import json

import pytest
from mathagent.agent.grading import extract_answer, is_equivalent, normalize_answer

MV = "grader_cases_mathverify.jsonl"
HE = "grader_cases_hendrycks.jsonl"
NS = "grader_cases_nemo_skills.jsonl"

# (file, row index, source line) -> (our verdict, reason)
OVERRIDES: dict[tuple[str, int, int], tuple[int, str]] = {
    (HE, 1, 15): (1, "MATH 'all solutions' comma lists compare as sets (order not asked)"),
    (HE, 8, 50): (1, "MATH 'all solutions' comma lists compare as sets (order not asked)"),
    (MV, 5, 70): (0, "a comma is never read as a decimal point (ambiguous with lists/thousands)"),
    (MV, 6, 71): (0, "a comma is never read as a decimal point"),
    (MV, 7, 72): (0, "a comma is never read as a decimal point"),
    (MV, 17, 87): (0, "a comma is never read as a decimal point"),
    (MV, 31, 132): (1, "an answer split over lines inside $...$ is still the answer"),
    (MV, 32, 133): (1, "an answer split over lines inside \\(...\\) is still the answer"),
    (MV, 35, 138): (0, "'1/2 = 10/9' has a numeric left side: an equation, not a labelled answer"),
    (MV, 123, 506): (0, "arithmetic on matrices inside the answer is not evaluated"),
    (MV, 124, 512): (0, "arithmetic on matrices inside the answer is not evaluated"),
    (MV, 133, 586): (0, "rounded decimals need >= 6 significant digits (0.33 != 1/3)"),
    (MV, 139, 605): (0, "rounded decimals need >= 6 significant digits (2.6667 != 8/3)"),
    (MV, 141, 621): (0, "unmarked prose: we take the last math span / number, which differs"),
    (MV, 142, 627): (0, "unmarked prose: we take the last math span / number, which differs"),
    (MV, 163, 756): (0, "unmarked prose: we take the last math span / number, which differs"),
    (MV, 172, 810): (0, "unmarked prose: we take the last math span / number, which differs"),
    (MV, 187, 907): (1, "an interval and the inequality describing it are always the same answer"),
    (MV, 191, 8): (0, "boxes separated by '++++++' are not one joined answer"),
    (MV, 197, 24): (0, "inequalities on |z| are not converted to unions of intervals"),
    (MV, 218, 121): (0, "an unterminated \\boxed{ is not an answer"),
    (MV, 251, 149): (0, "boxes separated by words ('papers and') are not one joined answer"),
    (MV, 254, 8): (0, "f(x) and f(y) are different expressions"),
    (MV, 264, 28): (0, "1 - 1/e and 1 + 1/e are different numbers"),
}


def _rows(shared, name):
    path = shared / "grader_cases" / name
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _answer(text, dataset):
    text = str(text)
    a = extract_answer(text, dataset)
    return a if a is not None else normalize_answer(text)


def _check(shared_data, name, i):
    rows = _rows(shared_data, name)
    if i >= len(rows):
        pytest.skip("row absent")
    r = rows[i]
    key = (name, i, r["line"])
    expected = OVERRIDES[key][0] if key in OVERRIDES else r["expected"]
    if name == MV:
        # compare_strings extracts from both sides; "expr"-only rows allow a last-number fallback
        ds = "generic" if (r.get("options") or {}).get("match_types") == ["expr"] else "math"
        got = is_equivalent(_answer(r["pred"], ds), _answer(r["gold"], ds), "math")
    else:
        got = is_equivalent(str(r["pred"]), str(r["gold"]), "math")
    assert int(got) == expected, f"{r['source_file']}:{r['line']} gold={r['gold']!r} pred={r['pred']!r}"


@pytest.mark.parametrize("i", range(269))
def test_mathverify_suite(shared_data, i):
    _check(shared_data, MV, i)


@pytest.mark.parametrize("i", range(16))
def test_hendrycks_suite(shared_data, i):
    _check(shared_data, HE, i)


@pytest.mark.parametrize("i", range(60))
def test_nemo_skills_suite(shared_data, i):
    _check(shared_data, NS, i)


def test_overrides_are_few(shared_data):
    """Deliberate differences stay a small, listed minority of each suite."""
    for name, limit in ((MV, 0.10), (HE, 0.15), (NS, 0.0)):
        n = len(_rows(shared_data, name))
        k = sum(1 for key in OVERRIDES if key[0] == name)
        assert k <= limit * n, (name, k, n)
