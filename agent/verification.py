"""Code-based self-verification (CSV, arXiv 2308.07921): verify an answer with code, revise if refuted.

After the solve phase states an answer, the loop calls :func:`verify_and_revise`. It asks the model
(prompt ``agent/prompts/verify.md``) to check the answer with code and end with a ``VERDICT:`` line,
lets it write and run code through the loop's own machinery, and decides the state with
:func:`parse_verification_state`. A False verdict makes the model revise (``revise.md``) and the new
answer is verified again, at most ``max_revisions`` times. Every round becomes a
:class:`~mathagent.agent.trace.VerificationRound`; the steps carry ``phase="verify"`` / ``"revise"``.

How the state is decided (code output first, the model's words second):

1. Only the verification phase's executions count. The *deciding* execution is the last one that
   raised ``AssertionError`` or printed a verdict word. ``AssertionError`` there -> **False** (a
   check failed). Otherwise its output (stdout and displayed value) decides: any negative word
   (``False``, ``MISMATCH``, ``FAIL``/``FAILED``, ``INCORRECT``, ``WRONG``) -> **False**, else a
   positive word (``True``, ``VERIFIED``, ``PASS``/``PASSED``, ``CORRECT``, ``MATCH``) -> **True**.
   A later fixed re-run of a buggy check therefore overrides an earlier one.
2. No execution printed a verdict, but at least one ran without error (e.g. silent asserts that
   passed): the model's ``VERDICT: TRUE / FALSE / UNCERTAIN`` line decides; without one, Uncertain.
3. Every execution failed with another error, timed out or lost its kernel, or no code ran at
   all -> **Uncertain**, whatever the model says (an unchecked claim is not a code-based check).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from mathagent.agent.grading.extract import stated_answer
from mathagent.agent.prompts import load_prompt
from mathagent.agent.trace import Step, VerificationRound, VerificationState
from mathagent.sandbox.base import ExecResult

log = logging.getLogger(__name__)

VERIFY_PROMPT = "verify"
REVISE_PROMPT = "revise"

_NEGATIVE = re.compile(r"\b(false|mismatch(?:ed)?|fail(?:ed|s)?|incorrect|wrong)\b", re.IGNORECASE)
_POSITIVE = re.compile(r"\b(true|verified|pass(?:ed|es)?|correct|match(?:es)?)\b", re.IGNORECASE)
_VERDICT = re.compile(
    r"verdict\W{0,6}(true|false|uncertain|verified|correct|incorrect|wrong|unknown|unsure)\b", re.IGNORECASE
)
_STATEMENT = {
    "true": VerificationState.TRUE,
    "verified": VerificationState.TRUE,
    "correct": VerificationState.TRUE,
    "false": VerificationState.FALSE,
    "incorrect": VerificationState.FALSE,
    "wrong": VerificationState.FALSE,
    "uncertain": VerificationState.UNCERTAIN,
    "unknown": VerificationState.UNCERTAIN,
    "unsure": VerificationState.UNCERTAIN,
}


def _output_verdict(ex: ExecResult) -> tuple[VerificationState, str] | None:
    """The verdict one execution gives, or None when it gives none."""
    if ex.error is not None and ex.error.ename == "AssertionError":
        detail = f": {ex.error.evalue}" if ex.error.evalue else ""
        return VerificationState.FALSE, f"assertion failed in verification code{detail}"
    if not ex.ok:
        return None
    text = "\n".join(x for x in (ex.stdout, ex.result or "") if x)
    neg = _NEGATIVE.search(text)
    if neg:
        return VerificationState.FALSE, f"verification code printed {neg.group(0)!r}"
    pos = _POSITIVE.search(text)
    if pos:
        return VerificationState.TRUE, f"verification code printed {pos.group(0)!r}"
    return None


_VERDICT_ANSWER = re.compile(
    r"\s*(?:\\text\{|\\mathrm\{|\\textbf\{)?\s*(true|false|uncertain|verified|correct|incorrect|wrong|unknown"
    r"|unsure)\s*\}?\s*[.!]?\s*",
    re.IGNORECASE,
)


def is_verdict_word(answer: str | None) -> bool:
    """Whether an extracted answer is only a verification verdict (``False``, ``\\text{UNCERTAIN}``...)."""
    return bool(answer) and _VERDICT_ANSWER.fullmatch(answer or "") is not None


def model_statement(text: str) -> VerificationState | None:
    """The state named by the model's last ``VERDICT:`` line, or None."""
    found = _VERDICT.findall(text or "")
    return _STATEMENT[found[-1].lower()] if found else None


def parse_verification_state(
    executions: Sequence[ExecResult], model_text: str
) -> tuple[VerificationState, str]:
    """Decide a verification round's state from its executions and the model's text (module doc)."""
    for ex in reversed(executions):
        verdict = _output_verdict(ex)
        if verdict is not None:
            return verdict
    if not executions:
        return VerificationState.UNCERTAIN, "no verification code ran"
    if not any(ex.ok for ex in executions):
        last = executions[-1]
        if last.timed_out:
            why = "timed out"
        elif last.kernel_restarted:
            why = "lost its kernel"
        else:
            why = f"raised {last.error.ename}" if last.error else "failed"
        return VerificationState.UNCERTAIN, f"verification code {why}"
    said = model_statement(model_text)
    if said is None:
        return VerificationState.UNCERTAIN, "code printed no verdict and the model stated none"
    return said, f"model stated {said.name} after its code ran without a printed verdict"


