"""Answer extraction and equivalence grading (pure functions; sympy runs in a bounded worker).

Public API::

    extract_answer(text, dataset="math") -> str | None
    gold_answer(row, dataset) -> str
    is_equivalent(pred, gold, dataset="math") -> bool
    cluster_answers(answers, dataset="math") -> list[int]
    normalize_answer(s) -> str
    GradingPolicy, policy_for(dataset)
    grader_version() -> str

``grader_version()`` names the grader that judged a record (a digest of this package's source and of
the sympy and latex2sympy2_extended versions): run folders stamp each verdict with it, and a summary
grades again the records another grader judged (:func:`mathagent.evals.summary.regrade`).
"""

import functools
import hashlib
from importlib import metadata
from pathlib import Path

from mathagent.agent.grading.equivalence import cluster_answers, is_equivalent
from mathagent.agent.grading.extract import extract_answer, find_boxed, last_boxed
from mathagent.agent.grading.gold import gold_answer, load_math_annotations
from mathagent.agent.grading.normalize import normalize_answer
from mathagent.agent.grading.policy import DATASETS, GradingPolicy, policy_for


@functools.cache
def grader_version() -> str:
    """A short digest of what decides a verdict: this package's source files and the versions of the
    parsers it calls. Equal digests judge every answer the same way."""
    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    for dist in ("sympy", "latex2sympy2_extended"):
        try:
            h.update(f"{dist}=={metadata.version(dist)}\0".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{dist} missing\0".encode())
    return h.hexdigest()[:12]


__all__ = [
    "DATASETS",
    "GradingPolicy",
    "cluster_answers",
    "extract_answer",
    "find_boxed",
    "gold_answer",
    "grader_version",
    "is_equivalent",
    "last_boxed",
    "load_math_annotations",
    "normalize_answer",
    "policy_for",
]
