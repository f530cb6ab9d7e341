"""Code-based self-verification: state parsing (table), the phase driver, and the real loop + kernel."""

from __future__ import annotations

import asyncio

import pytest
from mathagent.agent.trace import StepKind, VerificationState
from mathagent.agent.verification import (
    PhasePrompt,
    TurnResult,
    is_verdict_word,
    load_phase_prompt,
    model_statement,
    parse_verification_state,
    verify_and_revise,
)
from mathagent.sandbox.base import ExecError, ExecResult

T, U, F = VerificationState.TRUE, VerificationState.UNCERTAIN, VerificationState.FALSE


def ok(stdout: str = "", result: str | None = None) -> ExecResult:
    return ExecResult(stdout=stdout, result=result)


def err(ename: str, evalue: str = "") -> ExecResult:
    return ExecResult(error=ExecError(ename, evalue, f"{ename}: {evalue}"))


TIMEOUT = ExecResult(timed_out=True)
RESTARTED = ExecResult(kernel_restarted=True)


@pytest.mark.parametrize(
    "executions, text, state, reason_has",
    [
        # the code's printed verdict decides
        ([ok("True\n")], "", T, "printed 'True'"),
        ([ok("False\n")], "", F, "'False'"),
        ([ok("check 1: True\ncheck 2: False\n")], "", F, "'False'"),  # any failed check refutes
        ([ok("VERIFIED\n")], "", T, "VERIFIED"),
        ([ok("MISMATCH: got 7, expected 5\n")], "", F, "MISMATCH"),
        ([ok("all checks passed\n")], "", T, "passed"),
        ([ok("", result="True")], "", T, "'True'"),  # displayed value of the last expression
        # code beats the model's statement, both ways
        ([ok("False\n")], "VERDICT: TRUE", F, "'False'"),
        ([ok("True\n")], "VERDICT: FALSE", T, "'True'"),
        # an assertion is a check: failing -> False
        ([err("AssertionError", "x != 5")], "VERDICT: TRUE", F, "assertion failed"),
        ([err("AssertionError")], "", F, "assertion failed in verification code"),
        # the last deciding execution wins (a buggy check fixed and re-run)
        ([ok("False\n"), err("NameError", "y"), ok("True\n")], "", T, "'True'"),
        ([ok("True\n"), err("AssertionError", "second check")], "", F, "assertion"),
        ([ok("True\n"), err("ZeroDivisionError", "division by zero")], "", T, "'True'"),
        # no printed verdict, but the code ran: the model's VERDICT line decides
        ([ok("")], "Both sides agree.\nVERDICT: TRUE", T, "model stated TRUE"),
        ([ok("5\n")], "**Verdict:** false", F, "model stated FALSE"),
        ([ok("5\n")], "VERDICT: UNCERTAIN", U, "model stated UNCERTAIN"),
        ([ok("5\n")], "VERDICT: FALSE\n...\nVERDICT: TRUE", T, "model stated TRUE"),  # last line counts
        ([ok("5\n")], "Looks good to me.", U, "stated none"),
        # crashes, timeouts, lost kernels and no code: Uncertain whatever the model says
        ([err("ZeroDivisionError", "division by zero")], "VERDICT: TRUE", U, "raised ZeroDivisionError"),
        ([TIMEOUT], "VERDICT: FALSE", U, "timed out"),
        ([RESTARTED], "", U, "lost its kernel"),
        ([], "VERDICT: TRUE", U, "no verification code ran"),
        ([], "VERDICT: FALSE", U, "no verification code ran"),
        # words inside other words do not count
        ([ok("incorrectly formatted? no\n")], "", U, "stated none"),
    ],
)
def test_parse_verification_state_table(executions, text, state, reason_has):
    got, reason = parse_verification_state(executions, text)
    assert got is state
    assert reason_has in reason


@pytest.mark.parametrize(
    "text, state",
    [
        ("VERDICT: TRUE", T),
        ("verdict - correct", T),
        ("Verdict: Incorrect.", F),
        ("VERDICT: UNCERTAIN (no way to check)", U),
        ("The answer is true.", None),
        ("", None),
    ],
)
def test_model_statement(text, state):
    assert model_statement(text) is state


def test_shipped_prompts_render():
    v = load_phase_prompt("verify")
    r = load_phase_prompt("revise")
    assert len(v.sha256) == 64 and v.sha256 != r.sha256
    text = v.render("\\frac{1}{2}")
    assert "\\frac{1}{2}" in text and "VERDICT: TRUE" in text and "{answer}" not in text
    text = r.render("7", "verification code printed 'False'")
    assert "7" in text and "printed 'False'" in text and "\\boxed{}" in text


class FakeContext:
    """Replays TurnResults; records the messages the driver sent."""

    def __init__(self, turns: list[TurnResult]):
        self.turns = list(turns)
        self.messages: list[tuple[str, str]] = []
        self.phases: list[str] = []

    def add_message(self, text: str, phase: str) -> None:
        self.messages.append((phase, text))

    async def run_turn(self, phase: str) -> TurnResult:
        self.phases.append(phase)
        return self.turns.pop(0)


