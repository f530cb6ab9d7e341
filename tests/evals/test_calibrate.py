"""Calibrated vote weights: the fit (tables), the held-out rule, the CLI's refusals and a scripted run
on a real kernel, and the one voting path that solve / REPL / eval share."""

from __future__ import annotations

import json
import shutil
import zlib

import pytest
from mathagent.agent.calibrate import (
    Calibration,
    calibrate_records,
    derive_weights,
    list_calibrations,
    lookup,
    shrunk_precisions,
    state_counts,
)
from mathagent.agent.choose import VoteWeights, resolve_weights, vote_traces
from mathagent.agent.grading.voting import MAJORITY, Sample, Weights
from mathagent.evals.cli_calibrate import main as calibrate_main


def test_state_counts_treat_unverified_as_uncertain():
    c = state_counts([("T", True), ("T", False), (None, True), ("U", False), ("F", False)])
    assert c == {"T": [2, 1], "U": [2, 1], "F": [1, 0]}


@pytest.mark.parametrize(
    "counts,expected",
    [
        # equal precision in every state: plain majority
        ({"T": [40, 20], "U": [40, 20], "F": [40, 20]}, (1.0, 1.0, 1.0)),
        # no data at all: equal
        ({"T": [0, 0], "U": [0, 0], "F": [0, 0]}, (1.0, 1.0, 1.0)),
    ],
)
def test_uninformative_counts_give_majority(counts, expected):
    w = derive_weights(counts)
    assert (w.true, w.uncertain, w.false) == expected


def test_informative_counts_sharpen_and_small_counts_stay_near_equal():
    big = derive_weights({"T": [200, 180], "U": [100, 50], "F": [100, 10]})
    assert big.true == 1.0 and big.true > big.uncertain > big.false and big.false < 0.15
    small = derive_weights({"T": [2, 2], "U": [2, 1], "F": [2, 0]})
    assert small.true == 1.0 and small.false > 0.4  # two samples per state barely move the weights
    p = shrunk_precisions({"T": [0, 0], "U": [10, 5], "F": [10, 5]})
    assert p["T"] == pytest.approx(0.5)  # an empty state takes the pooled precision


def _recs(pid, samples):
    return [
        {"problem_id": pid, "sample_index": i, "answer": a, "verification_state": s, "correct": a == "1"}
        for i, (a, s) in enumerate(samples)
    ]


def _ids(fold, n):
    out, i = [], 0
    while len(out) < n:
        if zlib.crc32(f"p{i}".encode()) % 2 == fold:
            out.append(f"p{i}")
        i += 1
    return out


def test_heldout_rule_falls_back_to_majority_when_the_states_mislead():
    # Fold 0: True answers right, False wrong; fold 1 the reverse. Weights fitted on one fold pick the
    # wrong answer on the other, where plain majority is right: the calibration must save majority.
    recs = []
    for pid in _ids(0, 20):
        recs += _recs(pid, [("1", "T"), ("1", "T"), ("2", "F")])
    for pid in _ids(1, 20):
        recs += _recs(pid, [("1", "F"), ("1", "F"), ("2", "T")])
    cal = calibrate_records(recs, model="m", prompt_hash="h", dataset="gsm8k")
    assert cal.fallback and cal.heldout["loses"] and cal.vote_weights() == MAJORITY
    assert cal.heldout["majority"] == 1.0 and cal.heldout["calibrated"] == 0.0


def test_heldout_rule_keeps_weights_that_beat_majority():
    recs = []
    for i in range(40):  # True right and alone, two False samples agree on a wrong answer
        recs += _recs(f"p{i}", [("1", "T"), ("2", "F"), ("2", "F")])
    cal = calibrate_records(recs, model="m", prompt_hash="h", dataset="gsm8k")
    w = cal.vote_weights()
    assert not cal.fallback and w.true == 1.0 and 2 * w.false < w.true
    assert cal.heldout["calibrated"] == 1.0 and cal.heldout["majority"] == 0.0


def test_calibration_needs_verification_states():
    with pytest.raises(ValueError, match="verification on"):
        calibrate_records(_recs("p", [("1", None)]), model="m", prompt_hash="h")


def test_saved_calibration_is_found_by_the_voting_path(tmp_path, monkeypatch):
    from mathagent.agent.calibrate import config_prompt_hash
    from mathagent.agent.config import AgentConfig

    monkeypatch.setenv("MATHAGENT_CACHE_DIR", str(tmp_path))
    cfg = AgentConfig(format="markdown")
    cal = Calibration(
        "tiny", config_prompt_hash(cfg), {"true": 1.0, "uncertain": 0.5, "false": 0.0}, {}, {}, {}
    )
    path = cal.save()
    assert path.parent == tmp_path / "calibration" and lookup("tiny", cal.prompt_hash) == cal
    assert [c.model for c in list_calibrations()] == ["tiny"]
    vw = resolve_weights(model="tiny", config=cfg)
    assert (vw.source, str(vw.weights), vw.calibration) == ("calibrated", "1,0.5,0", str(path))
    # Another verify prompt is another identity; explicit weights and majority always win.
    assert resolve_weights(model="tiny", config=cfg.with_(verify_prompt="verify_resolve")).source == "default"
    assert resolve_weights("1,1,0", model="tiny", config=cfg).source == "flag"
    assert resolve_weights(model="tiny", config=cfg, method="majority").weights == MAJORITY


