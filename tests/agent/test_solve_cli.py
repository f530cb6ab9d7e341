"""``mathagent solve`` in a subprocess: scripted turns (hidden --script), and the real bundled model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.kernel


def solve_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "mathagent.agent.cli", "solve", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_solve_json_with_scripted_turns(tmp_path):
    script = tmp_path / "turns.json"
    script.write_text(json.dumps(["Multiply.\n```python\nprint(6 * 7)\n```\n", "It is $\\boxed{42}$."]))
    out = solve_cli("What is 6 times 7?", "--script", str(script), "--no-verify", "--json", "--seed", "3")
    assert out.returncode == 0, out.stderr
    trace = json.loads(out.stdout.strip().splitlines()[-1])
    assert trace["final_answer"] == "42" and trace["stop_reason"] == "answered" and trace["seed"] == 3
    assert [s["kind"] for s in trace["steps"]] == ["text", "code", "execution", "text"]
    assert trace["steps"][2]["content"] == "42"


def test_solve_rich_output_and_k(tmp_path):
    script = tmp_path / "turns.json"
    script.write_text(json.dumps(["```python\nprint(2 ** 5)\n```\n", "\\boxed{32}", "\\boxed{32}"]))
    out = solve_cli("2^5?", "--script", str(script), "--no-verify", "--k", "2")
    assert out.returncode == 0, out.stderr
    assert (
        "answer: 32" in out.stdout
        and "majority vote: 32 (2/2 voted)" in out.stdout
        and "so each counts 1" in out.stdout  # no sample was verified: the weights had nothing to weigh
        and "print(2 ** 5)" in out.stdout
    )


def test_solve_rejects_empty_problem():
    out = solve_cli("   ")
    assert out.returncode == 2 and "empty" in out.stderr


@pytest.mark.slow
@pytest.mark.model
@pytest.mark.server
def test_solve_with_the_bundled_model():
    """The README command shape on the real 0.5B model served by llama.cpp, with the default flags: at
    k = 1 the measured default leaves verification off, and says so."""
    pytest.importorskip("llama_cpp.server")
    problem = "A shop sells pencils at 3 dollars each. How much do 17 pencils cost? Use Python to compute it."
    out = solve_cli(problem, "--model", "qwen2.5-coder-0.5b", "--json", "--seed", "0", timeout=600)
    assert out.returncode in (0, 1), out.stderr[-2000:]
    assert "verification off by default for qwen2.5-coder-0.5b at k = 1" in out.stderr
    trace = json.loads(out.stdout.strip().splitlines()[-1])
    assert trace["verification"] == [] and trace["meta"]["config"]["verify"] is False
    execs = [s for s in trace["steps"] if s["kind"] == "execution"]
    assert execs, trace
    assert any(s["execution"]["error"] is None for s in execs), execs
    assert trace["final_answer"] is not None, trace
    assert trace["model"] and trace["backend"] == "openai"


@pytest.mark.slow
@pytest.mark.model
@pytest.mark.server
def test_solve_k_on_the_bundled_model_votes_unverified_by_default():
    """``--k 2`` on the real 0.5B with the default flags: the measured default at k > 1 leaves
    verification off, says so, and the samples take a majority vote."""
    from mathagent.agent import models
    from mathagent.agent.modes import default_verify

    pytest.importorskip("llama_cpp.server")
    if default_verify(models.REGISTRY["qwen2.5-coder-0.5b"], 2)[0]:
        pytest.skip("this cache holds a calibration for the 0.5B that weighs the states: verification is on")
    problem = "A shop sells pencils at 3 dollars each. How much do 17 pencils cost? Use Python to compute it."
    out = solve_cli(
        problem, "--model", "qwen2.5-coder-0.5b", "--k", "2", "--json", "--seed", "0", timeout=900
    )
    assert out.returncode in (0, 1), out.stderr[-2000:]
    assert "verification off by default for qwen2.5-coder-0.5b at k > 1" in out.stderr
    traces = [json.loads(line) for line in out.stdout.strip().splitlines()]
    assert len(traces) == 2
    assert all(t["verification"] == [] and t["meta"]["config"]["verify"] is False for t in traces)


@pytest.mark.slow
@pytest.mark.model
@pytest.mark.server
def test_solve_k_verifies_only_when_the_real_samples_disagree():
    """``--k 2 --verify`` on the real 0.5B: the samples verify exactly when their answers fall in two
    clusters of the grader (whatever the model writes this time)."""
    from mathagent.agent.grading.voting import grader_cluster_fn

    pytest.importorskip("llama_cpp.server")
    problem = "Tom has 3 boxes with 14 apples each. He eats 5 apples. How many apples are left?"
    out = solve_cli(
        problem, "--model", "qwen2.5-coder-0.5b", "--k", "2", "--verify", "--json", "--seed", "0", timeout=900
    )
    assert out.returncode in (0, 1), out.stderr[-2000:]
    traces = [json.loads(line) for line in out.stdout.strip().splitlines()]
    assert len(traces) == 2
    answered = [t["final_answer"] for t in traces if t["final_answer"] is not None]
    pre = [t["verification"][0]["answer"] if t["verification"] else t["final_answer"] for t in traces]
    agree = len(set(grader_cluster_fn("math")([a for a in pre if a is not None]))) <= 1
    for t in traces:
        if t["final_answer"] is None and not t["verification"]:
            continue  # ended without an answer: nothing to verify
        assert bool(t["meta"].get("verification_skipped")) is agree, (agree, answered, t["meta"])
        assert bool(t["verification"]) is not agree
