"""Voting over k samples: majority (maj@k), verification-weighted voting, pruning and pass@k.

Pure functions over lists of samples. A sample is an :class:`Sample` (or a bare
``(answer, state)`` tuple): the final answer of one trajectory (``None`` when it gave none) and the
state of its last code-based self-verification round (``None`` when verification did not run).

Answers are grouped by mathematical equivalence with the grader's ``cluster_answers``; tests and
callers can inject any ``cluster_fn(answers) -> list[int]`` (one cluster id per answer, ``-1`` for
``None``).

Weighted voting (CSV, arXiv 2308.07921): each sample adds ``w[state]`` to its answer's cluster; the
cluster with the highest score wins. A sample with no verification state counts with ``w_U``.

Tie rule (deterministic, in order): higher score, then more samples in the cluster, then the cluster
whose first sample appears earliest. ``VoteResult.tie_broken_by`` says which rule decided, if any.

Pruning (NuminaMath SC-TIR) drops, before the vote, samples that ended without an answer, never ran
code, or claim an output that no execution produced. When every sample would be pruned, the vote
falls back to the unpruned set (``VoteResult.pruned_fallback``), so there is always a vote.
"""

from __future__ import annotations

import enum
import logging
import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, Union

from mathagent.agent.grading.equivalence import cluster_answers

log = logging.getLogger(__name__)

ClusterFn = Callable[[Sequence[Union[str, None]]], list[int]]
"""Maps answers to cluster ids (equal ids: equivalent answers; ``-1``: no answer)."""

_EPS = 1e-9

PRUNE_NO_ANSWER = "no_answer"
PRUNE_NO_CODE = "no_code"
PRUNE_FABRICATED_OUTPUT = "fabricated_output"


class VerificationState(str, enum.Enum):
    """Outcome of one code-based self-verification round (CSV): the check confirmed, could not
    decide, or refuted the answer. Stored in traces as ``T`` / ``U`` / ``F``."""

    TRUE = "T"
    UNCERTAIN = "U"
    FALSE = "F"


@dataclass(frozen=True)
class Weights:
    """Vote weight per verification state. CSV's ablation: any ``true > uncertain >= false`` helps.

    Defaults were chosen with ``bench/voting_simulation.py`` (see docs/verification.md).
    """

    true: float = 1.0
    """Weight of a sample whose verification came out True."""
    uncertain: float = 0.3
    """Weight of an Uncertain sample (no way to check, or the check failed to run); also unverified."""
    false: float = 0.1
    """Weight of a sample whose final verification still came out False."""

    def __post_init__(self) -> None:
        for name in ("true", "uncertain", "false"):
            v = getattr(self, name)
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"weight {name}={v!r} must be a finite number >= 0")

    @classmethod
    def parse(cls, text: str) -> Weights:
        """Parse ``"w_T,w_U,w_F"`` (e.g. ``"1,0.5,0.2"``)."""
        parts = [p.strip() for p in str(text).split(",")]
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"weights must be three comma-separated numbers w_T,w_U,w_F, got {text!r}")
        try:
            t, u, f = (float(p) for p in parts)
        except ValueError as e:
            raise ValueError(f"weights must be numbers, got {text!r}") from e
        return cls(t, u, f)

    @property
    def is_monotone(self) -> bool:
        """``true > uncertain >= false``: the ordering CSV found to beat plain voting."""
        return self.true > self.uncertain >= self.false

    def for_state(self, state: VerificationState | str | None) -> float:
        if state is None:
            return self.uncertain
        state = VerificationState(state)
        if state is VerificationState.TRUE:
            return self.true
        if state is VerificationState.FALSE:
            return self.false
        return self.uncertain

    def __str__(self) -> str:
        return f"{self.true:g},{self.uncertain:g},{self.false:g}"

    def to_dict(self) -> dict[str, float]:
        return {"true": self.true, "uncertain": self.uncertain, "false": self.false}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Weights:
        return cls(float(d["true"]), float(d["uncertain"]), float(d["false"]))


