"""What :mod:`mathagent.evals.datasets` and :mod:`mathagent.evals.hub` share: the names of the data
files kept outside the package, the error every data problem raises, and the file checksum."""

from __future__ import annotations

import hashlib
from pathlib import Path

LOCAL = {
    "math": "math_test.jsonl",
    "gsm-hard": "gsm_hard_test.jsonl",
    "svamp": "svamp_test.jsonl",
    "aime24": "aime24_test.jsonl",
    "amc23": "amc23_test.jsonl",
    "gsm8k-train": "gsm8k_train.jsonl",
    "math-train": "math_train.jsonl",
}
"""Data set name -> file name, for the sets loaded from a local folder (or the hub cache)."""
MARIO_FILE = "math_test_answer_annotation_mario.json"
"""MARIO's human-checked MATH answers, read next to ``math_test.jsonl``."""


class DatasetError(ValueError):
    """A data file is missing or malformed; the message names the file and line."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
