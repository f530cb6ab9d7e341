"""A small real run on the bundled model: 2 GSM8K problems, k = 4, verification states recorded."""

from __future__ import annotations

import json

import pytest
from mathagent.evals.cli_eval import main as eval_main

# The 0.5B model writes 250-2,500 tokens per sample with verification and revisions (78-379 s each
# on 2 cores): 8 samples need far more than the default 900 s test timeout.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.model,
    pytest.mark.server,
    pytest.mark.kernel,
    pytest.mark.timeout(3600),
]


def _argv(run_dir, *, k: int, rounds: int, extra: tuple[str, ...] = ()) -> list[str]:
    """2 GSM8K problems on the real 0.5B at T = 0.7, seed 1."""
    return [
        "--dataset", "gsm8k", "--limit", "2", "--k", str(k), "--max-rounds", str(rounds), "--temperature", "0.7",
        "--seed", "1", "--model", "qwen2.5-coder-0.5b", "--run-dir", str(run_dir), *extra, "--json",
    ]  # fmt: skip


def test_k4_run_with_verification_on_the_bundled_model(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert eval_main(_argv(run_dir, k=4, rounds=4, extra=("--concurrency", "2", "--verify"))) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_samples"] == 8
    records = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 8
    finished = [r for r in records if r.get("status") != "failed"]
    assert finished, records
    # every sample that reached an answer went through the verification phase and carries its state
    answered = [r for r in finished if r.get("answer") is not None]
    assert answered and all(r["verification_state"] in ("T", "U", "F") for r in answered), answered
    ver = summary["verification"]
    assert sum(ver["counts"].values()) == len(finished)
    by_k = {row["k"]: row for row in summary["overall"]["by_k"]}
    assert set(by_k) >= {1, 4}
    full = by_k[4]  # k = n: one vote over all samples, so a right vote needs a right sample
    assert full["majority"] <= full["pass_at_k"] and full["weighted"] <= full["pass_at_k"]
    (tmp_path / "summary_copy.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({"by_k": summary["overall"]["by_k"], "verification": ver}, indent=2))


def test_contested_run_on_the_bundled_model(tmp_path, capsys):
    """``--verify-contested`` on the real 0.5B: per problem, the samples skipped verification exactly
    when their answers agreed (the grader's clustering), whatever the model wrote this time."""
    from mathagent.agent.grading.voting import grader_cluster_fn

    run_dir = tmp_path / "run"
    assert eval_main(_argv(run_dir, k=2, rounds=3, extra=("--verify", "--verify-contested"))) == 0
    assert json.loads(capsys.readouterr().out)["n_samples"] == 4
    records = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    by_problem: dict[str, list[dict]] = {}
    for r in records:
        by_problem.setdefault(r["problem_id"], []).append(r)
    for recs in by_problem.values():
        pre = [
            (r["trace"]["verification"][0]["answer"] if r["trace"]["verification"] else r["answer"])
            for r in recs
            if r["status"] == "ok"
        ]
        answered = [a for a in pre if a is not None]
        agree = len(set(grader_cluster_fn("gsm8k")(answered))) <= 1
        for r in recs:
            if r["status"] != "ok" or (r["answer"] is None and not r["trace"]["verification"]):
                continue
            assert bool(r["trace"]["meta"].get("verification_skipped")) is agree, (
                answered,
                r["trace"]["meta"],
            )
            assert (r["verification_state"] is None) is agree