class TraceLike(Protocol):
    """What voting reads from a trace (:class:`mathagent.agent.trace.Trace` has it); duck-typed so this
    library imports nothing else from mathagent."""

    @property
    def steps(self) -> Sequence[Any]:
        """Steps with ``kind`` (``text``/``code``/``execution``), ``content`` and ``execution``
        (an object with ``stdout``, ``stderr``, ``result`` and ``error``, or None)."""
        ...

    @property
    def final_answer(self) -> str | None: ...

    @property
    def verification_state(self) -> VerificationState | None: ...


MAJORITY = Weights(1.0, 1.0, 1.0)
"""Weights that turn the weighted vote into plain majority voting."""


@dataclass(frozen=True)
class Sample:
    """What voting needs to know about one trajectory."""

    answer: str | None
    state: VerificationState | None = None
    """Final verification state; None when verification did not run."""
    ran_code: bool = True
    """At least one code cell was executed."""
    fabricated_output: bool = False
    """The text states an output block that no execution produced."""

    def __post_init__(self) -> None:
        if self.state is not None and not isinstance(self.state, VerificationState):
            object.__setattr__(self, "state", VerificationState(self.state))

    @classmethod
    def from_trace(cls, trace: TraceLike) -> Sample:
        """Build from a :class:`mathagent.agent.trace.Trace`."""
        return cls(
            answer=trace.final_answer,
            state=trace.verification_state,
            ran_code=trace_ran_code(trace),
            fabricated_output=trace_fabricates_output(trace),
        )


SampleLike = Union[Sample, tuple]


def as_sample(s: SampleLike) -> Sample:
    if isinstance(s, Sample):
        return s
    answer, state = s[0], s[1] if len(s) > 1 else None
    return Sample(answer, VerificationState(state) if state is not None else None)


@dataclass(frozen=True)
class ClusterScore:
    """One group of equivalent answers in a vote."""

    cluster: int
    answer: str
    """Representative answer: the cluster's earliest sample."""
    score: float
    count: int
    first_index: int
    states: dict[str, int] = field(default_factory=dict)
    """Verification state (``T``/``U``/``F``/``none``) -> number of samples."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "answer": self.answer,
            "score": self.score,
            "count": self.count,
            "first_index": self.first_index,
            "states": dict(self.states),
        }


@dataclass(frozen=True)
class VoteResult:
    """The outcome of one vote."""

    winner: str | None
    """Representative answer of the winning cluster; None when no sample had an answer."""
    winner_index: int | None
    """Index (in the input list) of the sample whose answer is ``winner``."""
    clusters: tuple[ClusterScore, ...]
    """Per-cluster scores, best first."""
    method: str
    """``majority`` or ``weighted``."""
    weights: Weights
    n_samples: int
    n_voted: int
    """Samples that took part after pruning (answerless samples never score)."""
    pruned: dict[str, int] = field(default_factory=dict)
    """Reason -> number of samples pruned (a sample counts once, under its first reason)."""
    pruned_fallback: bool = False
    """Every sample would have been pruned, so the unpruned set voted."""
    tie_broken_by: str | None = None
    """``count`` or ``first_appearance`` when the top score was tied; None otherwise."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "winner": self.winner,
            "winner_index": self.winner_index,
            "clusters": [c.to_dict() for c in self.clusters],
            "method": self.method,
            "weights": self.weights.to_dict(),
            "n_samples": self.n_samples,
            "n_voted": self.n_voted,
            "pruned": dict(self.pruned),
            "pruned_fallback": self.pruned_fallback,
            "tie_broken_by": self.tie_broken_by,
        }


def grader_cluster_fn(dataset: str = "math") -> ClusterFn:
    """The grader's equivalence clustering for ``dataset``."""
    return lambda answers: list(cluster_answers(answers, dataset))


def exact_cluster_fn(answers: Sequence[str | None]) -> list[int]:
    """Cluster by exact string after stripping whitespace (for tests and as a last resort)."""
    ids: dict[str, int] = {}
    out = []
    for a in answers:
        if a is None or not a.strip():
            out.append(-1)
        else:
            out.append(ids.setdefault(a.strip(), len(ids)))
    return out


