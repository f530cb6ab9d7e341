"""Problem interpolation with the scripted backend: parsing, leakage rejection, dedup, then the agreement filter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mathagent.training import interpolate as I
from mathagent.training.cli_generate import main as generate_main

NEW = [
    "New problem:\nA bakery packs 84 muffins into boxes of 6 and sells each box for $7.50. If it sells "
    "3/4 of the boxes and earns a profit of 40% on each box sold, what was the cost of one box?",
    "Sure! Here it is.\n\nNew problem: Maya saves 15 dollars in the first week and each week after that she "
    "saves 4 dollars more than the week before. After how many weeks will her total savings first exceed 300 dollars?",
    "New problem: Three friends share a pizza cut into 12 slices. Leo eats one third of the slices and Ana eats "
    "half of what is left. How many slices remain for the third friend?",
]


@pytest.mark.parametrize(
    "reply,expected",
    [
        (
            "New problem: What is the sum of the first five odd numbers times two?",
            "What is the sum of the first five odd numbers times two?",
        ),
        (
            "**New problem:** How many ways can 4 books stand on a shelf in a row?\n\nSolution: 24",
            "How many ways can 4 books stand on a shelf in a row?",
        ),
        ("New problem: How many positive divisors does 36 have? \\boxed{9}", None),  # answer given away
        ("I cannot do that.", None),  # too short to be a problem
        (  # the bundled 0.5B restated seed B and began solving it (seen in a real run)
            "Problem B (hard):\n\nTo convert the point (0,3) from rectangular coordinates to polar coordinates, "
            "we use the following formulas",
            None,
        ),
    ],
)
def test_parse_problem_table(reply, expected):
    assert I.parse_problem(reply) == expected


def test_draw_pairs_is_seeded():
    from mathagent.evals.datasets import Problem

    easy = [Problem(str(i), f"easy {i}", "1", "gsm8k") for i in range(5)]
    hard = [Problem(str(i), f"hard {i}", "1", "math") for i in range(5)]
    a = [(e.id, h.id) for e, h in I.draw_pairs(easy, hard, 6, seed=3)]
    assert a == [(e.id, h.id) for e, h in I.draw_pairs(easy, hard, 6, seed=3)]
    assert a != [(e.id, h.id) for e, h in I.draw_pairs(easy, hard, 6, seed=4)]


def _solve(ans: str) -> list[str]:
    return [f"Compute.\n```python\nprint({ans})\n```\n```output\n{ans}\n```\nSo $\\boxed{{{ans}}}$."]


@pytest.mark.kernel
def test_interpolate_rejects_leaks_and_duplicates_then_solves_with_agreement(shared_data, tmp_path, capsys):
    ds = shared_data / "datasets"
    easy_rows = [json.loads(x) for x in (ds / "gsm8k_train.jsonl").read_text().splitlines()[:20]]
    hard_rows = [json.loads(x) for x in (ds / "math_test.jsonl").read_text().splitlines()[:20]]
    easy, hard = tmp_path / "easy.jsonl", tmp_path / "hard.jsonl"
    easy.write_text("".join(json.dumps(r) + "\n" for r in easy_rows))
    hard.write_text(
        "".join(json.dumps({"problem": r["problem"], "solution": r["solution"]}) + "\n" for r in hard_rows)
    )
    test_q = json.loads((ds / "gsm8k_test.jsonl").read_text().splitlines()[5])["question"]
    replies = {
        "i000000": NEW[0],
        "i000001": "New problem: " + test_q,  # copied from the GSM8K test set: leakage
        "i000002": NEW[1],
        "i000003": "New problem: " + easy_rows[0]["question"],  # a seed, restated
        "i000004": NEW[1].replace("Maya", "Maya Lee"),  # near-duplicate of candidate 2
        "i000005": "No.",  # unparsable
        "i000006": NEW[2],
    }
    interp = tmp_path / "interp.jsonl"
    interp.write_text("".join(json.dumps({"problem_id": k, "text": v}) + "\n" for k, v in replies.items()))
    # solving: 3 samples each; the bakery problem's samples disagree, the others agree 3 of 3
    script = tmp_path / "solve.jsonl"
    solve = {
        "i000000": {"samples": [_solve("5"), _solve("6"), _solve("5")]},
        "i000002": {"turns": _solve("12")},
        "i000006": {"turns": _solve("4")},
    }
    script.write_text("".join(json.dumps({"problem_id": k, **v}) + "\n" for k, v in solve.items()))
    out = tmp_path / "d1"
    argv = [
        "interpolate", "--easy", str(easy), "--hard", str(hard), "--n", "7", "--backend", "scripted",
        "--interp-script", str(interp), "--script", str(script), "--out", str(out), "--k", "3", "--json",
    ]  # fmt: skip
    # the hard seeds are MATH *test* rows (MATH train is not in the reference data): refused as seeds
    # unless allowed (issue 14 §5)
    assert generate_main(argv) == 2
    assert "--hard" in capsys.readouterr().err
    argv.append("--allow-test")
    assert generate_main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    stats = json.loads((out / I.STATS_FILE).read_text())
    assert stats["candidates"] == 7 and stats["accepted"] == 3
    assert stats["rejected"] == {
        "failed": 0,
        "unparsable": 1,
        "test_leak": 1,
        "duplicate_seed": 1,
        "duplicate_new": 1,
    }
    overlap = stats["test_overlap"]
    assert overlap["leaks_by_test_set"] == {"gsm8k": 1} and overlap["max_jaccard"] > 0.9
    assert overlap["shared_long_ngram"] >= 1 and sum(overlap["jaccard_histogram"].values()) == 6
    problems = [json.loads(x) for x in (out / I.PROBLEMS_FILE).read_text().splitlines()]
    assert [p["id"] for p in problems] == ["i000000", "i000002", "i000006"]
    assert all(p["max_test_jaccard"] < 0.5 and p["dataset"] == "interpolated" for p in problems)
    d = summary["dataset"]
    assert d["samples"] == 9 and d["kept"] == 2 and d["problems_kept"] == 2  # one trace each (duplicates)
    assert d["dropped"]["no_agreement"] == 3 and d["dropped"]["duplicate_solution"] == 4
    chat = [json.loads(x) for x in (out / "data" / "train_chat.jsonl").read_text().splitlines()]
    assert {r["problem_id"] for r in chat} == {"i000002", "i000006"} and chat[0]["source"] == "interpolated"
    assert "interpolated" in (out / "README.md").read_text()

    # run again: the candidates are not asked for again, nothing is solved twice
    interp.write_text("")
    assert generate_main(argv) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["counts"]["ran"] == 0 and json.loads((out / I.STATS_FILE).read_text())["accepted"] == 3


def test_prompt_names_both_problems():
    msgs = I.build_prompt("EASY ONE", "HARD ONE")
    text = msgs[0]["content"]
    assert "EASY ONE" in text and "HARD ONE" in text and "New problem:" in text
    assert text.index("EASY ONE") < text.index("HARD ONE") and "{easy}" not in text


def test_leak_index_covers_the_test_sets(shared_data):
    index, sizes = I.test_set_index()
    assert sizes.get("gsm8k") == 1319 and (sizes.get("math") == 5000 or sizes.get("math500") == 500)
    test_q = json.loads((Path(shared_data) / "datasets" / "gsm8k_test.jsonl").read_text().splitlines()[0])
    m = index.best(test_q["question"])
    assert m.key == "gsm8k:0" and m.jaccard == 1.0 and m.long_overlap
