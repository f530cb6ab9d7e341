"""Rich rendering of traces for the terminal: prose, highlighted code, output panels, the answer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mathagent.agent.choose import VoteWeights, describe_vote, resolve_weights, vote_traces
from mathagent.agent.trace import Step, StepKind, StopReason, Trace
from rich.console import Console, Group
from rich.panel import Panel
from rich.syntax import Syntax
from rich.text import Text

_PHASE_STYLE = {"solve": "", "verify": "cyan", "revise": "magenta"}


def step_renderable(step: Step) -> Panel | Text | Syntax:
    """One step as a rich renderable."""
    tag = f" [{step.phase}]" if step.phase != "solve" else ""
    if step.kind is StepKind.CODE:
        return Panel(
            Syntax(step.content, "python", theme="ansi_dark", line_numbers=False, word_wrap=True),
            title=f"python{tag}",
            title_align="left",
            border_style="blue",
        )
    if step.kind is StepKind.EXECUTION:
        ex = step.execution
        bad = ex is not None and not ex.ok
        title = "output" + (f" ({ex.wall_s:.2f} s)" if ex is not None else "") + tag
        return Panel(
            Text(step.content or "(no output)", style="red" if bad else ""),
            title=title,
            title_align="left",
            border_style="red" if bad else "green",
        )
    if step.kind is StepKind.USER:
        return Panel(
            Text(step.content, style="italic"),
            title=f"harness{tag}",
            title_align="left",
            border_style="yellow",
        )
    return Text(step.content, style=_PHASE_STYLE.get(step.phase, ""))


def trace_renderable(trace: Trace, *, show_problem: bool = True) -> Group:
    """The whole trace: problem, steps, then the answer and a one-line footer."""
    parts: list[Panel | Text | Syntax] = []
    if show_problem:
        parts.append(Panel(Text(trace.problem), title="problem", title_align="left", border_style="white"))
    parts.extend(step_renderable(s) for s in trace.steps)
    parts.append(answer_renderable(trace))
    parts.append(Text(footer(trace), style="dim"))
    return Group(*parts)


def answer_renderable(trace: Trace) -> Panel:
    ok = trace.stop_reason is StopReason.ANSWERED
    lines = [f"answer: {trace.final_answer if trace.final_answer is not None else '(none)'}"]
    lines.append(f"stop: {trace.stop_reason.value}" + (f" - {trace.error}" if trace.error else ""))
    if trace.verification:
        states = ", ".join(f"{v.state.value}({v.answer})" for v in trace.verification)
        lines.append(f"verification: {states}")
    return Panel(
        Text("\n".join(lines), style="bold" if ok else "yellow"), border_style="green" if ok else "yellow"
    )


def footer(trace: Trace) -> str:
    t = trace.timings
    return (
        f"{trace.backend}:{trace.model} format={trace.format} sandbox={trace.sandbox_level or '-'} "
        f"tokens in/out={trace.tokens_in}/{trace.tokens_out} rounds={trace.meta.get('rounds', '-')} "
        f"time total={t.get('total', 0):.2f}s model={t.get('model', 0):.2f}s exec={t.get('exec', 0):.2f}s"
    )


def print_trace(trace: Trace, console: Console | None = None, *, show_problem: bool = True) -> None:
    (console or Console()).print(trace_renderable(trace, show_problem=show_problem))


def skipped_note(traces: Sequence[Trace]) -> str | None:
    """The line saying k samples were not verified because they agreed (``solve_k(verify_contested=True)``)."""
    if any(t.meta.get("verification_skipped") for t in traces):
        return "not verified: the samples agreed, so the vote needs no states (--verify-all verifies)"
    return None


def print_vote(
    traces: Sequence[Trace], console: Console | None = None, *, vote: Any = None, weights: Any = None
) -> None:
    """A one-panel summary of k samples: each answer and its state, then the shared vote
    (``mathagent.agent.choose``: clustering, weights, tie rule, pruning and its reasons)."""
    vw = weights if isinstance(weights, VoteWeights) else resolve_weights(weights)
    vote = vote if vote is not None else vote_traces(traces, vw)
    lines = [
        f"sample {t.sample_index}: {t.final_answer} ({t.stop_reason.value}"
        + (f", verified {t.verification_state.value}" if t.verification_state else "")
        + ")"
        for t in traces
    ]
    note = skipped_note(traces)
    if note:
        lines.append(note)
    lines += describe_vote(vote, vw)
    (console or Console()).print(
        Panel(Text("\n".join(lines)), title=f"{len(traces)} samples", title_align="left")
    )