VP = PhasePrompt("verify", "verify {answer}", "h1")
RP = PhasePrompt("revise", "revise {answer}: {reason}", "h2")


def drive(turns, answer="5", max_revisions=1):
    ctx = FakeContext(turns)
    out = asyncio.run(
        verify_and_revise(ctx, answer, max_revisions=max_revisions, verify_prompt=VP, revise_prompt=RP)
    )
    return ctx, out


def test_driver_false_then_revise_then_true():
    ctx, out = drive(
        [
            TurnResult("VERDICT: FALSE", (ok("False"),)),
            TurnResult("fixed \\boxed{4}", (ok("4"),), answer="4"),
            TurnResult("VERDICT: TRUE", (ok("True"),)),
        ]
    )
    assert out.answer == "4" and out.state is T
    assert [(r.round, r.state, r.answer) for r in out.rounds] == [(0, F, "5"), (1, T, "4")]
    assert ctx.phases == ["verify", "revise", "verify"]
    assert ctx.messages[1] == ("revise", "revise 5: verification code printed 'False'")
    assert out.prompt_hashes == {"verify": "h1", "revise": "h2"}


def test_driver_revise_limit_and_no_revision_when_true():
    f = TurnResult("", (ok("False"),))
    ctx, out = drive([f, TurnResult("\\boxed{6}", answer="6"), f], max_revisions=1)
    assert [r.state for r in out.rounds] == [F, F] and out.answer == "6" and not ctx.turns
    ctx, out = drive([f], max_revisions=0)
    assert [r.state for r in out.rounds] == [F] and out.answer == "5" and ctx.phases == ["verify"]
    ctx, out = drive([TurnResult("", (ok("True"),))], max_revisions=3)
    assert [r.state for r in out.rounds] == [T] and out.prompt_hashes == {"verify": "h1"}


def test_driver_revision_without_answer_keeps_refuted_answer():
    ctx, out = drive([TurnResult("", (ok("False"),)), TurnResult("I am not sure.")], max_revisions=2)
    assert out.answer == "5" and out.state is F and len(out.rounds) == 1


@pytest.mark.parametrize("boxed", ["False", "UNCERTAIN", "\\text{UNCERTAIN}", "\\text{ True }", "correct."])
def test_driver_revision_that_boxes_a_verdict_keeps_refuted_answer(boxed):
    """A small model asked to revise may box its judgement instead of an answer; that is not a revised
    answer (it could never be right), so the refuted answer stays, False, and nothing is verified again."""
    from mathagent.agent.grading import extract_answer

    text = f"The check failed, so the answer is \\boxed{{{boxed}}}"
    revised = extract_answer(text)
    assert revised and is_verdict_word(revised)
    ctx, out = drive([TurnResult("", (ok("False"),)), TurnResult(text, answer=revised)], max_revisions=2)
    assert out.answer == "5" and out.state is F and len(out.rounds) == 1
    assert ctx.phases == ["verify", "revise"]


@pytest.mark.parametrize(
    ("text", "found", "kept"),
    [
        ("Second day: dumbbell presses \\(2 \\times 20 = 40\\)\n\n3. **Total:**\n - Total pushups:", "2 \\times 20 = 40", True),
        ("The calculated revenue of $480 does not match the given answer of $2400.", "2400", True),
        ("I recomputed it: 6", "6", True),
        ("The corrected answer is \\boxed{6}.", "6", False),
        ("So the answer is 6.", "6", False),
        ("Recounted.\n#### 6", "6", False),
    ],
)  # fmt: skip
def test_driver_revision_must_state_its_answer(text, found, kept):
    """The revise prompt asks for the corrected answer in \\boxed{}; a revision that states none that way
    (boxed, "the answer is", ####) is no answer, whatever the extraction fallbacks would find in it."""
    from mathagent.agent.grading.extract import stated_answer

    assert (stated_answer(text) is None) is kept
    ctx, out = drive(
        [TurnResult("", (ok("False"),)), TurnResult(text, answer=found), TurnResult("", (ok("True"),))]
    )
    if kept:
        assert out.answer == "5" and out.state is F and len(out.rounds) == 1
    else:
        assert out.answer == "6" and out.state is T and [r.answer for r in out.rounds] == ["5", "6"]


@pytest.mark.parametrize(
    ("answer", "verdict"),
    [("False", True), ("\\mathrm{True}", True), ("uncertain!", True), ("12", False), ("Falsehood", False),
     ("x = false", False), ("", False), (None, False)],
)  # fmt: skip
def test_is_verdict_word(answer, verdict):
    assert is_verdict_word(answer) is verdict


def test_driver_records_turn_errors():
    _, out = drive([TurnResult("", (), error="backend error: boom")])
    assert out.state is U and "backend error: boom" in out.rounds[0].reason


# ------------------------------------------------------------------ the real loop and kernel


