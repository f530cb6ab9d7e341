"""Verification's default follows the method study: off on a bundled model measured not to gain from it
(at k = 1; at k > 1 unless a calibration with weights other than majority's is saved for it), on
otherwise; an explicit ``--verify``/``--no-verify`` or ``--mode`` always wins."""

from __future__ import annotations

import json

import pytest
from mathagent.agent import cli_solve, models
from mathagent.agent.modes import args_mode, default_verify, measured_model
from mathagent.agent.repl import app
from mathagent.agent.repl.commands import run_command
from mathagent.evals.cli_eval import main as eval_main
from mathagent.evals.cli_eval import recorded_mode


@pytest.fixture(autouse=True)
def _no_server_env(monkeypatch, tmp_path):
    for var in ("OPENAI_BASE_URL", "MATHAGENT_SCRIPT", "MATHAGENT_MODEL", "MATHAGENT_BACKEND"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MATHAGENT_CACHE_DIR", str(tmp_path / "cache"))  # no calibration but the test's own


def test_the_bundled_models_carry_their_measurement():
    for name in ("qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"):
        m = models.REGISTRY[name]
        assert m.verify_at_k1 is False and "docs/results.md" in m.evidence and "GSM8K" in m.evidence
        assert m.verify_at_k is False and "docs/results.md" in m.evidence_k and "k = 4" in m.evidence_k
    small = models.REGISTRY["smollm2-135m"]
    assert small.verify_at_k1 is True and small.verify_at_k is True  # not measured: the method's default


def test_which_model_a_run_uses(monkeypatch):
    assert measured_model(None) is models.REGISTRY[models.DEFAULT_MODEL]
    assert measured_model("qwen2.5-coder-0.5b") is models.REGISTRY["qwen2.5-coder-0.5b"]
    assert measured_model("some-model-a-server-knows") is None
    assert measured_model(None, base_url="http://127.0.0.1:9/v1") is None
    assert measured_model(None, script="turns.json") is None
    assert measured_model("qwen2.5-coder-0.5b", backend="scripted") is None
    assert measured_model(None, backend="transformers") is None
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert measured_model(None) is None  # the server's model, not the bundled default
    assert measured_model("qwen2.5-coder-1.5b") is models.REGISTRY["qwen2.5-coder-1.5b"]


def _save_calibration(model: str, weights: str, *, fallback: bool = False, verify_prompt: str | None = None):
    from mathagent.agent import calibrate
    from mathagent.agent.grading.voting import Weights

    cal = calibrate.Calibration(
        model=model,
        prompt_hash=calibrate.prompt_hash("markdown", verify_prompt),
        weights=Weights.parse(weights).to_dict(),
        counts={},
        precision={},
        heldout={},
        fallback=fallback,
    )
    return cal.save()


def test_default_verify_by_model_and_k():
    m = models.REGISTRY["qwen2.5-coder-1.5b"]
    on, why = default_verify(m, 1)
    assert on is False and why.startswith("verification off by default for qwen2.5-coder-1.5b at k = 1 (")
    on, why = default_verify(m, 4)
    assert on is False and why.startswith("verification off by default for qwen2.5-coder-1.5b at k > 1, ")
    assert "majority vote" in why and m.evidence_k in why
    _save_calibration(m.name, "1,0.4,0.1")
    assert default_verify(m, 4) == (True, None)  # the vote weighs samples by their states
    assert default_verify(m, 1)[0] is False  # one sample: no vote to weigh
    assert default_verify(None, 1) == (True, None) and default_verify(None, 4) == (True, None)
    assert default_verify(models.REGISTRY["smollm2-135m"], 1) == (True, None)
    assert default_verify(models.REGISTRY["smollm2-135m"], 4) == (True, None)


def test_a_saved_calibration_turns_verification_back_on_at_k_above_1():
    """At k > 1 the states matter only when weights tell them apart: a calibration saved for the model
    and its prompts with weights other than majority's turns verification on; a majority fallback, one
    for another verify prompt or another model does not; at k = 1 it changes nothing."""

    def resolved(*argv: str) -> tuple[bool, str | None]:
        return args_mode(cli_solve.build_parser().parse_args(["2+2?", *argv]))[1:]

    assert resolved("--k", "4")[0] is False
    _save_calibration("qwen2.5-coder-1.5b", "1,1,1", fallback=True)
    _save_calibration("qwen2.5-coder-1.5b", "1,0.2,0.1", verify_prompt="verify_substitute")
    _save_calibration("qwen2.5-coder-0.5b", "1,0.2,0.1")
    assert resolved("--k", "4")[0] is False
    assert resolved("--k", "4", "--verify-prompt", "verify_substitute") == (True, None)
    assert resolved("--k", "4", "--model", "qwen2.5-coder-0.5b") == (True, None)
    assert resolved("--model", "qwen2.5-coder-0.5b")[0] is False  # k = 1
    _save_calibration("qwen2.5-coder-1.5b", "1,0.6,0.3")  # replaces the fallback
    assert resolved("--k", "4") == (True, None)
    repl = app.settings_from_args(cli_solve.build_parser().parse_args(["--k", "4"]))
    assert repl.verify_shown() == "auto: on"


def test_one_lookup_answers_whether_a_calibration_weighs_the_states():
    """``calibrate.find`` is the lookup both the vote and the verification default use: by model and
    prompt names; a prompt that does not exist has no calibration. ``weighs_states`` is false for a
    majority fallback and for equal weights. ``default_verify`` looks it up."""
    from mathagent.agent import calibrate
    from mathagent.agent.choose import resolve_weights
    from mathagent.agent.config import AgentConfig

    m = models.REGISTRY["qwen2.5-coder-1.5b"]
    assert calibrate.find(m.name, None) is None and calibrate.find(m.name, "no-such-prompt") is None
    assert calibrate.find(None, None) is None
    _save_calibration(m.name, "1,1,1")  # equal weights, not a fallback
    assert calibrate.find(m.name, None).weighs_states is False
    assert calibrate.find(m.name, "markdown").prompt_hash == calibrate.find(m.name, None).prompt_hash
    assert default_verify(m, 4)[0] is False
    _save_calibration(m.name, "1,0.4,0.1", fallback=True)
    assert calibrate.find(m.name, None).weighs_states is False and default_verify(m, 4)[0] is False
    _save_calibration(m.name, "1,0.4,0.1")
    assert calibrate.find(m.name, None).weighs_states is True
    assert default_verify(m, 4) == (True, None)
    assert default_verify(m, 4, verify_prompt="verify_substitute")[0] is False  # other prompts: none saved
    vw = resolve_weights(model=m.name, config=AgentConfig())
    assert vw.source == "calibrated" and str(vw.weights) == str(calibrate.find(m.name, None).vote_weights())


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], ("loop", False, True)),
        (["--k", "3"], ("loop", False, True)),
        (["--k", "3", "--verify-all"], ("loop", True, False)),
        (["--k", "3", "--verify-all", "--no-verify"], ("loop", False, False)),
        (
            ["--k", "3", "--model", "served-model", "--base-url", "http://127.0.0.1:9/v1"],
            ("loop", True, False),
        ),
        (["--verify"], ("loop", True, False)),
        (["--no-verify", "--k", "3"], ("loop", False, False)),
        (["--mode", "loop+verify"], ("loop", True, False)),
        (["--mode", "cot", "--verify"], ("cot", False, False)),  # an explicit mode wins
        (["--model", "qwen2.5-coder-0.5b"], ("loop", False, True)),
        (["--model", "served-model", "--base-url", "http://127.0.0.1:9/v1"], ("loop", True, False)),
        (["--script", "turns.json"], ("loop", True, False)),
    ],
)
def test_solve_flags_resolve_the_mode(argv, expected):
    args = cli_solve.build_parser().parse_args(["2+2?", *argv])
    mode, verify, why = args_mode(args)
    assert (mode, verify, why is not None) == expected
    if why:
        assert why.endswith("; --verify turns it on")
    assert cli_solve.config_from_args(args).verify is expected[1]


