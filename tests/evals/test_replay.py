"""Replay of real published traces (ToRA-70B, MathCoder-L-70B) through the real loop and kernel."""

from __future__ import annotations

import asyncio
import json

import pytest
from mathagent.evals.replay import (
    PUBLISHED,
    ReplayItem,
    ReplayResult,
    build_report,
    classify,
    explain,
    identify_file,
    load_replay_file,
    replay_async,
    report_table,
    tora_equal,
)
from mathagent.evals.runner import make_provider
from mathagent.sandbox.base import ExecError, ExecResult

TORA = "traces/traces_tora70b_gsm8k_test.jsonl"
MC_OK = "traces/traces_mathcoderL70b_gsm8k_test_correct.jsonl"
MC_BAD = "traces/traces_mathcoderL70b_gsm8k_test_wrong.jsonl"


def test_their_verdicts_reproduce_published_tora_score(shared_data):
    items = load_replay_file(shared_data / TORA)
    assert len(items) == 1319
    assert round(100 * sum(i.their_correct for i in items) / len(items), 1) == 84.3
    assert tora_equal("1800", "18") and not tora_equal("19", "18")  # their x100 acceptance
    mc = load_replay_file(shared_data / MC_OK, limit=3) + load_replay_file(shared_data / MC_BAD, limit=3)
    assert [i.their_correct for i in mc] == [True] * 3 + [False] * 3
    assert all(len(i.codes) == len(i.recorded) for i in mc)


def test_classify_categories():
    ok = ExecResult(stdout="3.0\n")
    assert classify("3.0", "3.0", ok, "") == "identical"
    assert classify("3.00", "3.0", ok, "") == "float_format"
    assert classify("a  b", "a b", ok, "") == "whitespace"
    err = ExecResult(error=ExecError("NameError", "x", ""))
    assert classify("NameError: name 'x' is not defined", "NameError: x", err, "") == "error_same"
    assert classify("7", "5", ok, "import random") == "randomness"
    assert classify(None, "", ok, "") == "no_recorded_output"


SLICES = [
    pytest.param((10, 8, 2), marks=pytest.mark.kernel),
    pytest.param((30, 24, 6), marks=[pytest.mark.kernel, pytest.mark.slow]),
]


@pytest.mark.parametrize("sizes", SLICES)
def test_replay_slice_of_both_files(shared_data, sizes):
    n_tora, n_ok, n_bad = sizes
    items = (
        load_replay_file(shared_data / TORA, limit=n_tora)
        + load_replay_file(shared_data / MC_OK, limit=n_ok)
        + load_replay_file(shared_data / MC_BAD, limit=n_bad)
    )
    provider = make_provider(2)
    try:
        results = asyncio.run(replay_async(items, provider, concurrency=2))
    finally:
        provider.close()
    report = build_report(results)
    json.dumps(report)  # serialisable
    tora, mc = report["sources"]["ToRA-70B gsm8k"], report["sources"]["MathCoder-L-70B gsm8k"]
    assert (tora["published_accuracy"], mc["published_accuracy"]) == (84.3, 83.9)
    assert tora["n"] == n_tora and mc["n"] == n_ok + n_bad
    assert tora["replay_errors"] == 0 and mc["replay_errors"] == 0
    # every code block was re-executed by our kernel and compared with the recorded output
    assert tora["outputs_compared"] == n_tora and mc["outputs_compared"] >= n_ok + n_bad
    assert tora["output_identical_share"] >= 0.95 and mc["output_equivalent_share"] >= 0.9
    # accuracy under our grader is close to their verdict on the same rows
    assert abs(tora["our_accuracy"] - tora["their_accuracy_on_these"]) <= 10
    assert abs(mc["our_accuracy"] - mc["their_accuracy_on_these"]) <= 15
    for d in tora["diff_rows"] + mc["diff_rows"]:
        assert d["why"]
    # the first ToRA trace is Janet's ducks: 18, re-derived and graded right
    r0 = next(r for r in results if r.source == "tora" and r.problem_id == "0")
    assert r0.our_answer == "18" and r0.our_correct and r0.outputs[0]["category"] == "identical"


