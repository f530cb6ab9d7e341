"""Which generated traces become training data: quality filters, rejection sampling, agreement, dedup.

:func:`select` takes the sample records of a generation run (``samples.jsonl`` lines, one trace each)
and returns the traces to keep plus a count per reason for every dropped one. Each record is counted
under exactly one reason, the first that applies, in this order:

1. ``failed``: the sample ended in a backend/harness error (``status == "failed"``);
2. ``no_answer``: the trajectory stopped without a final answer (round limit, full context...);
3. ``no_code``: no code cell was executed;
4. ``unrepaired_error``: the last executed cell raised, timed out or lost its kernel (an error that a
   later successful cell repaired is fine);
5. ``truncated_output``: an execution output went over the sandbox cap, or the model was shown a cut
   view of it;
6. ``fabricated_output``: the model's text states an output block that no execution produced;
7. ``too_long``: the trace is longer than ``max_tokens`` (estimated as characters / 4);
8. ``refuted``: self-verification ended in ``F``, or a revision changed the answer (the exported
   solve-phase steps would then not lead to the final answer);
9. ``wrong_answer``: the problem has a gold answer and the trace's answer is not equivalent to it
   (rejection sampling);
10. ``no_agreement``: the problem has no gold answer and fewer than ``agree`` of its samples that
    passed 1–8 share one answer (MathCoder kept a generated problem only when 3 of 3 solutions agreed);
    traces outside the agreeing cluster count here too;
11. ``duplicate_solution``: a near-duplicate (see :mod:`mathagent.training.dedup`) of a solution
    already kept for the same problem;
12. ``over_per_problem``: more than ``max_per_problem`` kept solutions for one problem.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from mathagent.agent.grading import cluster_answers
from mathagent.agent.grading.voting import trace_fabricates_output
from mathagent.agent.trace import StepKind, Trace, VerificationState
from mathagent.training import dedup

REASONS = (
    "failed",
    "no_answer",
    "no_code",
    "unrepaired_error",
    "truncated_output",
    "fabricated_output",
    "too_long",
    "refuted",
    "wrong_answer",
    "no_agreement",
    "duplicate_solution",
    "over_per_problem",
)
"""Every reason a sample can be dropped for, in the order they are checked."""


@dataclass(frozen=True)
class FilterConfig:
    """The selection rules (recorded in the dataset card and the run summary)."""

    agree: int = 3
    """Problems without gold: at least this many samples must share one answer."""
    max_tokens: int = 4096
    """Length budget of one trace (problem + all steps), estimated as characters / 4."""
    view_chars: int = 2000
    """An execution output longer than this was shown cut to the model (the agent's ``view_chars``)."""
    solution_jaccard: float = dedup.SOLUTION_JACCARD
    """Two solutions of one problem at least this similar (word 3-gram Jaccard) are duplicates."""
    max_per_problem: int | None = None
    """Most kept traces per problem (None: no limit)."""
    drop_refuted: bool = True
    """Drop traces whose self-verification refuted or revised the answer."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FilterConfig:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass(frozen=True)
class Selection:
    """What :func:`select` kept and why the rest went."""

    kept: list[dict[str, Any]]
    """The kept records, in input order."""
    dropped: dict[str, int]
    """Dropped records per reason (every reason present, zeros included)."""
    problems: int = 0
    """Distinct problems seen."""
    problems_kept: int = 0
    """Problems with at least one kept trace."""
    reasons: dict[tuple[str, int], str] = field(default_factory=dict)
    """Reason per dropped record key ``(problem_id, sample_index)``."""

    def counts(self) -> dict[str, Any]:
        n = len(self.kept) + sum(self.dropped.values())
        return {
            "samples": n,
            "kept": len(self.kept),
            "problems": self.problems,
            "problems_kept": self.problems_kept,
            "dropped": dict(self.dropped),
        }


def solve_steps(trace: Trace) -> tuple:
    """The solve-phase steps: what is exported (verification turns carry harness messages)."""
    return tuple(s for s in trace.steps if s.phase == "solve" and s.kind is not StepKind.USER)


def trace_chars(trace: Trace) -> int:
    return len(trace.problem) + sum(len(s.content) for s in solve_steps(trace))


def estimated_tokens(trace: Trace) -> int:
    return math.ceil(trace_chars(trace) / 4)


def quality_reason(rec: dict[str, Any], cfg: FilterConfig) -> str | None:
    """The first quality filter (1–8 of the module docstring) that drops this record, or None."""
    if rec.get("status") == "failed" or not rec.get("trace"):
        return "failed"
    trace = Trace.from_dict(rec["trace"])
    if trace.final_answer is None or not str(trace.final_answer).strip():
        return "no_answer"
    steps = solve_steps(trace)
    executions = [s.execution for s in steps if s.kind is StepKind.EXECUTION and s.execution is not None]
    if not executions:
        return "no_code"
    if not executions[-1].ok:
        return "unrepaired_error"
    for s in steps:
        if s.kind is StepKind.EXECUTION and s.execution is not None:
            ex = s.execution
            shown = len(ex.stdout) + len(ex.stderr) + len(ex.result or "")
            if ex.truncated or shown > cfg.view_chars:
                return "truncated_output"
    if trace_fabricates_output(trace):
        return "fabricated_output"
    if estimated_tokens(trace) > cfg.max_tokens:
        return "too_long"
    if cfg.drop_refuted and trace.verification:
        if trace.verification_state is VerificationState.FALSE:
            return "refuted"
        if any(v.answer is not None and v.answer != trace.final_answer for v in trace.verification):
            return "refuted"
    return None


def _key(rec: dict[str, Any]) -> tuple[str, int]:
    return (str(rec["problem_id"]), int(rec.get("sample_index", 0)))


def _solution_text(rec: dict[str, Any]) -> str:
    return "\n".join(s["content"] for s in rec["trace"]["steps"] if s.get("phase", "solve") == "solve")


def select(records: Sequence[dict[str, Any]], cfg: FilterConfig | None = None) -> Selection:
    """Apply every filter of the module docstring to ``records`` (one generation run's samples)."""
    cfg = cfg or FilterConfig()
    reasons: dict[tuple[str, int], str] = {}
    by_problem: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rec in records:
        by_problem[str(rec["problem_id"])].append(rec)
        why = quality_reason(rec, cfg)
        if why is not None:
            reasons[_key(rec)] = why
    kept: set[tuple[str, int]] = set()
    for recs in by_problem.values():
        good = [r for r in recs if _key(r) not in reasons]
        has_gold = any(str(r.get("gold") or "").strip() for r in recs)
        if has_gold:
            passing = [r for r in good if r.get("correct")]
            for r in good:
                if not r.get("correct"):
                    reasons[_key(r)] = "wrong_answer"
        else:
            passing = _agreeing(good, cfg.agree, cluster_answers)
            for r in good:
                if r not in passing:
                    reasons[_key(r)] = "no_agreement"
        # near-duplicate solutions within the problem, then the per-problem cap
        passing.sort(key=lambda r: int(r.get("sample_index", 0)))
        index = dedup.NearDupIndex()
        n_kept = 0
        for r in passing:
            text = _solution_text(r)
            m = index.best(text)
            if m is not None and m.jaccard >= cfg.solution_jaccard:
                reasons[_key(r)] = "duplicate_solution"
                continue
            if cfg.max_per_problem is not None and n_kept >= cfg.max_per_problem:
                reasons[_key(r)] = "over_per_problem"
                continue
            index.add(str(r.get("sample_index", 0)), text)
            kept.add(_key(r))
            n_kept += 1
    dropped = {name: 0 for name in REASONS}
    for why in reasons.values():
        dropped[why] += 1
    kept_recs = [r for r in records if _key(r) in kept]
    return Selection(
        kept=kept_recs,
        dropped=dropped,
        problems=len(by_problem),
        problems_kept=len({_key(r)[0] for r in kept_recs}),
        reasons=reasons,
    )


def _agreeing(good: list[dict[str, Any]], agree: int, cluster_fn: Any) -> list[dict[str, Any]]:
    """The samples of the largest answer cluster, when it holds at least ``agree`` of them."""
    if not good:
        return []
    dataset = str(good[0].get("dataset") or "math")
    ids = cluster_fn([r.get("answer") for r in good], dataset)
    sizes: dict[int, int] = defaultdict(int)
    for c in ids:
        if c >= 0:
            sizes[c] += 1
    if not sizes:
        return []
    top = max(sizes, key=lambda c: (sizes[c], -c))
    if sizes[top] < max(1, agree):
        return []
    return [r for r, c in zip(good, ids, strict=True) if c == top]
