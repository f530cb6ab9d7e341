"""GRPO rewards from mathagent rollouts: the grader against the gold answer, plus optional shaping terms.

Each function follows TRL's reward-function contract (``prompts``, ``completions``, dataset columns and
the rollout function's extra fields as keyword lists; one float per completion) and reads the
rollout's summary from the ``mathagent_rollout`` column that :mod:`mathagent.training.grpo` adds:

* ``correct``: 1.0 when the extracted answer equals the gold answer under the data set's grading
  policy (``mathagent.agent.grading``), and the policy fabricated no execution output; else 0.0.
* ``format``: 1.0 when the rollout ran at least one closed code block and gave an answer.
* ``fabricated``: -1.0 when the policy wrote an execution block itself (claimed output that no
  execution produced).
* ``exec_error``: minus the share of the rollout's executions that failed (raised, timed out, crashed).

TRL sums them with ``reward_weights`` (:class:`RewardWeights`); every part is logged per step under
``rewards/<name>/mean`` whatever its weight, so a weight of 0 still shows the quantity.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from mathagent.agent.grading import is_equivalent

log = logging.getLogger(__name__)

ROLLOUT_COLUMN = "mathagent_rollout"
"""The extra field carrying each completion's rollout summary (:meth:`Rollout.record`)."""


@dataclass(frozen=True)
class RewardWeights:
    """Weights of the reward parts (TRL's ``reward_weights``, in :data:`REWARD_NAMES` order)."""

    correct: float = 1.0
    format: float = 0.0
    fabricated: float = 0.0
    """Applied to a -1 term: a positive weight penalizes fabricated output."""
    exec_error: float = 0.0
    """Applied to minus the failed share of executions: a positive weight penalizes errors."""

    def as_list(self) -> list[float]:
        return [self.correct, self.format, self.fabricated, self.exec_error]

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


REWARD_NAMES = ("correct", "format", "fabricated", "exec_error")


def score_correct(record: dict[str, Any], gold: str, grading: str) -> float:
    """1.0 when the rollout's answer is the gold answer (and nothing was fabricated), else 0.0."""
    if record.get("fabricated") or record.get("answer") is None:
        return 0.0
    try:
        return 1.0 if is_equivalent(record["answer"], gold, grading) else 0.0
    except Exception:  # noqa: BLE001 - a grader failure scores 0 and is logged, it does not stop training
        log.exception("grading failed for answer %r", record.get("answer"))
        return 0.0


def score_format(record: dict[str, Any]) -> float:
    return 1.0 if record.get("executions", 0) > 0 and record.get("answer") is not None else 0.0


def score_fabricated(record: dict[str, Any]) -> float:
    return -1.0 if record.get("fabricated") else 0.0


def score_exec_error(record: dict[str, Any]) -> float:
    n = record.get("executions", 0)
    return -record.get("exec_errors", 0) / n if n else 0.0


def _records(kwargs: dict[str, Any], n: int) -> list[dict[str, Any]]:
    recs = kwargs.get(ROLLOUT_COLUMN)
    if not isinstance(recs, list) or len(recs) != n:
        raise ValueError(
            f"the reward functions need the {ROLLOUT_COLUMN!r} column from mathagent's rollout function "
            "(GRPOTrainer(rollout_func=...))"
        )
    return recs


def reward_functions(default_grading: str = "math") -> list[Callable[..., list[float]]]:
    """TRL reward functions, in :data:`REWARD_NAMES` order. The first also logs rollout statistics."""

    def correct(prompts: Sequence[Any], completions: Sequence[Any], **kw: Any) -> list[float]:
        recs = _records(kw, len(prompts))
        golds = kw.get("gold") or [None] * len(prompts)
        gradings = kw.get("grading") or [default_grading] * len(prompts)
        log_metric = kw.get("log_metric")
        if callable(log_metric) and recs:
            n = len(recs)
            for key in ("executions", "exec_errors", "policy_tokens", "execution_tokens", "gen_s", "exec_s"):
                log_metric(f"rollout/{key}", sum(float(r.get(key, 0)) for r in recs) / n)
            log_metric("rollout/fabricated_rate", sum(bool(r.get("fabricated")) for r in recs) / n)
            log_metric("rollout/answered_rate", sum(r.get("answer") is not None for r in recs) / n)
        out = []
        for r, g, gr in zip(recs, golds, gradings, strict=True):
            out.append(0.0 if g is None else score_correct(r, str(g), gr or default_grading))
        return out

    def format(prompts: Sequence[Any], completions: Sequence[Any], **kw: Any) -> list[float]:  # noqa: A001
        return [score_format(r) for r in _records(kw, len(prompts))]

    def fabricated(prompts: Sequence[Any], completions: Sequence[Any], **kw: Any) -> list[float]:
        return [score_fabricated(r) for r in _records(kw, len(prompts))]

    def exec_error(prompts: Sequence[Any], completions: Sequence[Any], **kw: Any) -> list[float]:
        return [score_exec_error(r) for r in _records(kw, len(prompts))]

    return [correct, format, fabricated, exec_error]