def test_vote_traces_clusters_equivalent_answers_and_prunes_with_reasons():
    samples = [
        Sample("1/2", None, ran_code=True),
        Sample("0.5", None, ran_code=True),
        Sample("3", None, ran_code=False),
        Sample("3", None, ran_code=False),
        Sample("3", None, ran_code=False),
    ]
    plain = vote_traces(samples, VoteWeights(Weights(), "default"))
    assert plain.winner == "3"
    pruned = vote_traces(samples, VoteWeights(Weights(), "default"), prune=True)
    assert pruned.winner == "1/2" and pruned.clusters[0].count == 2 and pruned.pruned == {"no_code": 3}
    # the REPL's live table votes over (answer, state) pairs
    live = vote_traces([("1/2", "T"), ("0.5", None), ("3", "F")], VoteWeights(Weights(), "default"))
    assert live.winner == "1/2" and live.clusters[0].score == pytest.approx(1.3)


def test_calibrate_refuses_test_sets(tmp_path, capsys):
    from mathagent.evals.datasets import shipped_path

    assert calibrate_main(["--dataset", "gsm8k"]) == 2
    assert "test set" in capsys.readouterr().err
    copy = tmp_path / "mydata.jsonl"
    shutil.copy(shipped_path("math500"), copy)
    assert calibrate_main(["--dataset", str(copy)]) == 2
    assert "math500 test set" in capsys.readouterr().err
    assert calibrate_main(["--dataset", str(tmp_path / "nope.jsonl")]) == 2
    assert "neither" in capsys.readouterr().err
    assert calibrate_main(["--dataset", "gsm8k-train", "--k", "1"]) == 2
    assert "at least 2" in capsys.readouterr().err


@pytest.mark.kernel
def test_calibrate_cli_on_a_scripted_train_run_then_model_list(tmp_path, monkeypatch, capsys):
    """Real kernel runs the scripted solutions and verification code; weights land in the cache."""
    monkeypatch.setenv("MATHAGENT_CACHE_DIR", str(tmp_path / "cache"))
    train = tmp_path / "train.jsonl"
    rows, script = [], []
    for i in range(8):
        rows.append({"question": f"What is {i} + 1?", "answer": f"step\n#### {i + 1}"})
        right = i % 2 == 0  # even problems: right answer, verified True; odd: wrong, refuted
        ans = i + 1 if right else i + 5
        verdict = "True" if right else "False"
        script.append(
            {
                "problem_id": str(i),
                "turns": [
                    f"```python\nprint({ans})\n```\n",
                    f"So \\boxed{{{ans}}}.",
                    f"```python\nprint({verdict})\n```\n",
                    f"VERDICT: {verdict.upper()}",
                    f"Still \\boxed{{{ans}}}.",
                    f"```python\nprint({verdict})\n```\n",
                    f"VERDICT: {verdict.upper()}",
                ],
            }
        )
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in script))
    argv = ["--dataset", str(train), "--backend", "scripted", "--script", str(tmp_path / "s.jsonl")]
    argv += ["--k", "2", "--limit", "8", "--run-dir", str(tmp_path / "run"), "--json"]
    assert calibrate_main(argv) == 0, capsys.readouterr().err
    out = json.loads(capsys.readouterr().out)
    assert out["counts"]["T"] == [8, 8] and out["counts"]["F"] == [8, 0]
    assert out["weights"]["true"] == 1.0 and out["weights"]["false"] < out["weights"]["uncertain"] < 1.0
    assert out["model"] == "scripted" and out["source"]["problems"] == 8
    # Fitting again from the folder gives the same weights without sampling.
    assert calibrate_main(["--from-run", str(tmp_path / "run"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["weights"] == out["weights"]
    from mathagent.agent.cli_model import main as model_main

    assert model_main(["list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert all(r["calibrations"] == [] for r in listed)  # "scripted" is not a bundled model
    from mathagent.agent.calibrate import list_calibrations as cals

    assert [c.model for c in cals()] == ["scripted"]


@pytest.mark.kernel
def test_calibrate_takes_gsm8k_train_by_name(shared_data, tmp_path, monkeypatch, capsys):
    """`calibrate --dataset gsm8k-train` loads the split by name (graded as GSM8K) and fits on it."""
    from mathagent.evals.datasets import load_problems

    monkeypatch.setenv("MATHAGENT_DATA_DIR", str(shared_data / "datasets"))
    monkeypatch.setenv("MATHAGENT_CACHE_DIR", str(tmp_path / "cache"))
    problems = load_problems("gsm8k-train", limit=4, seed=0, shuffle=True)  # what calibrate samples
    script = []
    for i, p in enumerate(problems):
        ans = p.gold if i % 2 == 0 else str(int(p.gold) + 3)
        verdict = "True" if i % 2 == 0 else "False"
        turns = [f"```python\nprint({ans})\n```\n", f"So \\boxed{{{ans}}}."]
        turns += [f"```python\nprint({verdict})\n```\n", f"VERDICT: {verdict.upper()}"] * 2
        turns.insert(4, f"Still \\boxed{{{ans}}}.")
        script.append({"problem_id": p.id, "turns": turns})
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(r) + "\n" for r in script))
    argv = ["--dataset", "gsm8k-train", "--backend", "scripted", "--script", str(tmp_path / "s.jsonl")]
    argv += ["--k", "2", "--limit", "4", "--run-dir", str(tmp_path / "run"), "--json"]
    assert calibrate_main(argv) == 0, capsys.readouterr().err
    out = json.loads(capsys.readouterr().out)
    assert out["source"]["problems"] == 4 and out["counts"]["T"] == [4, 4]
    header = json.loads((tmp_path / "run" / "header.json").read_text())
    assert header["identity"]["dataset"]["name"] == "gsm8k-train"
    assert header["identity"]["grading_dataset"] == "gsm8k-train"
