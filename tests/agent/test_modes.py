"""Ablation modes (cot, pot, loop, loop+verify): scripted turns, a real kernel for pot, old run folders."""

from __future__ import annotations

import asyncio
import json

import pytest
from mathagent.agent.backends.scripted import ScriptedBackend
from mathagent.agent.config import AgentConfig
from mathagent.agent.loop import solve
from mathagent.agent.modes import MODES, ModeError, config_mode, run_mode, split_mode
from mathagent.agent.prompts import load_prompt
from mathagent.agent.trace import StepKind, StopReason

# The agent config recorded in /work/study-runs/gsm8k-qwen2.5-coder-1.5b-loopverify-k4/header.json,
# written by the code before modes existed: it must stay the identity of a default run.
OLD_AGENT_DICT = {
    "format": "markdown",
    "max_rounds": 6,
    "max_tokens": 1024,
    "context_budget": None,
    "min_call_tokens": 64,
    "temperature": 0.7,
    "top_p": 1.0,
    "seed": 1,
    "cell_timeout": 10.0,
    "view_chars": 2000,
    "system_prompt": None,
    "max_text_blocks": 4,
    "verify": True,
    "max_revisions": 1,
}


class NoSandbox:
    level = None

    def acquire(self):
        raise AssertionError("this mode must not run code")

    def close(self):
        pass


@pytest.mark.parametrize(
    "flag,verify,expected",
    [
        (None, True, ("loop", True)),
        (None, False, ("loop", False)),
        ("loop+verify", False, ("loop", True)),
        ("loop", True, ("loop", False)),
        ("cot", True, ("cot", False)),
        ("pot", True, ("pot", False)),
    ],
)
def test_split_mode_table(flag, verify, expected):
    assert split_mode(flag, verify) == expected
    assert config_mode(AgentConfig(mode=expected[0], verify=expected[1])) in MODES


def test_unknown_mode_is_a_clear_error():
    with pytest.raises(ModeError, match="choose one of cot, pot, loop, loop\\+verify"):
        split_mode("tot", True)
    t = asyncio.run(solve("1+1?", ScriptedBackend(["\\boxed{2}"]), NoSandbox(), AgentConfig(mode="tot")))
    assert t.stop_reason is StopReason.ERROR and "unknown mode" in t.error


def test_default_config_keeps_the_identity_of_runs_recorded_before_modes():
    cfg = AgentConfig(format="markdown", temperature=0.7, seed=1)
    assert cfg.to_dict() == OLD_AGENT_DICT
    assert AgentConfig.from_dict(OLD_AGENT_DICT) == cfg
    assert AgentConfig(mode="loop+verify", verify=False) == AgentConfig(verify=True)
    assert AgentConfig(mode="cot").to_dict()["mode"] == "cot"


def test_run_mode_reads_old_and_new_headers():
    def header(agent, **top):
        return {"identity": {"config": {"verify": agent["verify"], "extra": {"agent": agent}}}, **top}

    assert run_mode(header(OLD_AGENT_DICT)) == "loop+verify"
    assert run_mode(header({**OLD_AGENT_DICT, "verify": False})) == "loop"
    assert run_mode(header({**OLD_AGENT_DICT, "verify": False, "mode": "pot"})) == "pot"
    assert run_mode(header(OLD_AGENT_DICT, mode="cot")) == "cot"
    assert run_mode({"identity": {"config": {"verify": False}}}) == "loop"


def test_cot_runs_no_code_and_keeps_going_past_a_code_block():
    text = "Let me think.\n```python\nprint(3 * 4)\n```\n3 times 4 is 12, so \\boxed{12}."
    b = ScriptedBackend([text])
    t = asyncio.run(solve("3*4?", b, NoSandbox(), AgentConfig(mode="cot", verify=True)))
    assert (t.stop_reason, t.final_answer) == (StopReason.ANSWERED, "12")
    assert [s.kind for s in t.steps] == [StepKind.TEXT] and not t.verification
    assert len(b.calls) == 1 and b.calls[0].params.stop == ()
    assert t.prompt_hash == load_prompt("cot").sha256 and t.meta["config"]["mode"] == "cot"


