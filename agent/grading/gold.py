"""Gold answers per data set, and the MARIO human-checked MATH annotations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mathagent.agent.grading.extract import last_boxed


def _num_str(v: Any) -> str:
    """``27.0`` -> ``27``; other floats keep Python's shortest repr; strings pass through stripped."""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() and abs(v) < 1e16 else repr(v)
    return str(v).strip()


def gold_answer(row: dict[str, Any], dataset: str) -> str:
    """The reference answer of one data-set row, as a string.

    gsm8k: text after ``####`` with thousands commas removed; math: ``row["answer"]`` when present
    (merge the MARIO annotation in first, see ``load_math_annotations``), else the last ``\\boxed{}`` of
    the solution; math500 / aime24 / amc23 / generic: ``answer``; svamp: ``Answer``; gsm-hard: ``target``.
    """
    ds = dataset.strip().lower().replace("_", "-")
    if ds == "gsm8k":
        ans = str(row["answer"])
        return ans.split("####")[-1].strip().replace(",", "")
    if ds == "math":
        if row.get("answer") not in (None, ""):
            return _num_str(row["answer"])
        boxed = last_boxed(str(row.get("solution", "")))
        if boxed is None:
            raise KeyError("MATH row has neither 'answer' nor a boxed solution")
        return boxed
    if ds == "svamp":
        return _num_str(row["Answer"])
    if ds in ("gsm-hard", "gsmhard"):
        return _num_str(row["target"])
    for key in ("answer", "Answer", "target", "gold", "gt"):
        if key in row and row[key] is not None:
            return _num_str(row[key])
    raise KeyError(f"no gold answer field in row for data set {dataset!r}")


def load_math_annotations(path: str | Path) -> list[str]:
    """The human-checked MATH test answers (MARIO ``math_testset_annotation.json``), one per row, in order.

    Row ``i`` matches row ``i`` of the 5000-problem MATH test file; merge with ``row["answer"] = ann[i]``.
    """
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return [str(item["answer"]) for item in data]