def test_eval_flags_resolve_the_mode():
    from mathagent.evals.cli_eval import build_parser

    def resolved(*argv: str) -> tuple[str, bool, bool]:
        mode, verify, why = args_mode(build_parser().parse_args(["--dataset", "gsm8k", *argv]))
        return mode, verify, why is not None

    assert resolved("--k", "4") == ("loop", False, True)  # the bundled default model, measured
    assert resolved("--k", "4", "--verify-contested") == ("loop", True, False)  # asks to verify
    assert resolved("--k", "4", "--verify-contested", "--no-verify") == ("loop", False, False)
    assert resolved("--k", "1", "--verify-contested") == (
        "loop",
        False,
        True,
    )  # one sample: nothing contested
    assert resolved("--k", "4", "--model", "served", "--base-url", "http://127.0.0.1:9/v1") == (
        "loop",
        True,
        False,
    )


def test_repl_verify_is_auto_until_set():
    args = cli_solve.build_parser().parse_args([])
    s = app.settings_from_args(args)
    assert s.verify is None and s.verify_shown() == "auto: off" and s.agent_config().verify is False
    assert "qwen2.5-coder-1.5b" in s.verify_default()[1]
    s = run_command("/k 4", s).settings
    assert s.verify_shown() == "auto: off" and s.agent_config().verify is False
    assert "at k > 1" in s.verify_default()[1]
    assert run_command("/model smollm2-135m", s).settings.verify_shown() == "auto: on"  # not measured
    s = run_command("/k 1", s).settings
    r = run_command("/verify on", s)
    assert (
        r.settings.verify is True and r.message == "verify = on" and r.settings.agent_config().verify is True
    )
    r = run_command("/verify auto", r.settings)
    assert r.settings.verify is None and r.message.startswith(
        "verify = auto: off (verification off by default"
    )
    assert run_command("/verify off", r.settings.with_(k=4)).settings.agent_config().verify is False
    explicit = app.settings_from_args(cli_solve.build_parser().parse_args(["--verify"]))
    assert explicit.verify is True and explicit.verify_shown() == "on"
    every = app.settings_from_args(cli_solve.build_parser().parse_args(["--verify-all"]))
    assert every.verify is True
    cot = app.settings_from_args(cli_solve.build_parser().parse_args(["--mode", "cot"]))
    assert cot.verify is False


