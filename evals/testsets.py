"""Which problems belong to an evaluation test set, so ``generate`` never trains on one by accident.

Training on test problems leaks into every later evaluation of the trained model: its score on that
set no longer measures anything. ``mathagent generate`` therefore refuses test data unless
``--allow-test`` is given (:func:`refuse_test_data`). Two ways a test set is recognised:

- **By name**: every registered set has a split (:data:`SPLIT`). ``gsm8k``, ``math``, ``math500``,
  ``aime24``, ``amc23``, ``svamp`` and ``gsm-hard`` are test sets (SVAMP and GSM-Hard are used only
  as test sets: GSM-Hard is GSM8K test with larger numbers); ``gsm8k-train`` and ``math-train`` are
  training sets.
- **By content**, for a file path: the question of every problem is normalised (Unicode NFKC,
  lower case, whitespace runs made one space, trimmed) and hashed (sha256, first 12 hex digits). The
  package ships these fingerprints for every known test set (``data/test_fingerprints.json``, built
  by :func:`build_fingerprints` from the reference files and checked against them by a test), so
  the check needs no data folder. A copy of a test set under another name, a re-serialised one
  (other key order, other fields, other line endings) or a subset of it matches question by
  question; a file whose bytes equal a known test file (``file_sha256``) matches whole. A question
  reworded beyond case and spacing does not match; near-duplicates are the leakage check of
  ``generate interpolate``'s job (n-gram overlap), not this one.

A file is refused when any of its problems is a test question: a training set that holds even a few
test questions still leaks them.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from mathagent.evals.datafiles import DatasetError
from mathagent.evals.datasets import dataset_info, load_problems

SPLIT = {
    "gsm8k": "test",
    "math": "test",
    "math500": "test",
    "aime24": "test",
    "amc23": "test",
    "svamp": "test",
    "gsm-hard": "test",
    "gsm8k-train": "train",
    "math-train": "train",
}
"""Registered data set name -> its split."""
TEST_SETS = tuple(name for name, split in SPLIT.items() if split == "test")
FINGERPRINTS_FILE = "test_fingerprints.json"
DIGITS = 12
"""Hex digits kept of each question's sha256 (48 bits: a chance match among ~10^4 questions is ~10^-10)."""
ALLOW_TEST_HELP = (
    "allow problems from an evaluation test set (refused by default: training on them leaks them "
    "into every later evaluation)"
)
"""``--help`` of the ``--allow-test`` flag of every command that takes training data."""
WHY = (
    "training on test problems leaks them into every later evaluation of the trained model (its score "
    "on that set stops measuring anything)"
)


def normalize_question(text: str) -> str:
    """NFKC, lower case, whitespace runs as one space, trimmed."""
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def fingerprint(text: str) -> str:
    """The first :data:`DIGITS` hex digits of the sha256 of the normalised question."""
    return hashlib.sha256(normalize_question(text).encode("utf-8")).hexdigest()[:DIGITS]


def build_fingerprints(names: Sequence[str] = TEST_SETS) -> dict[str, Any]:
    """The fingerprint index of the test sets ``names``, loaded by name (needs their files)."""
    sets: dict[str, Any] = {}
    for name in names:
        problems = load_problems(name)
        sets[name] = {
            "rows": len(problems),
            "file_sha256": dataset_info(name)["sha256"],
            "fingerprints": sorted({fingerprint(p.question) for p in problems}),
        }
    return {
        "schema_version": 1,
        "digits": DIGITS,
        "normalisation": "NFKC, lower, collapse spaces",
        "sets": sets,
    }


@lru_cache(maxsize=1)
def _index() -> tuple[dict[str, list[str]], dict[str, str], dict[str, int]]:
    """(fingerprint -> set names, file sha256 -> set name, set name -> rows) from the shipped file
    (a question may be in several sets: MATH-500 is a subset of MATH)."""
    raw = (resources.files("mathagent.evals") / "data" / FINGERPRINTS_FILE).read_text(encoding="utf-8")
    data = json.loads(raw)
    by_print: dict[str, list[str]] = {}
    by_file: dict[str, str] = {}
    rows: dict[str, int] = {}
    for name, s in data["sets"].items():
        rows[name] = int(s["rows"])
        by_file[s["file_sha256"]] = name
        for fp in s["fingerprints"]:
            by_print.setdefault(fp, []).append(name)
    return by_print, by_file, rows


@dataclass(frozen=True)
class TestMatch:
    """How much of a problem list (or file) is test data."""

    whole_file: str | None
    """The test set whose file is byte-identical, if any."""
    counts: dict[str, int]
    """Test set name -> problems of ours that are its questions."""
    total: int
    """Problems checked."""

    def __bool__(self) -> bool:
        return bool(self.whole_file or self.counts)

    def describe(self) -> str:
        if self.whole_file:
            return f"it is the {self.whole_file} test set, byte for byte"
        rows = _index()[2]
        parts = [
            f"{n} of its {self.total} problems are {name} test questions (of {rows[name]})"
            for name, n in self.counts.items()
        ]
        return "; ".join(parts)


def match_test(questions: Iterable[str], file_sha256: str | None = None) -> TestMatch:
    """Which test sets ``questions`` (and the file with ``file_sha256``) come from."""
    by_print, by_file, _ = _index()
    whole = by_file.get(file_sha256) if file_sha256 else None
    counts: dict[str, int] = {}
    total = 0
    for q in questions:
        total += 1
        for name in by_print.get(fingerprint(q), ()):
            counts[name] = counts.get(name, 0) + 1
    return TestMatch(whole, dict(sorted(counts.items(), key=lambda kv: -kv[1])), total)


class TestDataError(DatasetError):
    """``generate`` was given test data without ``--allow-test``."""


def refuse_test_data(
    spec: str, questions: Iterable[str], *, flag: str = "--problems", file_sha256: str | None = None
) -> None:
    """Raise :class:`TestDataError` when ``spec`` (a set name, or a file whose ``questions`` are given)
    is test data; the message says why and how to go on."""
    if spec in SPLIT:
        if SPLIT[spec] == "test":
            train = [n for n, s in SPLIT.items() if s == "train"]
            raise TestDataError(
                f"{flag} {spec} is a test set, and {WHY}. Use a training set ({', '.join(train)}), or pass "
                "--allow-test if this is really meant (e.g. a contamination study)"
            )
        return
    found = match_test(questions, file_sha256)
    if found:
        raise TestDataError(
            f"{flag} {spec}: {found.describe()} (matched by normalised question hash, see "
            f"mathagent.evals.testsets), and {WHY}. Remove those problems, or pass --allow-test if this "
            "is really meant"
        )


def write_fingerprints(path: Path, names: Sequence[str] = TEST_SETS) -> Path:
    """Rebuild the shipped index (run when a test set changes)."""
    path.write_text(json.dumps(build_fingerprints(names), separators=(",", ":")) + "\n", encoding="utf-8")
    return path
