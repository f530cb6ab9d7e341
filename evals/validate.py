"""Checks on command-line input before a run starts: counts, ranges and the files flags name.

A CLI calls :func:`check_args` right after parsing; it returns the first problem as one line (the CLI
prints it and exits 2) or None. Only the flags present on ``args`` are checked, so ``eval``,
``generate`` and ``generate interpolate`` share the table. Without these checks ``--k 0`` ran zero
samples and exited 0, ``--limit -1`` dropped the last problem (a Python slice) and ``--concurrency 0``
silently became 1.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from mathagent.agent.grading.voting import Weights

POSITIVE_INT = (
    "k",
    "limit",
    "concurrency",
    "max_rounds",
    "agree",
    "max_tokens",
    "max_trace_tokens",
    "max_per_problem",
    "n",
    "max_inflight",
    "pool_size",
)
"""Flags (``args`` attribute names) that, when given, must be integers >= 1."""
NON_NEGATIVE_FLOAT = ("temperature", "interp_temperature")
"""Flags that, when given, must be finite numbers >= 0."""
UNIT_INTERVAL = ("problem_jaccard",)
"""Flags that, when given, must lie in [0, 1]."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def flag_error(args: argparse.Namespace) -> str | None:
    """The first flag whose value is out of range, as a message; None when all are fine."""
    for name in POSITIVE_INT:
        v = getattr(args, name, None)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            return f"{_flag(name)} must be a whole number >= 1, got {v}"
    for name in NON_NEGATIVE_FLOAT:
        v = getattr(args, name, None)
        if v is not None and not (math.isfinite(v) and v >= 0):
            return f"{_flag(name)} must be a number >= 0, got {v}"
    for name in UNIT_INTERVAL:
        v = getattr(args, name, None)
        if v is not None and not (math.isfinite(v) and 0 <= v <= 1):
            return f"{_flag(name)} must lie between 0 and 1, got {v}"
    weights = getattr(args, "weights", None)
    if weights is not None:
        try:
            Weights.parse(weights)
        except ValueError as e:
            return f"--weights: {e}"
    return None


def script_error(path: str | None, *, required: bool, flag: str = "--script") -> str | None:
    """Problems with a scripted-backend file: missing, unreadable, or a line that is not a JSON object
    with ``problem_id`` (file and line named). ``required``: the scripted backend is selected."""
    if not path:
        return f"--backend scripted needs {flag} FILE.jsonl" if required else None
    p = Path(path)
    if not p.is_file():
        return f"{flag} {path}: no such file"
    try:
        data = p.read_bytes()
    except OSError as e:
        return f"{flag} {path}: cannot read ({e.strerror})"
    for lineno, raw in enumerate(data.splitlines(), 1):
        where = f"{path}:{lineno}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            return f"{where}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})"
        if not line.strip():
            continue
        try:
            row: Any = json.loads(line)
        except json.JSONDecodeError as e:
            return f"{where}: not valid JSON ({e.msg})"
        if not isinstance(row, dict) or "problem_id" not in row:
            return f"{where}: expected a JSON object with a problem_id"
    return None


def check_args(args: argparse.Namespace, *, script_required: bool | None = None) -> str | None:
    """:func:`flag_error`, then the ``--script`` file (required when ``--backend scripted``, unless
    ``script_required`` says otherwise). Returns the first problem or None."""
    err = flag_error(args)
    if err:
        return err
    if hasattr(args, "script"):
        required = (
            getattr(args, "backend", None) == "scripted" if script_required is None else script_required
        )
        err = script_error(args.script, required=required)
        if err:
            return err
    if getattr(args, "interp_script", None):
        return script_error(args.interp_script, required=False, flag="--interp-script")
    return None
