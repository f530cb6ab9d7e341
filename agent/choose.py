"""The one voting path: ``solve --k``, the REPL and ``eval`` choose among k samples here.

Same clustering (the grader's equivalence classes), same weights (explicit ``--weights``, else the
calibration saved for the model and prompts, else the default :class:`~mathagent.agent.grading.voting.Weights`),
same tie rule and the same optional pruning, all through :func:`mathagent.agent.grading.voting.weighted_vote`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mathagent.agent import calibrate
from mathagent.agent.grading.voting import MAJORITY, Sample, VoteResult, Weights, as_sample, weighted_vote

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VoteWeights:
    """The weights a vote uses and where they came from."""

    weights: Weights
    source: str
    """``flag`` (--weights), ``calibrated`` (saved calibration), ``default`` or ``majority``."""
    calibration: str | None = None
    """Path of the calibration file when ``source == "calibrated"``."""

    def to_dict(self) -> dict[str, Any]:
        return {"weights": str(self.weights), "source": self.source, "calibration": self.calibration}


def resolve_weights(
    explicit: Weights | str | None = None,
    *,
    model: str | None = None,
    config: Any = None,
    format_name: str | None = None,
    method: str = "weighted",
) -> VoteWeights:
    """Explicit weights win; then the saved calibration for (model, prompts); then the defaults."""
    if method == "majority":
        return VoteWeights(MAJORITY, "majority")
    if explicit is not None:
        return VoteWeights(Weights.parse(explicit) if isinstance(explicit, str) else explicit, "flag")
    if model and config is not None:
        cal = calibrate.find(model, calibrate.config_system_prompt(config, format_name), config.verify_prompt)
        if cal is not None:
            return VoteWeights(cal.vote_weights(), "calibrated", str(cal.path()))
    return VoteWeights(Weights(), "default")


def vote_traces(
    traces: Sequence[Any],
    weights: VoteWeights | Weights | None = None,
    *,
    prune: bool = False,
    dataset: str = "math",
) -> VoteResult:
    """Vote over traces (or :class:`Sample` objects, or ``(answer, state)`` pairs as the REPL's live
    table has them) with the grader's clustering. When no sample carries a verification state (verification
    off, or the samples agreed) the weights cannot tell samples apart: the vote is a majority, and says so."""
    vw = weights if isinstance(weights, VoteWeights) else VoteWeights(weights or Weights(), "default")
    samples = [as_sample(t) if isinstance(t, (Sample, tuple)) else Sample.from_trace(t) for t in traces]
    if vw.source == "majority" or all(s.state is None for s in samples):
        return weighted_vote(samples, MAJORITY, dataset=dataset, prune_candidates=prune, method="majority")
    return weighted_vote(samples, vw.weights, dataset=dataset, prune_candidates=prune, method="weighted")


def describe_vote(result: VoteResult, vw: VoteWeights) -> list[str]:
    """Lines for a person: each cluster's score and states, the winner, pruning and its reasons."""
    lines = []
    for c in result.clusters:
        states = ", ".join(f"{k}:{v}" for k, v in sorted(c.states.items()))
        lines.append(f"{c.answer}: score {c.score:.2f} from {c.count} sample(s) [{states}]")
    w = f"weights T,U,F = {vw.weights} ({vw.source})"
    if result.method == "majority" and vw.source != "majority":
        w += "; no sample was verified, so each counts 1"
    if result.winner is None:
        lines.append(f"no sample gave an answer; {w}")
    else:
        tie = f", tie broken by {result.tie_broken_by}" if result.tie_broken_by else ""
        lines.append(
            f"{result.method} vote: {result.winner} ({result.n_voted}/{result.n_samples} voted{tie}); {w}"
        )
    if result.pruned:
        why = ", ".join(f"{k} {v}" for k, v in sorted(result.pruned.items()))
        lines.append(
            f"pruned: {why}" + (" (all pruned: the unpruned set voted)" if result.pruned_fallback else "")
        )
    return lines


def add_vote_args(parser: Any) -> Any:
    """``--weights`` and ``--prune`` for ``solve`` and the REPL (``eval`` has its own ``--weights``)."""
    import argparse

    parser.add_argument(
        "--weights",
        type=Weights.parse,
        default=None,
        help="vote weights w_T,w_U,w_F (default: calibrated for the model if saved, else 1,0.3,0.1)",
    )
    parser.add_argument(
        "--prune",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="drop samples with no answer, no executed code or invented outputs before the vote",
    )
    return parser
