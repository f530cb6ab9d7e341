"""Contested-only verification (``solve_k(..., verify_contested=True)``, the default of ``solve --k`` and
the REPL): k samples verify only when their answers disagree; on the real loop and kernel with a
scripted model that answers per sample (by its seed) and checks with code when asked."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest
from mathagent.agent.backends.scripted import ScriptedBackend, prompt_text
from mathagent.agent.config import AgentConfig
from mathagent.agent.loop import solve_k
from mathagent.agent.trace import StopReason

pytestmark = pytest.mark.kernel


def model(answers: dict[int, str | None]):
    """A scripted model: sample ``i`` (seed ``i``) computes ``answers[i]`` (None: says it cannot), and
    when asked to verify prints True and states TRUE. Returns the turn and the (sample, phase) calls."""
    calls: list[tuple[int, str]] = []

    def turn(prompt, params) -> str:
        i = int(params.seed)
        phase = "verify" if "VERDICT: TRUE" in prompt_text(prompt) else "solve"
        first = (i, phase) not in calls
        calls.append((i, phase))
        if phase == "verify":
            return "Substitute back.\n```python\nprint(True)\n```" if first else "VERDICT: TRUE"
        if answers[i] is None:
            return "I cannot solve this."
        return (
            f"Compute.\n```python\nprint({answers[i]})\n```"
            if first
            else f"So it is \\boxed{{{answers[i]}}}."
        )

    return turn, calls


def run(answers: dict[int, str | None], *, at_once: int, contested: bool = True):
    from mathagent.sandbox import KernelPool, SandboxConfig

    turn, calls = model(answers)
    backend = ScriptedBackend([turn] * 100)
    cfg = AgentConfig(format="markdown", verify=True, seed=0, max_revisions=0)
    with KernelPool(size=2, config=SandboxConfig.from_env()) as pool:
        traces = asyncio.run(
            solve_k(
                "What is 2 + 2?",
                backend,
                pool,
                cfg,
                k=len(answers),
                at_once=at_once,
                verify_contested=contested,
            )
        )
    return traces, calls


@pytest.mark.parametrize("at_once", [1, 3])
def test_agreeing_samples_skip_verification(at_once):
    traces, calls = run({0: "4", 1: "4", 2: "4.0"}, at_once=at_once)
    assert [t.final_answer for t in traces] == ["4", "4", "4.0"]
    assert all(t.verification == () and t.verification_state is None for t in traces)
    assert all(t.meta["verification_skipped"] for t in traces)
    assert {phase for _, phase in calls} == {"solve"}
    if at_once == 1:  # one at a time: each sample solves in turn; nobody waits for a held turn
        assert [i for i, _ in calls] == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("at_once", [1, 3])
def test_disagreeing_samples_all_verify(at_once):
    traces, calls = run({0: "4", 1: "5", 2: "4"}, at_once=at_once)
    assert [t.final_answer for t in traces] == ["4", "5", "4"]
    assert all(t.verification_state is not None and "verification_skipped" not in t.meta for t in traces)
    solves = [n for n, (_, phase) in enumerate(calls) if phase == "solve"]
    verifies = [n for n, (_, phase) in enumerate(calls) if phase == "verify"]
    assert len(verifies) == 6 and max(solves) < min(verifies)  # decided only once every sample answered


def test_a_sample_without_an_answer_does_not_contest():
    traces, calls = run({0: "4", 1: None, 2: "4"}, at_once=1)
    assert [t.final_answer for t in traces] == ["4", None, "4"]
    assert traces[1].stop_reason is not StopReason.ANSWERED
    assert all(t.verification == () for t in traces) and {p for _, p in calls} == {"solve"}


def test_without_contest_every_sample_verifies():
    traces, calls = run({0: "4", 1: "4"}, at_once=1, contested=False)
    assert all(t.verification_state is not None for t in traces)
    assert [p for _, p in calls].count("verify") == 4


def _solve_cli(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "mathagent.agent.cli", "solve", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


def test_solve_cli_skips_and_verify_all_verifies(tmp_path):
    """``solve --k 2 --verify`` with two agreeing samples: no verification, and the vote panel says
    why; ``--verify-all`` verifies both. The two samples run at once on the scripted backend and take
    its turns in whatever order they ask, so every turn works in either phase."""
    turns = ["Check.\n```python\nprint(2 + 2 == 4)\n```", "So \\boxed{4}.\nVERDICT: TRUE"] * 6
    script = tmp_path / "turns.json"
    script.write_text(json.dumps(turns))
    out = _solve_cli("What is 2 + 2?", "--script", str(script), "--k", "2", "--verify")
    assert out.returncode == 0, out.stderr
    assert "not verified: the samples agreed" in out.stdout and "majority vote: 4 (2/2 voted)" in out.stdout
    out = _solve_cli(
        "What is 2 + 2?", "--script", str(script), "--k", "2", "--verify", "--verify-all", "--json"
    )
    assert out.returncode == 0, out.stderr
    traces = [json.loads(line) for line in out.stdout.strip().splitlines()]
    assert [t["final_answer"] for t in traces] == ["4", "4"]
    assert all(t["verification"] and "verification_skipped" not in t["meta"] for t in traces)