@pytest.fixture(scope="module")
def provider():
    from mathagent.sandbox import KernelPool, SandboxConfig

    pool = KernelPool(size=1, config=SandboxConfig.from_env())
    yield pool
    pool.close()


def run_loop(turns, provider, **config):
    from mathagent.agent.backends.scripted import ScriptedBackend
    from mathagent.agent.config import AgentConfig
    from mathagent.agent.loop import solve

    backend = ScriptedBackend(turns)
    cfg = AgentConfig(format="markdown", verify=True, **config)
    trace = asyncio.run(solve("What is 2 + 2?", backend, provider, cfg))
    return trace, backend


SOLVE_WRONG = ["Let me compute.\n```python\nprint(2 + 3)\n```", "So the answer is \\boxed{5}."]


@pytest.mark.kernel
def test_loop_false_revise_true(provider):
    turns = [
        *SOLVE_WRONG,
        "Substitute back.\n```python\nprint(2 + 2 == 5)\n```",
        "The check fails.\nVERDICT: FALSE",
        "I added wrongly.\n```python\nprint(2 + 2)\n```",
        "The corrected answer is \\boxed{4}.",
        "```python\nassert 2 + 2 == 4\nprint('VERIFIED')\n```",
        "VERDICT: TRUE",
    ]
    trace, backend = run_loop(turns, provider, max_revisions=1)
    assert trace.error is None, trace.error
    assert trace.final_answer == "4" and trace.verification_state is T
    assert [(r.round, r.state, r.answer) for r in trace.verification] == [(0, F, "5"), (1, T, "4")]
    assert "printed 'False'" in trace.verification[0].reason
    assert "printed 'VERIFIED'" in trace.verification[1].reason
    phases = [(s.kind, s.phase) for s in trace.steps]
    assert (StepKind.USER, "verify") in phases and (StepKind.USER, "revise") in phases
    assert [s.execution.stdout for s in trace.steps if s.phase == "verify" and s.execution] == [
        "False\n",
        "VERIFIED\n",
    ]
    # the model was shown the verification request after its answer
    assert "VERDICT: TRUE" in str(backend.calls[2].prompt)
    assert trace.meta["verification_prompts"]["verify"] == load_phase_prompt("verify").sha256
    # the trace survives JSON with its verification rounds
    from mathagent.agent.trace import Trace

    assert Trace.from_json(trace.to_json()) == trace


@pytest.mark.kernel
def test_loop_crashing_verification_is_uncertain(provider):
    turns = [
        *SOLVE_WRONG,
        "```python\nprint(undefined_name == 5)\n```",
        "VERDICT: TRUE",
    ]
    trace, _ = run_loop(turns, provider, max_revisions=2)
    assert trace.final_answer == "5" and trace.verification_state is U
    assert len(trace.verification) == 1 and "NameError" in trace.verification[0].reason


@pytest.mark.kernel
def test_loop_revise_limit(provider):
    refute = ["```python\nprint(2 + 2 == 5)\n```", "VERDICT: FALSE"]
    turns = [*SOLVE_WRONG, *refute, "Maybe \\boxed{5} after all.", *refute]
    trace, backend = run_loop(turns, provider, max_revisions=1)
    assert [r.state for r in trace.verification] == [F, F]
    assert trace.final_answer == "5" and backend.remaining == 0


@pytest.mark.kernel
def test_loop_revision_boxing_a_verdict_keeps_the_answer(provider):
    """The 0.5B model's habit from the study, on the real loop and kernel: refuted, it revises by boxing
    ``\\text{UNCERTAIN}``; the refuted answer stays with state False and no second verification runs."""
    refute = ["```python\nprint(2 + 2 == 5)\n```", "VERDICT: FALSE"]
    turns = [*SOLVE_WRONG, *refute, "I cannot tell. The final answer is \\boxed{\\text{UNCERTAIN}}."]
    trace, backend = run_loop(turns, provider, max_revisions=1)
    assert trace.final_answer == "5" and trace.verification_state is F
    assert [(r.round, r.answer) for r in trace.verification] == [(0, "5")]
    assert len(backend.calls) == 5  # solve (2), verify (2), revise (1): nothing after the verdict


@pytest.mark.kernel
def test_loop_revision_cut_before_its_answer_keeps_the_answer(provider):
    """A revision that runs out of tokens mid-explanation (its last math span is a step, not an answer)
    does not replace the refuted answer."""
    refute = ["```python\nprint(2 + 2 == 5)\n```", "VERDICT: FALSE"]
    turns = [
        *SOLVE_WRONG,
        *refute,
        "The mistake: \\(2 + 3 = 5\\) should use 2. Recount:\n1. \\(2 + 2 = 4\\)\n2. Then",
    ]
    trace, backend = run_loop(turns, provider, max_revisions=1)
    assert trace.final_answer == "5" and trace.verification_state is F
    assert [(r.round, r.answer) for r in trace.verification] == [(0, "5")]