def _turn(answer: str) -> str:
    return f"Compute.\n```python\nprint({answer})\n```\n```output\n{answer}\n```\nSo $\\boxed{{{answer}}}$."


@pytest.mark.kernel
def test_eval_resumes_a_folder_in_its_own_mode(tmp_path, capsys):
    """A run folder started with verification off (as the measured default does) resumes in that mode
    when neither --mode nor --verify is given, even where today's default would verify (scripted turns
    are not a measured model): the folder's identity matches, nothing is refused, the lost sample is
    solved again."""
    from mathagent.evals.datasets import load_problems

    problems = load_problems("gsm8k", limit=2)
    script = tmp_path / "script.jsonl"
    script.write_text(
        "".join(json.dumps({"problem_id": p.id, "turns": [_turn(p.gold)]}) + "\n" for p in problems)
    )
    run_dir = tmp_path / "run"
    base = ["--dataset", "gsm8k", "--backend", "scripted", "--script", str(script), "--run-dir", str(run_dir)]
    base += ["--limit", "2", "--json"]
    assert eval_main([*base, "--no-verify"]) == 0
    assert recorded_mode(run_dir) == "loop" and recorded_mode(tmp_path / "nothing") is None
    samples = run_dir / "samples.jsonl"
    samples.write_text(samples.read_text().splitlines(keepends=True)[0])  # as if killed after one sample
    capsys.readouterr()
    assert eval_main(base) == 0
    recs = [json.loads(x) for x in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert [r["problem_id"] for r in recs] == [p.id for p in problems]  # one new sample, none redone
    assert all(r["verification_state"] is None and r["correct"] for r in recs)
    header = json.loads((run_dir / "header.json").read_text())
    assert header["mode"] == "loop" and header["identity"]["config"]["verify"] is False