# ---------------------------------------------------------------- prompts


@dataclass(frozen=True)
class PhasePrompt:
    """A verification-phase prompt template (``{answer}`` and ``{reason}`` are filled in)."""

    name: str
    template: str
    sha256: str

    def render(self, answer: str | None, reason: str = "") -> str:
        return self.template.replace("{answer}", answer or "(none)").replace("{reason}", reason or "")


def load_phase_prompt(name: str) -> PhasePrompt:
    """Load ``agent/prompts/<name>.md`` through the shared prompt loader (sha256 recorded)."""
    p = load_prompt(name)
    return PhasePrompt(p.name, p.text, p.sha256)


# ---------------------------------------------------------------- the phase driver


@dataclass(frozen=True)
class TurnResult:
    """What one model turn (with its code runs) produced, as the loop reports it."""

    text: str = ""
    """All prose the model wrote in the turn."""
    executions: tuple[ExecResult, ...] = ()
    """Results of the code it ran in the turn, in order."""
    answer: str | None = None
    """The final answer stated in the turn, if any."""
    steps: tuple[Step, ...] = ()
    """The steps the turn added (already recorded by the loop)."""
    error: str | None = None
    """Why the turn ended abnormally (backend error, full context...), if it did."""


class VerifyContext(Protocol):
    """What the loop lends the verification phase."""

    def add_message(self, text: str, phase: str) -> None:
        """Append a harness (user) message to the conversation, tagged with ``phase``."""
        ...

    async def run_turn(self, phase: str) -> TurnResult:
        """Let the model write and run code until its message ends; steps get ``phase``."""
        ...


@dataclass(frozen=True)
class VerificationOutcome:
    """The result of :func:`verify_and_revise`."""

    answer: str | None
    """The answer after any revisions (the last one verified)."""
    rounds: tuple[VerificationRound, ...] = ()
    prompt_hashes: dict[str, str] = field(default_factory=dict)
    """Prompt name -> sha256 of the verify / revise prompts used."""

    @property
    def state(self) -> VerificationState | None:
        return self.rounds[-1].state if self.rounds else None


async def verify_and_revise(
    ctx: VerifyContext,
    answer: str | None,
    *,
    max_revisions: int = 1,
    verify_prompt: PhasePrompt | None = None,
    revise_prompt: PhasePrompt | None = None,
    on_round: Callable[[VerificationRound], None] | None = None,
) -> VerificationOutcome:
    """Verify ``answer``; on False revise and re-verify, at most ``max_revisions`` times.

    A revision that states no answer ends the phase: the refuted answer stays, with state False. So does
    a revision whose "answer" is a verdict word (``\\boxed{False}``, ``\\boxed{\\text{UNCERTAIN}}``: small
    models box their judgement instead of a corrected answer; in the method study 15 of 100 GSM8K
    revisions of the 0.5B model did, each replacing a number with a word that can never be right), and
    a revision that states its answer nowhere (no ``\\boxed{}``, "the answer is" or ``####``, as the
    revise prompt asks): what the fallbacks find there is a fragment (``2 \\times 20 = 40``, ``-16 = 2S``,
    a sentence cut by ``max_tokens``); in the study one of 10 such "answers" was right, repeating the
    refuted one.
    """
    vp = verify_prompt or load_phase_prompt(VERIFY_PROMPT)
    rp = revise_prompt or load_phase_prompt(REVISE_PROMPT)
    hashes = {vp.name: vp.sha256}
    rounds: list[VerificationRound] = []
    current = answer
    for r in range(max(0, max_revisions) + 1):
        ctx.add_message(vp.render(current), "verify")
        turn = await ctx.run_turn("verify")
        state, reason = parse_verification_state(turn.executions, turn.text)
        if turn.error and not turn.executions:
            reason = f"{reason}; the turn ended: {turn.error}"
        rounds.append(VerificationRound(r, state, current, reason))
        if on_round is not None:
            on_round(rounds[-1])
        log.info("verification round %d: %s (%s) for answer %r", r, state.name, reason, current)
        if state is not VerificationState.FALSE or r >= max_revisions:
            break
        hashes[rp.name] = rp.sha256
        ctx.add_message(rp.render(current, reason), "revise")
        turn = await ctx.run_turn("revise")
        if turn.answer is None:
            log.info("revision %d stated no answer; keeping %r", r + 1, current)
            break
        if is_verdict_word(turn.answer):
            log.info(
                "revision %d stated a verdict (%r), not an answer; keeping %r", r + 1, turn.answer, current
            )
            break
        if stated_answer(turn.text) is None:
            log.info("revision %d boxed no answer (found only %r); keeping %r", r + 1, turn.answer, current)
            break
        current = turn.answer
    return VerificationOutcome(current, tuple(rounds), hashes)