_CLAIMED_OUTPUT = re.compile(
    r"```[ \t]*(?:output|stdout|execution|console|out)[ \t]*\n(.*?)```"
    r"|<\|execution\|>(.*?)(?=<\||\Z)"
    r"|<execution>(.*?)</execution>",
    re.DOTALL | re.IGNORECASE,
)


def _norm(text: str) -> str:
    return " ".join(text.split())


def claimed_outputs(text: str) -> list[str]:
    """Output blocks the model itself wrote in ``text`` (```output fences, MathCoder execution tags)."""
    out = []
    for m in _CLAIMED_OUTPUT.finditer(text or ""):
        body = next((g for g in m.groups() if g is not None), "")
        if body.strip():
            out.append(body)
    return out


def trace_ran_code(trace: TraceLike) -> bool:
    """At least one code cell of the trace was executed."""
    return any(getattr(s.kind, "value", s.kind) == "execution" for s in trace.steps)


def trace_fabricates_output(trace: TraceLike) -> bool:
    """The model's own text states an output block that appears in no execution of the trace."""
    produced = []
    for s in trace.steps:
        if s.execution is not None:
            ex = s.execution
            produced += [ex.stdout, ex.stderr, ex.result or ""]
            if ex.error is not None:
                produced += [ex.error.ename, ex.error.evalue, ex.error.traceback]
        if getattr(s.kind, "value", s.kind) == "execution":
            produced.append(s.content)
    seen = _norm("\n".join(produced))
    for s in trace.steps:
        if getattr(s.kind, "value", s.kind) != "text":
            continue
        for claim in claimed_outputs(s.content):
            if _norm(claim) not in seen:
                return True
    return False


def prune_reason(sample: Sample) -> str | None:
    """Why a sample would be pruned before the vote, or None to keep it."""
    if sample.answer is None or not str(sample.answer).strip():
        return PRUNE_NO_ANSWER
    if not sample.ran_code:
        return PRUNE_NO_CODE
    if sample.fabricated_output:
        return PRUNE_FABRICATED_OUTPUT
    return None


def prune(samples: Sequence[SampleLike]) -> tuple[list[int], dict[str, int], bool]:
    """Indices to keep, pruned counts by reason, and whether it fell back to keeping everything."""
    ss = [as_sample(s) for s in samples]
    reasons = [prune_reason(s) for s in ss]
    kept = [i for i, r in enumerate(reasons) if r is None]
    counts: dict[str, int] = {}
    for r in reasons:
        if r is not None:
            counts[r] = counts.get(r, 0) + 1
    if not kept and ss:
        log.info("all %d samples pruned (%s); voting over the unpruned set", len(ss), counts)
        return list(range(len(ss))), counts, True
    return kept, counts, False


def _rank(
    cluster_ids: Sequence[int], scores: Sequence[float], indices: Sequence[int]
) -> tuple[list[tuple[int, float, int, int]], str | None]:
    """Rank clusters among ``indices``: list of (cluster, score, count, first_index), best first."""
    agg: dict[int, list[float]] = {}
    for i in indices:
        c = cluster_ids[i]
        if c < 0:
            continue
        if c not in agg:
            agg[c] = [0.0, 0, i]
        agg[c][0] += scores[i]
        agg[c][1] += 1
    rows = [(c, v[0], int(v[1]), int(v[2])) for c, v in agg.items()]
    # Score, then count, then earliest first appearance. Scores are compared after rounding so
    # float sums like 0.1+0.2 vs 0.3 tie as they should.
    rows.sort(key=lambda r: (-round(r[1] / _EPS) * _EPS, -r[2], r[3]))
    tie = None
    if len(rows) > 1 and abs(rows[0][1] - rows[1][1]) < 1e-6:
        tie = "count" if rows[0][2] != rows[1][2] else "first_appearance"
    return rows, tie