def test_a_silent_cell_matches_mathcoders_empty_marker():
    from mathagent.evals.replay import derive_output

    silent = ExecResult(stdout="", result=None)
    assert derive_output(silent, "mathcoder") == "<empty_execution>"
    assert derive_output(silent, "tora") == ""
    assert classify("<empty_execution>", derive_output(silent, "mathcoder"), silent, "x = 1") == "identical"


def test_explain_a_trace_that_stops_after_its_code(shared_data):
    # ToRA-70B GSM8K #146: no recorded output; their extractor read "boxed set" in the problem text
    item = load_replay_file(shared_data / TORA, limit=147)[146]
    assert item.recorded == (None,) and not item.their_correct
    why = explain(item, "2125", True, ["no_recorded_output"])
    assert "no recorded output" in why and "'boxed'" in why
    other = ReplayItem(**{**item.__dict__, "question": "How many?", "their_pred": "7"})
    assert "'boxed'" not in explain(other, "2125", True, ["no_recorded_output"])
    assert explain(item, "2125", False, ["no_recorded_output"]) is None  # both reject: no disagreement


@pytest.mark.kernel
@pytest.mark.timeout(1200)
def test_full_tora_replay(shared_data):
    """All 1319 published ToRA-70B GSM8K traces re-executed in our sandbox and graded by our grader."""
    items = load_replay_file(shared_data / TORA)
    provider = make_provider(4)
    try:
        results = asyncio.run(replay_async(items, provider, concurrency=4))
    finally:
        provider.close()
    tora = build_report(results)["sources"]["ToRA-70B gsm8k"]
    assert tora["n"] == 1319 and tora["replay_errors"] == 0
    assert tora["output_identical_share"] >= 0.99  # the target
    assert abs(tora["our_accuracy"] - 84.3) <= 1.0  # published 84.3
    assert tora["disagreements"] <= 10 and all(d["why"] for d in tora["diff_rows"])


# -- which model, which data set, which published score -------------------------------------------
@pytest.mark.parametrize(
    ("path", "model", "dataset", "published"),
    [
        # the two files: ToRA-Code-34B GSM8K was reported as "ToRA-70B, published 84.3"
        ("outputs/llm-agents/tora-code-34b-v1.0/gsm8k/test_tora_-1_seed0_t0.0_s0_e1319.jsonl",
         "ToRA-Code-34B", "gsm8k", 80.7),
        ("outs/MathCoder-L-7b/MATH/MATH_test_result-20230917-2026.jsonl", "MathCoder-L-7B", "math", None),
        ("outs/MathCoder-L-7b/GSM8K/GSM8K_test_result-20230917-2026.jsonl", "MathCoder-L-7B", "gsm8k", 64.2),
        ("outputs/llm-agents/tora-70b-v1.0/math/test_tora_-1_seed0_t0.0_s0_e5000.jsonl", "ToRA-70B", "math", 49.7),
        ("traces/traces_tora70b_gsm8k_test.jsonl", "ToRA-70B", "gsm8k", 84.3),
        ("traces/traces_mathcoderL70b_gsm8k_test_wrong.jsonl", "MathCoder-L-70B", "gsm8k", 83.9),
        ("outputs/tora-13b/svamp/test.jsonl", "ToRA-13B", None, None),  # data set unknown: no score
        ("runs/mine/traces.jsonl", None, None, None),  # nothing known: no model, no score
        ("runs/mistoral-7b/gsm8k/out.jsonl", None, "gsm8k", None),  # "tora-7b" inside another name
    ],
)  # fmt: skip
def test_files_are_identified_by_name(path, model, dataset, published):
    ident = identify_file(path)
    assert (ident.model, ident.dataset) == (model, dataset)
    r = ReplayResult("tora", "0", "1", "1", True, "1", True, dataset=ident.dataset, model=ident.model)
    (section,) = build_report([r])["sources"].values()
    assert section["published_accuracy"] == published
    assert (section["published_source"] is None) == (published is None)
    assert report_table(build_report([r]))[0][5] == ("none" if published is None else str(published))


