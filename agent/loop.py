"""The reasoning loop: generate until a code block closes, run it, show the output, repeat.

:func:`solve` runs one trajectory and always returns a :class:`~mathagent.agent.trace.Trace` (bad
input, backend failures, malformed tool calls and full contexts end it with a stop reason and an
``error`` message; only cancellation propagates). :func:`solve_k` runs ``k`` samples (concurrently, except on a one-slot local server),
each in its own fresh sandbox. Progress is reported through the small frozen event objects of
:mod:`mathagent.agent.events`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from mathagent.agent.backends.base import (
    Backend,
    BackendError,
    Completion,
    GenerationParams,
    ServerGone,
    server_slots,
)
from mathagent.agent.backends.continuation import partial_messages
from mathagent.agent.backends.scripted import prompt_text
from mathagent.agent.config import DEFAULT_CONTEXT_BUDGET, AgentConfig
from mathagent.agent.events import (
    AnswerEvent,
    CodeEvent,
    Event,
    EventHandler,
    ExecutionEvent,
    TextDelta,
    VerificationEvent,
)
from mathagent.agent.formats import FormatError, TraceFormat, get_format
from mathagent.agent.grading.voting import grader_cluster_fn
from mathagent.agent.modes import check_mode, default_prompt, run_single_call
from mathagent.agent.presets import Preset, PresetError, extract_final, load_preset
from mathagent.agent.prompts import SystemPrompt, load_prompt
from mathagent.agent.trace import Step, StepKind, StopReason, Trace, VerificationRound
from mathagent.agent.verification import TurnResult, load_phase_prompt, verify_and_revise
from mathagent.sandbox.aio import arun
from mathagent.sandbox.base import ExecResult, Sandbox, SandboxProvider
from mathagent.sandbox.output import model_view as sandbox_view

log = logging.getLogger(__name__)

RESTART_NOTICE = "[kernel restarted: all variables and imports were lost; define them again]"


def last_output(steps: Sequence[Step]) -> str | None:
    """What the last code cell of ``steps`` printed (else its value); None if it failed or none ran."""
    for s in reversed(steps):
        if s.kind is StepKind.EXECUTION:
            ex = s.execution
            if ex is None:
                return s.content.strip() or None
            if not ex.ok:
                return None
            return ex.stdout.strip() or (ex.result or "").strip() or None
    return None


def model_view(result: ExecResult, max_chars: int, timeout_s: float | None = None) -> str:
    """The capped view the model sees; a kernel restart is always announced."""
    view = sandbox_view(result, max_chars, timeout_s)
    if result.kernel_restarted and "all variables" not in view:
        view = f"{view}\n{RESTART_NOTICE}".strip()
    return view


class Trajectory:
    """The mutable state of one running trajectory (verification hooks continue it)."""

    def __init__(
        self,
        problem: str,
        backend: Backend,
        provider: SandboxProvider | None,
        config: AgentConfig,
        fmt: TraceFormat,
        prompt: SystemPrompt,
        *,
        on_event: EventHandler | None,
        sample_index: int,
    ) -> None:
        self.problem, self.backend, self.provider, self.config = problem, backend, provider, config
        self.fmt, self.prompt, self.on_event, self.sample_index = fmt, prompt, on_event, sample_index
        self.seed = None if config.seed is None else config.seed + sample_index
        self.budget = (
            config.context_budget or getattr(backend, "context_window", None) or DEFAULT_CONTEXT_BUDGET
        )
        preset: Preset | None = getattr(fmt, "preset", None)
        self.answer_mode = preset.answer if preset is not None else "default"
        """How the final answer is read (:data:`mathagent.agent.presets.ANSWER_MODES`)."""
        self.steps: list[Step] = []
        self.tokens_in = self.tokens_out = self.calls = self.rounds = 0
        self.timings: dict[str, float] = {"model": 0.0, "exec": 0.0, "sandbox": 0.0}
        self.sandbox: Sandbox | None = None

    # -- plumbing ---------------------------------------------------------------------------------

    def view(self, result: ExecResult) -> str:
        """What the model sees of ``result`` under this trajectory's limits."""
        return model_view(result, self.config.view_chars, self.config.cell_timeout)

    def emit(self, event: Event) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(event)
        except Exception:  # noqa: BLE001 - a display bug must not end the trajectory
            log.exception("on_event handler failed")

    def build_prompt(self, steps: list[Step] | None = None) -> Any:
        steps = self.steps if steps is None else steps
        if getattr(self.backend, "continues_partial", False):
            # the backend continues the open assistant message itself (its chat template or the server's)
            return partial_messages(self.fmt, self.problem, steps, self.prompt.text)
        render_chat = getattr(self.backend, "render_chat", None)
        # a chat backend that cannot continue an open assistant message (``--continue-mode user``) gets
        # each output block as a user message even when the preset writes it into the assistant turn
        cannot = getattr(self.backend, "continues_partial", None) is False
        return self.fmt.build_prompt(
            self.problem, steps, self.prompt.text, render_chat=render_chat, continue_turn=not cannot
        )

    async def call_model(self, prompt: Any) -> Completion | str:
        """One backend call; returns an error message (str) instead of raising."""
        n_prompt = self.backend.count_tokens(prompt_text(prompt))
        room = self.budget - n_prompt
        if room < self.config.min_call_tokens:
            return f"context full: the prompt needs {n_prompt} tokens of a {self.budget}-token budget"
        params = GenerationParams(
            temperature=self.config.temperature,
            top_p=self.config.top_p,
            max_tokens=min(self.config.max_tokens, room),
            stop=self.fmt.stop_strings,
            seed=self.seed,
            tools=tuple(getattr(self.fmt, "tools", ())) if self.fmt.needs_tools else (),
        )
        on_text = None
        if self.on_event is not None:
            on_text = lambda piece: self.emit(TextDelta(piece, self.sample_index))  # noqa: E731
        t0 = time.perf_counter()
        try:
            out = await self.backend.generate(prompt, params, on_text=on_text)
        except ServerGone:
            raise  # the run's failure, not this sample's
        except BackendError as e:
            return f"backend error: {e}"
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception as e:  # noqa: BLE001 - a backend bug ends this trajectory, not the run
            log.exception("backend raised")
            return f"backend error: {type(e).__name__}: {e}"
        finally:
            self.timings["model"] += time.perf_counter() - t0
            self.calls += 1
        if not out:
            return "backend error: no completion returned"
        c = out[0]
        self.tokens_in += c.prompt_tokens or n_prompt
        self.tokens_out += c.completion_tokens or self.backend.count_tokens(c.text)
        if c.finish_reason == "error":
            return f"backend error: completion finished with error: {c.text[:200]}"
        return c

    async def execute(self, code: str) -> ExecResult | str:
        """Run ``code`` in this trajectory's sandbox (acquired on first use)."""
        try:
            if self.sandbox is None:
                if self.provider is None:
                    return "no sandbox provider: code cannot be executed"
                t0 = time.perf_counter()
                self.sandbox = await asyncio.to_thread(self.provider.acquire)
                self.timings["sandbox"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            result = await arun(self.sandbox, code, self.config.cell_timeout)
            self.timings["exec"] += time.perf_counter() - t0
            return result
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception as e:  # noqa: BLE001 - the sandbox contract says run never raises; be safe
            log.exception("sandbox failed")
            return f"sandbox error: {type(e).__name__}: {e}"

    def answer(self) -> str | None:
        solve = [s for s in self.steps if s.phase == "solve"]
        text = "\n".join(s.content for s in solve if s.kind is StepKind.TEXT)
        try:
            return extract_final(self.answer_mode, text, last_output(solve))
        except Exception:  # noqa: BLE001
            log.exception("answer extraction failed")
            return None

    async def close(self) -> None:
        sandbox, self.sandbox = self.sandbox, None
        if sandbox is not None:
            try:
                await asyncio.to_thread(sandbox.close)
            except Exception:  # noqa: BLE001
                log.exception("closing the sandbox failed")

    # -- the loop ---------------------------------------------------------------------------------

    async def run(self, phase: str = "solve", max_rounds: int | None = None) -> tuple[StopReason, str | None]:
        """Generate / execute until the message ends; returns (stop reason, error message)."""
        limit = self.config.max_rounds if max_rounds is None else max_rounds
        rounds, text_streak = 0, 0
        while True:
            c = await self.call_model(self.build_prompt())
            if isinstance(c, str):
                return (StopReason.CONTEXT_FULL if c.startswith("context full") else StopReason.ERROR), c
            try:
                g = self.fmt.parse_generation(c)
            except FormatError as e:
                if c.text.strip():
                    self.steps.append(Step(StepKind.TEXT, c.text.strip(), phase=phase))
                return self._cut_short(f"malformed tool call: {e}")
            if not g.text.strip() and g.code is None and not c.tool_calls and not self.steps:
                return StopReason.ERROR, "backend returned an empty completion"
            if g.text.strip():
                self.steps.append(Step(StepKind.TEXT, g.text, phase=phase))
            if g.unclosed_code:
                return self._cut_short(
                    f"the model did not close its code block within {self.config.max_tokens} tokens"
                )
            if g.code is not None:
                self.steps.append(Step(StepKind.CODE, g.code, phase=phase))
                if rounds >= limit:
                    return StopReason.MAX_ROUNDS, None
                self.emit(CodeEvent(g.code, rounds, self.sample_index))
                result = await self.execute(g.code)
                if isinstance(result, str):
                    return StopReason.ERROR, result
                view = model_view(result, self.config.view_chars, self.config.cell_timeout)
                self.steps.append(Step(StepKind.EXECUTION, view, execution=result, phase=phase))
                self.emit(ExecutionEvent(view, result, rounds, self.sample_index))
                rounds += 1
                self.rounds += 1
                text_streak = 0
                continue
            text_streak += 1
            if g.finished or c.finish_reason == "length" or text_streak >= self.config.max_text_blocks:
                if self.answer() is not None:
                    return StopReason.ANSWERED, None
                if c.finish_reason == "length":
                    return (
                        StopReason.NO_ANSWER,
                        f"max_tokens ({self.config.max_tokens}) reached without an answer",
                    )
                return StopReason.NO_ANSWER, None

    def _cut_short(self, why: str) -> tuple[StopReason, str | None]:
        """How a message the model itself left unusable ends the turn: a code block it never closed, a
        tool call that does not parse. Like prose that runs out of tokens, that is the model's own
        ending, not a failure of the harness (a failed sample is one the harness could not run, and
        ``--retry-failed`` runs it again; at T = 0 this one would end the same way): an answer it gave
        before stands, else it has none, and ``why`` says what happened."""
        if self.answer() is not None:
            return StopReason.ANSWERED, None
        return StopReason.NO_ANSWER, why

    # -- the verification phase's view of the trajectory (mathagent.agent.verification.VerifyContext)

    def add_message(self, text: str, phase: str) -> None:
        """Append a harness message (a user turn) to the conversation."""
        self.steps.append(Step(StepKind.USER, text, phase=phase))

    async def run_turn(self, phase: str) -> TurnResult:
        """Let the model write and run code until its message ends; returns a ``TurnResult``."""
        start = len(self.steps)
        reason, error = await self.run(phase)
        if error:
            log.info("%s turn ended: %s (%s)", phase, reason.value, error)
        new = tuple(self.steps[start:])
        text = "\n".join(s.content for s in new if s.kind is StepKind.TEXT)
        executions = tuple(s.execution for s in new if s.kind is StepKind.EXECUTION and s.execution)
        return TurnResult(text=text, executions=executions, answer=self._extract(text, new), steps=new)

    def _extract(self, text: str, steps: tuple[Step, ...] = ()) -> str | None:
        try:
            return extract_final(self.answer_mode, text, last_output(steps)) if text.strip() else None
        except Exception:  # noqa: BLE001
            log.exception("answer extraction failed")
            return None


async def _verify(traj: Trajectory, answer: str) -> tuple[str, tuple[VerificationRound, ...], dict[str, Any]]:
    """Run code-based self-verification on ``answer``; never raises."""
    t0 = time.perf_counter()
    try:
        vp = load_phase_prompt(traj.config.verify_prompt) if traj.config.verify_prompt else None
        out = await verify_and_revise(traj, answer, max_revisions=traj.config.max_revisions, verify_prompt=vp)
    except (asyncio.CancelledError, KeyboardInterrupt, ServerGone):
        raise
    except Exception as e:  # noqa: BLE001 - verification is best effort; the solve answer stands
        log.exception("verification failed")
        return answer, (), {"verification_error": f"{type(e).__name__}: {e}"}
    finally:
        traj.timings["verify"] = time.perf_counter() - t0
    for r in out.rounds:
        traj.emit(VerificationEvent(r, traj.sample_index))
    return out.answer or answer, out.rounds, {"verification_prompts": dict(out.prompt_hashes)}


def _system_prompt(config: AgentConfig, mode: str, fmt: TraceFormat, preset: Preset | None) -> SystemPrompt:
    """``--system-prompt`` (name or file), else a single-call mode's prompt, else the preset's, else the
    shipped prompt named after the format."""
    if config.system_prompt:
        return load_prompt(config.system_prompt)
    single = default_prompt(mode)
    if single is None and preset is not None and preset.system is not None:
        text = preset.system
        return SystemPrompt(preset.system_prompt_name, text, hashlib.sha256(text.encode("utf-8")).hexdigest())
    return load_prompt(single or fmt.name)


async def solve(
    problem: str,
    backend: Backend,
    sandbox_provider: SandboxProvider | None,
    config: AgentConfig | None = None,
    *,
    on_event: EventHandler | None = None,
    problem_id: str = "",
    sample_index: int = 0,
    verify_gate: Callable[[str], Awaitable[bool]] | None = None,
) -> Trace:
    """Run one trajectory on ``problem``; always returns a trace (see the module docstring).

    ``verify_gate``: called with the answer before verification (when ``config.verify`` is on); the
    trajectory verifies only when it returns True (:func:`solve_k`'s contested-only verification).
    """
    config = config or AgentConfig()
    t0 = time.perf_counter()
    base = Trace(
        problem=problem if isinstance(problem, str) else repr(problem),
        backend=getattr(backend, "name", type(backend).__name__),
        model=getattr(backend, "model", ""),
        sandbox_level=getattr(getattr(sandbox_provider, "level", None), "value", ""),
        problem_id=problem_id,
        sample_index=sample_index,
        seed=None if config.seed is None else config.seed + sample_index,
    )

    def failed(message: str, reason: StopReason = StopReason.ERROR) -> Trace:
        out = base.with_(stop_reason=reason, error=message, timings={"total": time.perf_counter() - t0})
        if on_event is not None:
            on_event(AnswerEvent(None, reason, sample_index))
        return out

    try:
        preset = load_preset(config.preset) if config.preset else None
        fmt_name = config.format or (preset.format if preset else None)
        fmt = get_format(fmt_name or getattr(backend, "default_format", None) or "markdown", preset)
        mode = config.mode if config.mode == "loop" else check_mode(config.mode, fmt)
        prompt = _system_prompt(config, mode, fmt, preset)
        if config.verify_prompt:
            load_prompt(config.verify_prompt)  # a wrong name fails the sample now, not silently later
    except (ValueError, PresetError) as e:
        return failed(str(e))
    prepare = getattr(backend, "prepare", None)
    if callable(prepare):  # how a partial assistant turn goes on (a probe, once per server)
        try:
            await asyncio.to_thread(prepare)
        except ServerGone:
            raise
        except BackendError as e:
            return failed(str(e))
    base = base.with_(format=fmt.name, prompt_hash=prompt.sha256)
    if not isinstance(problem, str) or not problem.strip():
        return failed("empty problem")
    traj = Trajectory(
        problem, backend, sandbox_provider, config, fmt, prompt, on_event=on_event, sample_index=sample_index
    )
    meta: dict[str, Any] = {"prompt_name": prompt.name, "config": config.to_dict()}
    if preset is not None:
        meta.update(preset=preset.name, preset_sha256=preset.sha256)
    continuation_dict = getattr(getattr(backend, "continuation", None), "to_dict", None)
    if callable(continuation_dict):  # how the assistant turn went on after code outputs
        meta["continuation"] = continuation_dict()
    verification: tuple[VerificationRound, ...] = ()
    try:
        if mode != "loop":
            reason, error, answer = await run_single_call(traj, mode)
        else:
            reason, error = await traj.run("solve")
            answer = traj.answer() if reason is StopReason.ANSWERED else None
        if answer is not None and config.verify and mode == "loop":
            verify = True
            if verify_gate is not None:
                gate_t0 = time.perf_counter()
                verify = await verify_gate(answer)
                # the wait for the other samples is not this sample's time
                traj.timings["gate_wait"] = waited = time.perf_counter() - gate_t0
                t0 += waited
            if verify:
                answer, verification, extra = await _verify(traj, answer)
                meta.update(extra)
            else:
                meta["verification_skipped"] = "the other samples agreed with this answer"
    except (asyncio.CancelledError, KeyboardInterrupt):
        reason, error, answer = StopReason.CANCELLED, "cancelled", None
        raise
    finally:
        await traj.close()
    meta.update(rounds=traj.rounds, calls=traj.calls)
    timings = {**traj.timings, "total": time.perf_counter() - t0}
    trace = base.with_(
        steps=tuple(traj.steps),
        final_answer=answer,
        stop_reason=reason,
        verification=verification,
        tokens_in=traj.tokens_in,
        tokens_out=traj.tokens_out,
        timings={k: round(v, 6) for k, v in timings.items()},
        error=error,
        meta=meta,
    )
    traj.emit(AnswerEvent(answer, reason, sample_index))
    return trace


async def solve_k(
    problem: str,
    backend: Backend,
    sandbox_provider: SandboxProvider | None,
    config: AgentConfig | None = None,
    *,
    k: int = 1,
    on_event: EventHandler | None = None,
    problem_id: str = "",
    at_once: int | None = None,
    verify_contested: bool = False,
    dataset: str = "math",
    backend_for: Callable[[int], Backend] | None = None,
) -> list[Trace]:
    """``k`` samples of ``problem`` (sample ``i`` uses seed ``seed + i``), each in its own sandbox, at most
    ``at_once`` at the same time. Default: all ``k`` together, except on a server this process started
    that works on one request at a time (llama-cpp-python's): it keeps one KV state, and samples taking
    turns on it would re-read their whole conversation at every call, so they run one after another
    (each then reads only its new tokens; see ``bench/interleave_bench.py``).

    ``verify_contested`` (with ``config.verify`` and k > 1): each sample stops before verification until
    every sample has an answer or has ended without one; the samples verify only when their answers
    fall in more than one cluster of ``dataset``'s grader (the vote's clustering). When they all agree,
    the vote's winner is that answer whatever the states, so the verification that costs most of a
    sample's time is skipped (each such trace's ``meta["verification_skipped"]`` says why); the one
    thing lost is a revision that would have changed an agreed answer. A sample's ``timings["total"]``
    leaves out its wait for the others (``timings["gate_wait"]``).

    ``backend_for``: the backend of sample ``i`` (scripted runs give each sample its own turns);
    default ``backend`` for all."""
    if at_once is None:
        at_once = 1 if server_slots(backend) == 1 else k
    turns = asyncio.Semaphore(max(1, at_once))
    contest = (
        _Contest(k, dataset) if verify_contested and k > 1 and (config or AgentConfig()).verify else None
    )

    async def one(i: int) -> Trace:
        gate = None
        if contest is not None:

            async def gate(answer: str) -> bool:
                return await contest.gate(i, answer, turns)

        try:
            async with turns:
                return await solve(
                    problem,
                    backend if backend_for is None else backend_for(i),
                    sandbox_provider,
                    config,
                    on_event=on_event,
                    problem_id=problem_id,
                    sample_index=i,
                    verify_gate=gate,
                )
        finally:
            if contest is not None:
                contest.ended(i)

    return list(await asyncio.gather(*(one(i) for i in range(k))))


class _Contest:
    """Whether ``k`` samples disagree: decided once each has stated its answer or ended without one."""

    def __init__(self, k: int, dataset: str) -> None:
        self.k, self.cluster = k, grader_cluster_fn(dataset)
        self.answers: dict[int, str] = {}
        self.done: set[int] = set()
        self.decided = asyncio.Event()
        self.contested = True

    def _decide(self) -> None:
        if self.decided.is_set() or len(self.answers.keys() | self.done) < self.k:
            return
        self.contested = len(set(self.cluster(list(self.answers.values())))) > 1
        self.decided.set()

    async def gate(self, i: int, answer: str, turns: asyncio.Semaphore) -> bool:
        """Sample ``i`` has ``answer``: wait for the others (letting them run meanwhile), then say
        whether to verify."""
        self.answers[i] = answer
        self._decide()
        if not self.decided.is_set():
            turns.release()  # a one-at-a-time server: the samples still to run need the turn
            try:
                await self.decided.wait()
            finally:
                await turns.acquire()
        return self.contested

    def ended(self, i: int) -> None:
        """Sample ``i`` returned (with or without passing its gate)."""
        self.done.add(i)
        self._decide()