def weighted_vote(
    samples: Sequence[SampleLike],
    weights: Weights | str = Weights(),
    *,
    dataset: str = "math",
    cluster_fn: ClusterFn | None = None,
    prune_candidates: bool = False,
    method: str = "weighted",
) -> VoteResult:
    """Verification-weighted vote: each sample adds ``weights.for_state(state)`` to its cluster."""
    if isinstance(weights, str):
        weights = Weights.parse(weights)
    ss = [as_sample(s) for s in samples]
    if prune_candidates:
        indices, pruned, fallback = prune(ss)
    else:
        indices, pruned, fallback = list(range(len(ss))), {}, False
    answers = [s.answer for s in ss]
    cluster_ids = (cluster_fn or grader_cluster_fn(dataset))(answers) if ss else []
    if len(cluster_ids) != len(ss):
        raise ValueError(f"cluster_fn returned {len(cluster_ids)} ids for {len(ss)} answers")
    scores = [weights.for_state(s.state) for s in ss]
    rows, tie = _rank(cluster_ids, scores, indices)
    clusters = []
    for c, score, count, first in rows:
        states: dict[str, int] = {}
        for i in indices:
            if cluster_ids[i] == c:
                st = ss[i].state
                key = st.value if st is not None else "none"
                states[key] = states.get(key, 0) + 1
        clusters.append(ClusterScore(c, str(answers[first]), score, count, first, states))
    n_voted = sum(1 for i in indices if cluster_ids[i] >= 0)
    winner_index = rows[0][3] if rows else None
    return VoteResult(
        winner=answers[winner_index] if winner_index is not None else None,
        winner_index=winner_index,
        clusters=tuple(clusters),
        method=method,
        weights=weights,
        n_samples=len(ss),
        n_voted=n_voted,
        pruned=pruned,
        pruned_fallback=fallback,
        tie_broken_by=tie,
    )


def majority_vote(
    samples: Sequence[SampleLike | str | None],
    *,
    dataset: str = "math",
    cluster_fn: ClusterFn | None = None,
    prune_candidates: bool = False,
) -> VoteResult:
    """Plain majority voting (maj@k): every sample with an answer counts 1. Accepts bare answers."""
    ss = [Sample(s) if s is None or isinstance(s, str) else as_sample(s) for s in samples]
    return weighted_vote(
        ss,
        MAJORITY,
        dataset=dataset,
        cluster_fn=cluster_fn,
        prune_candidates=prune_candidates,
        method="majority",
    )


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimate from ``n`` samples of which ``c`` are correct: 1 - C(n-c,k)/C(n,k)."""
    if not (0 <= c <= n) or k < 1 or k > n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    # Product form: prod_{i=n-c+1}^{n} (1 - k/i), stable for large n.
    p = 1.0
    for i in range(n - c + 1, n + 1):
        p *= 1.0 - k / i
    return 1.0 - p


def pass_at_k_samples(correct: Sequence[bool], k: int) -> float:
    """pass@k over one problem's per-sample correctness."""
    return pass_at_k(len(correct), sum(bool(x) for x in correct), k)


@dataclass(frozen=True)
class KRow:
    """Vote accuracy at one k, averaged over problems (and over subsample draws when k < n)."""

    k: int
    majority: float
    """maj@k accuracy."""
    weighted: float
    """Verification-weighted vote accuracy at k."""
    pass_at_k: float
    """Unbiased pass@k (any of k samples correct)."""
    n_problems: int
    """Problems with at least k samples (the others are left out of this row)."""
    draws: int
    """Subsample draws per problem (1 when k equals the sample count)."""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _subsets(n: int, k: int, draws: int, rng: random.Random) -> list[list[int]]:
    if k >= n:
        return [list(range(n))]
    return [sorted(rng.sample(range(n), k)) for _ in range(draws)]


def _winner_correct(
    cluster_ids: Sequence[int], scores: Sequence[float], correct: Sequence[bool], idx: Sequence[int]
) -> bool:
    rows, _ = _rank(cluster_ids, scores, idx)
    return bool(rows) and bool(correct[rows[0][3]])