def test_unnamed_files_are_identified_by_their_rows(tmp_path):
    gsm = {"idx": 0, "question": "q", "gt": "18", "gt_cot": "16 - 3 = <<16-3=13>>13\n#### 18", "code": ["x"]}
    math = {"idx": 0, "question": "q", "gt": "\\frac12", "level": "Level 1", "type": "Algebra", "code": ["x"]}
    for i, (row, dataset) in enumerate(((gsm, "gsm8k"), (math, "math"))):
        f = tmp_path / f"run{i}" / "out.jsonl"
        f.parent.mkdir()
        f.write_text(json.dumps(row) + "\n")
        ident = identify_file(f, [row])
        assert (ident.model, ident.dataset, ident.evidence) == (None, dataset, "rows")
        (item,) = load_replay_file(f)
        assert item.dataset == dataset and item.model is None


def test_given_model_dataset_and_published_score_win(tmp_path):
    r = ReplayResult("tora", "0", "1", "1", True, "1", True, dataset=None, model=None)
    section = build_report([r], published=77.7)["sources"]["tora ?"]
    assert section["published_accuracy"] == 77.7 and section["published_source"] == "given with --published"
    f = tmp_path / "x.jsonl"
    f.write_text(json.dumps({"idx": 0, "question": "q", "gt": "2", "code": ["x"]}) + "\n")
    (item,) = load_replay_file(f, model="ToRA-Code-7B", dataset="math")
    assert (item.model, item.dataset) == ("ToRA-Code-7B", "math")


def test_every_published_score_cites_its_source():
    assert len({(p.model, p.dataset) for p in PUBLISHED}) == len(PUBLISHED)
    assert all(p.source and 0 < p.accuracy < 100 and p.dataset in ("gsm8k", "math") for p in PUBLISHED)


def test_replay_cli_refuses_one_published_score_for_two_files(shared_data, capsys):
    from mathagent.evals.cli_replay import main

    argv = [str(shared_data / TORA), str(shared_data / MC_OK), "--limit", "1", "--published", "80"]
    assert main(argv) == 2
    assert "one at a time" in capsys.readouterr().err


@pytest.mark.kernel
def test_a_math_file_is_graded_with_the_math_policy(tmp_path):
    """A symbolic MATH answer is right under the MATH policy; the GSM8K policy (numbers only) refused it."""
    trace = (
        "Expand it.\n```python\nprint('x**2 + 1')\n```\n```output\nx**2 + 1\n```\n"
        "So the answer is $\\boxed{1 + x^2}$."
    )
    row = {"idx": 7, "question": "Simplify $(x^2+1)$.", "gt": "x^2+1", "code": [trace], "pred": ["1 + x^2"],
           "score": [True]}  # fmt: skip
    f = tmp_path / "tora-7b-v1.0" / "math" / "test_tora.jsonl"
    f.parent.mkdir(parents=True)
    f.write_text(json.dumps(row) + "\n")
    items = load_replay_file(f)
    assert (items[0].model, items[0].dataset, items[0].their_correct) == ("ToRA-7B", "math", True)
    provider = make_provider(1)
    try:
        (result,) = asyncio.run(replay_async(items, provider, concurrency=1))
    finally:
        provider.close()
    assert result.our_answer == "1 + x^2" and result.our_correct and result.why is None
    report = build_report([result])["sources"]["ToRA-7B math"]
    assert report["published_accuracy"] == 40.1 and report["our_accuracy"] == 100
