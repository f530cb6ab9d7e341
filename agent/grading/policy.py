"""Per-data-set grading policies: what counts as "the same answer" and how answers are extracted."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

DATASETS = ("gsm8k", "math", "math500", "aime24", "amc23", "svamp", "gsm-hard", "generic")


@dataclass(frozen=True)
class GradingPolicy:
    """How one data set is graded. Every field is a deliberate, documented choice (docs/grading.md)."""

    name: str = "generic"
    """Data set name this policy belongs to."""
    numeric_only: bool = False
    """Gold is always a plain number: compare numbers only, never symbolically."""
    rel_tol: float = 0.0
    """Relative tolerance for numeric comparison; 0 means exact rational comparison."""
    abs_tol: float = 0.0
    """Absolute tolerance for numeric comparison; 0 means none. Never used by a built-in policy."""
    last_number_fallback: bool = False
    """When no boxed / "answer is" / #### marker is found, take the last number in the text."""
    symbolic: bool = True
    """Allow sympy comparison (LaTeX parsed with latex2sympy2_extended) when cheaper checks fail."""
    unordered_lists: bool = True
    """Bare comma lists (``1, -2``) compare as multisets; tuples ``(a,b)`` and intervals stay ordered."""
    strip_units: bool = True
    """Drop trailing ``\\text{units}``, degrees, ``\\$`` and ``\\%`` before comparing."""
    allow_rounded: bool = True
    """A decimal with >= 6 significant digits equals an exact value that rounds to it (0.333333 = 1/3,
    4.12310562561766 = sqrt(17)). Exact values are never rounded against each other (1/2^99 != 1/2^98)."""
    symbolic_timeout_s: float = 5.0
    """Deadline for one sympy comparison (runs in a worker process); past it the pair is unequal."""
    max_len: int = 2000
    """Answers longer than this are compared as strings only (no parsing)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GradingPolicy:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


_NUMERIC = GradingPolicy(numeric_only=True, last_number_fallback=True)

_POLICIES: dict[str, GradingPolicy] = {
    "gsm8k": replace(_NUMERIC, name="gsm8k"),
    "svamp": replace(_NUMERIC, name="svamp"),
    # GSM-Hard targets are floats printed by Python programs (e.g. 2.6666666666666665):
    # a relative tolerance of 1e-6 accepts 2.666667 and 8/3 but not a rounded 2.67.
    "gsm-hard": replace(_NUMERIC, name="gsm-hard", rel_tol=1e-6),
    "aime24": replace(_NUMERIC, name="aime24"),
    "amc23": replace(_NUMERIC, name="amc23"),
    "math": GradingPolicy(name="math"),
    "math500": GradingPolicy(name="math500"),
    "generic": GradingPolicy(name="generic", last_number_fallback=True),
}

_ALIASES = {
    "gsm_hard": "gsm-hard",
    "gsmhard": "gsm-hard",
    "math-500": "math500",
    "math_500": "math500",
    "gsm8k-train": "gsm8k",  # training splits are graded like their test sets
    "math-train": "math",
}


def policy_for(dataset: str | GradingPolicy) -> GradingPolicy:
    """The policy for a data set name (unknown names get the ``generic`` policy)."""
    if isinstance(dataset, GradingPolicy):
        return dataset
    key = (dataset or "generic").strip().lower()
    key = _ALIASES.get(key, key)
    return _POLICIES.get(key, replace(_POLICIES["generic"], name=key))