def vote_accuracy_at_k(
    problems: Sequence[Sequence[SampleLike]],
    correct: Sequence[Sequence[bool]],
    ks: Sequence[int] = (1, 4, 8, 16),
    weights: Weights = Weights(),
    *,
    draws: int = 32,
    seed: int = 0,
    dataset: str = "math",
    cluster_fn: ClusterFn | None = None,
    prune_candidates: bool = False,
) -> list[KRow]:
    """maj@k and weighted@k side by side, from n >= k samples per problem.

    ``correct[p][i]`` says whether sample ``i`` of problem ``p`` is right (grade once with
    ``is_equivalent``). Each problem is clustered once over all its samples. For k < n the vote is
    averaged over ``draws`` random k-subsets drawn with a generator seeded by ``(seed, problem, k)``,
    so rows are reproducible and do not depend on the order of ks; for k == n the full set votes once.
    A vote is correct when its winning cluster's representative (earliest sample) is correct.
    """
    if len(problems) != len(correct):
        raise ValueError("problems and correct must have the same length")
    cf = cluster_fn or grader_cluster_fn(dataset)
    prepared = []
    for samples, corr in zip(problems, correct, strict=True):
        ss = [as_sample(s) for s in samples]
        if len(corr) != len(ss):
            raise ValueError("each problem needs one correctness flag per sample")
        prepared.append(
            (ss, cf([s.answer for s in ss]) if ss else [], [weights.for_state(s.state) for s in ss])
        )
    rows = []
    for k in ks:
        maj_sum = w_sum = pk_sum = 0.0
        n_prob = 0
        used_draws = 1
        for p, ((ss, cids, wscores), corr) in enumerate(zip(prepared, correct, strict=True)):
            n = len(ss)
            if n < k or k < 1:
                continue
            n_prob += 1
            pk_sum += pass_at_k_samples(corr, k)
            subsets = _subsets(n, k, draws, random.Random(f"{seed}:{p}:{k}"))
            used_draws = max(used_draws, len(subsets))
            m = w = 0
            for sub in subsets:
                if prune_candidates:
                    kept, _, _ = prune([ss[i] for i in sub])
                    sub = [sub[j] for j in kept]
                m += _winner_correct(cids, [1.0] * n, corr, sub)
                w += _winner_correct(cids, wscores, corr, sub)
            maj_sum += m / len(subsets)
            w_sum += w / len(subsets)
        if n_prob:
            rows.append(KRow(k, maj_sum / n_prob, w_sum / n_prob, pk_sum / n_prob, n_prob, used_draws))
    return rows


@dataclass(frozen=True)
class StateStats:
    """How often each verification state occurs and how often its answers are right."""

    counts: dict[str, int]
    """State (``T``/``U``/``F``/``none``) -> number of samples."""
    correct: dict[str, int]
    """State -> number of those samples whose answer is correct."""

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def share(self, state: str) -> float:
        return self.counts.get(state, 0) / self.total if self.total else 0.0

    def precision(self, state: str) -> float | None:
        """Share of correct answers among samples in ``state`` (None when there are none)."""
        n = self.counts.get(state, 0)
        return self.correct.get(state, 0) / n if n else None

    def to_dict(self) -> dict[str, Any]:
        keys = ["T", "U", "F", "none"]
        return {
            "total": self.total,
            "counts": {k: self.counts.get(k, 0) for k in keys},
            "share": {k: self.share(k) for k in keys},
            "precision": {k: self.precision(k) for k in keys},
        }


def state_stats(samples: Sequence[SampleLike], correct: Sequence[bool]) -> StateStats:
    """Verification-state statistics over a flat list of samples and their correctness."""
    counts: dict[str, int] = {}
    right: dict[str, int] = {}
    for s, c in zip(samples, correct, strict=True):
        st = as_sample(s).state
        key = st.value if st is not None else "none"
        counts[key] = counts.get(key, 0) + 1
        right[key] = right.get(key, 0) + bool(c)
    return StateStats(counts, right)
