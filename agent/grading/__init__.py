"""Answer extraction and equivalence grading (pure functions; sympy runs in a bounded worker).

Public API::

    extract_answer(text, dataset="math") -> str | None
    gold_answer(row, dataset) -> str
    is_equivalent(pred, gold, dataset="math") -> bool
    cluster_answers(answers, dataset="math") -> list[int]
    normalize_answer(s) -> str
    GradingPolicy, policy_for(dataset)
"""

from mathagent.agent.grading.equivalence import cluster_answers, is_equivalent
from mathagent.agent.grading.extract import extract_answer, find_boxed, last_boxed
from mathagent.agent.grading.gold import gold_answer, load_math_annotations
from mathagent.agent.grading.normalize import normalize_answer
from mathagent.agent.grading.policy import DATASETS, GradingPolicy, policy_for

__all__ = [
    "DATASETS",
    "GradingPolicy",
    "cluster_answers",
    "extract_answer",
    "find_boxed",
    "gold_answer",
    "is_equivalent",
    "last_boxed",
    "load_math_annotations",
    "normalize_answer",
    "policy_for",
]