def test_cot_without_answer():
    t = asyncio.run(solve("?", ScriptedBackend(["no idea"]), NoSandbox(), AgentConfig(mode="cot")))
    assert t.stop_reason is StopReason.NO_ANSWER and t.final_answer is None


def test_pot_without_program_and_with_tools_format():
    t = asyncio.run(solve("?", ScriptedBackend(["It is 5."]), NoSandbox(), AgentConfig(mode="pot")))
    assert t.stop_reason is StopReason.NO_ANSWER and "no program" in t.error
    t = asyncio.run(solve("?", ScriptedBackend(["x"]), NoSandbox(), AgentConfig(mode="pot", format="tools")))
    assert t.stop_reason is StopReason.ERROR and "pot needs a text format" in t.error


@pytest.mark.kernel
def test_pot_runs_one_program_on_a_real_kernel_and_takes_its_last_line():
    from mathagent.sandbox import KernelPool

    program = "Here is the program.\n```python\nfrom sympy import Rational\nprint('steps')\nprint(Rational(3, 4) * 8)\n```\n"
    b = ScriptedBackend([program, "\\boxed{999}"])
    with KernelPool(size=1) as pool:
        t = asyncio.run(solve("3/4 of 8?", b, pool, AgentConfig(mode="pot", verify=True, cell_timeout=10)))
        bad = asyncio.run(
            solve("?", ScriptedBackend(["```python\nprint(1/0)\n```"]), pool, AgentConfig(mode="pot"))
        )
    assert (t.stop_reason, t.final_answer) == (StopReason.ANSWERED, "6")
    assert len(b.calls) == 1 and not t.verification  # no feedback round, no verification
    assert [s.kind for s in t.steps] == [StepKind.TEXT, StepKind.CODE, StepKind.EXECUTION]
    assert t.prompt_hash == load_prompt("pot").sha256 and t.meta["rounds"] == 1
    assert bad.stop_reason is StopReason.NO_ANSWER and "failed" in bad.error


@pytest.mark.kernel
def test_eval_records_the_mode_and_resumes_a_run_recorded_before_modes(tmp_path, capsys):
    from mathagent.evals.cli_eval import main as eval_main
    from mathagent.evals.datasets import load_problems

    problems = load_problems("gsm8k", limit=2)
    script = tmp_path / "s.jsonl"
    script.write_text(
        "".join(
            json.dumps({"problem_id": p.id, "turns": [f"So \\boxed{{{p.gold}}}."]}) + "\n" for p in problems
        )
    )
    base = ["--dataset", "gsm8k", "--limit", "2", "--backend", "scripted", "--script", str(script), "--json"]
    cot = tmp_path / "cot"
    assert eval_main([*base, "--mode", "cot", "--run-dir", str(cot)]) == 0
    header = json.loads((cot / "header.json").read_text())
    assert header["mode"] == "cot" and run_mode(header) == "cot"
    out = json.loads(capsys.readouterr().out)
    assert out["overall"]["accuracy"] == 1.0 and out["mode"] == "cot"
    # A folder whose header predates modes (no "mode" anywhere) resumes under the default mode.
    old = tmp_path / "old"
    assert eval_main([*base, "--run-dir", str(old), "--no-verify"]) == 0
    h = json.loads((old / "header.json").read_text())
    h.pop("mode")
    assert "mode" not in h["identity"]["config"]["extra"]["agent"]
    (old / "header.json").write_text(json.dumps(h))
    capsys.readouterr()
    assert eval_main([*base, "--run-dir", str(old), "--mode", "loop"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["skipped"] == 2
    assert run_mode(json.loads((old / "header.json").read_text())) == "loop"
    # Another mode on the same folder is another configuration.
    assert eval_main([*base, "--run-dir", str(old), "--mode", "pot"]) == 2
    assert "different configuration" in capsys.readouterr().err
