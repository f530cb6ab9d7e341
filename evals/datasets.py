"""Evaluation data sets as uniform :class:`Problem` records.

Standard sets: ``gsm8k`` and ``math500`` ship inside the package (``evals/data/``, byte-identical
copies, sha256 in ``SHA256SUMS``, licences in ``NOTICE.md``). ``math`` (5000, gold = the MARIO
human-checked answers), ``gsm-hard``, ``svamp``, ``aime24`` and ``amc23`` (test sets), and the
training sets ``gsm8k-train`` (7473) and ``math-train`` (7500, gold = the last ``\boxed{}`` of the
reference solution, which is kept in ``meta["solution"]``) load from a local folder:
``$MATHAGENT_DATA_DIR``, else ``../shared/data/datasets`` next to the checkout or the working dir.
When none holds the file, :mod:`mathagent.evals.hub` loads it once through ``datasets`` from a
pinned hub repo and caches it (off with ``MATHAGENT_NO_HUB=1``; ``math`` never comes from the hub).
Any other argument is read as a JSONL path.

Malformed data is never skipped silently: a line that is not UTF-8, not JSON, or lacks the question or
gold field, raises :class:`DatasetError` naming the file and line number.
"""

from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from mathagent.agent.grading import find_boxed
from mathagent.evals import hub
from mathagent.evals.datafiles import LOCAL, MARIO_FILE, DatasetError, sha256_file

log = logging.getLogger(__name__)

SHIPPED = {"gsm8k": "gsm8k_test.jsonl", "math500": "math500_test.jsonl"}
STANDARD = tuple(SHIPPED) + tuple(LOCAL)
"""Names accepted by :func:`load_problems` besides a path."""

GRADING_KIND = {
    "gsm8k": "gsm8k",
    "gsm-hard": "gsm8k",
    "svamp": "gsm8k",
    "math": "math",
    "math500": "math",
    "aime24": "math",
    "amc23": "math",
    "gsm8k-train": "gsm8k",
    "math-train": "math",
}
"""Data set name -> the grading policy it uses (``gsm8k``: numbers; ``math``: expressions)."""


@dataclass(frozen=True)
class Problem:
    """One evaluation problem, the same shape for every data set."""

    id: str
    """Stable id within the data set (row index or the set's own id)."""
    question: str
    """The problem statement shown to the model."""
    gold: str
    """The reference final answer (a string as the data set gives it)."""
    dataset: str
    """Data set name, e.g. ``gsm8k``, ``math``, or the JSONL file's stem."""
    level: str | None = None
    """Difficulty level (MATH: ``1``..``5``), when the set has one."""
    subject: str | None = None
    """Subject (MATH: ``Algebra``...), when the set has one."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Anything else worth keeping (reference solution, url...)."""

    @property
    def grading_kind(self) -> str:
        return GRADING_KIND.get(self.dataset, "math")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Problem:
        return cls(**d)


def data_dirs() -> list[Path]:
    """Folders searched for the non-shipped sets, in order."""
    dirs: list[Path] = []
    env = os.environ.get("MATHAGENT_DATA_DIR")
    if env:
        dirs.append(Path(env))
    repo = Path(__file__).resolve().parents[1]
    dirs += [repo.parent / "shared" / "data" / "datasets", Path.cwd().parent / "shared" / "data" / "datasets"]
    return dirs


def _find_local(filename: str) -> Path | None:
    for d in data_dirs():
        if (d / filename).is_file():
            return d / filename
    return None


def shipped_path(name: str) -> Path:
    """Path of a shipped data file inside the package."""
    return Path(str(resources.files("mathagent.evals") / "data" / SHIPPED[name]))


def decode_line(raw: bytes, where: str) -> str:
    """``raw`` as UTF-8, or :class:`DatasetError` naming ``where`` (file:line), the byte and its column."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        bad = raw[e.start : e.end]
        raise DatasetError(
            f"{where}: not valid UTF-8 (byte {' '.join(f'0x{b:02x}' for b in bad)} at column {e.start + 1}); "
            "re-save the file as UTF-8"
        ) from None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Parse a JSONL file; a bad line (not UTF-8, not JSON, not an object) raises :class:`DatasetError`
    with file and line number."""
    rows: list[dict[str, Any]] = []
    try:
        f = open(path, "rb")
    except OSError as e:
        raise DatasetError(f"{path}: cannot read ({e.strerror})") from None
    with f:
        for lineno, raw in enumerate(f, 1):
            line = decode_line(raw, f"{path}:{lineno}")
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise DatasetError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            rows.append(row)
    return rows


def _gsm8k_gold(answer: str) -> str:
    return answer.split("####")[-1].strip().replace(",", "")


def _gsm8k_meta(name: str, r: dict[str, Any]) -> dict[str, Any]:
    """Training rows keep their worked solution (the ``answer`` text before ``####``)."""
    return {"solution": r["answer"].split("####")[0].strip()} if name == "gsm8k-train" else {}


def _math_train(r: dict[str, Any], i: int, where: str) -> Problem:
    """A MATH training row (problem, level, type, solution): gold = the solution's last ``\boxed{}``."""
    solution = r["solution"]
    boxes = find_boxed(solution)
    if not boxes:
        raise DatasetError(f"{where}: the solution has no \\boxed{{}} answer")
    level = str(r.get("level", "")).replace("Level ", "") or None
    return Problem(
        str(r.get("idx", i)),
        r["problem"],
        boxes[-1],
        "math-train",
        level=level,
        subject=r.get("type"),
        meta={"solution": solution},
    )


def _convert(name: str, rows: list[dict[str, Any]], path: Path) -> list[Problem]:
    out: list[Problem] = []
    for i, r in enumerate(rows):
        where = f"{path}: row {i + 1}"
        try:
            if name in ("gsm8k", "gsm8k-train"):
                out.append(
                    Problem(str(i), r["question"], _gsm8k_gold(r["answer"]), name, meta=_gsm8k_meta(name, r))
                )
            elif name == "math-train":
                out.append(_math_train(r, i, where))
            elif name == "math500":
                out.append(
                    Problem(
                        r.get("unique_id", str(i)),
                        r["problem"],
                        str(r["answer"]),
                        name,
                        level=str(r.get("level")) if r.get("level") is not None else None,
                        subject=r.get("subject"),
                        meta={"solution": r.get("solution", "")},
                    )
                )
            elif name == "gsm-hard":
                out.append(Problem(str(r.get("idx", i)), r["input"], str(r["target"]), name))
            elif name == "svamp":
                q: Any = f"{r['Body'].strip()} {r['Question'].strip()}"
                out.append(Problem(str(r.get("ID", i)), q, str(r["Answer"]), name, subject=r.get("Type")))
            elif name in ("aime24", "amc23"):
                q = r.get("problem") or r["question"]
                out.append(
                    Problem(str(r.get("id", i)), q, str(r["answer"]), name, meta={"url": r.get("url")})
                )
            else:  # a user file: question/problem + answer/gold
                q = r.get("question") or r.get("problem")
                gold = r.get("gold", r.get("answer"))
                if q is None or gold is None:
                    raise KeyError("question/problem and answer/gold")
                if name == "" and isinstance(gold, str) and "####" in gold:
                    gold = _gsm8k_gold(gold)
                out.append(
                    Problem(
                        str(r.get("id", r.get("idx", i))),
                        q,
                        str(gold),
                        r.get("dataset") or path.stem,
                        level=str(r["level"]) if r.get("level") is not None else None,
                        subject=r.get("subject") or r.get("type"),
                    )
                )
        except KeyError as e:
            raise DatasetError(f"{where}: missing field {e}") from None
    return out


def _load_math(path: Path) -> list[Problem]:
    mario_path = path.parent / MARIO_FILE
    if not mario_path.is_file():
        raise DatasetError(f"{mario_path}: MARIO answer annotation not found (gold for `math`)")
    rows = read_jsonl(path)
    try:
        mario = json.loads(mario_path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{mario_path}: not a valid UTF-8 JSON file ({e})") from None
    if len(mario) != len(rows):
        raise DatasetError(f"{mario_path}: {len(mario)} annotations for {len(rows)} problems in {path}")
    out = []
    for i, (r, m) in enumerate(zip(rows, mario, strict=True)):
        level = str(r.get("level", "")).replace("Level ", "") or None
        out.append(
            Problem(
                str(r.get("idx", i)),
                r["problem"],
                str(m["answer"]),
                "math",
                level=level,
                subject=r.get("type"),
                meta={"solution": r.get("solution", "")},
            )
        )
    return out


def resolve(name_or_path: str) -> tuple[str, Path]:
    """Map a set name or a path onto (data set name, file path)."""
    if name_or_path in SHIPPED:
        return name_or_path, shipped_path(name_or_path)
    if name_or_path in LOCAL:
        found = _find_local(LOCAL[name_or_path])
        if found is None:  # our cached hub copy, fetched first if need be (evals/hub.py)
            found = hub.locate(name_or_path, searched=data_dirs())
        return name_or_path, found
    p = Path(name_or_path)
    if not p.is_file():
        raise DatasetError(f"{name_or_path!r} is neither a known data set ({', '.join(STANDARD)}) nor a file")
    return "", p


def load_problems(
    name_or_path: str, *, limit: int | None = None, seed: int | None = None, shuffle: bool = False
) -> list[Problem]:
    """Load a data set; ``shuffle`` (seeded) happens before ``limit``."""
    name, path = resolve(name_or_path)
    problems = _load_math(path) if name == "math" else _convert(name, read_jsonl(path), path)
    if shuffle:
        random.Random(seed).shuffle(problems)
    if limit is not None:
        problems = problems[:limit]
    return problems


def dataset_info(name_or_path: str) -> dict[str, Any]:
    """Name, path and sha256 of the data file (for run headers); ``source`` for a cached hub copy."""
    name, path = resolve(name_or_path)
    info: dict[str, Any] = {"name": name or path.stem, "path": str(path), "sha256": sha256_file(path)}
    if name in LOCAL:
        source = hub.provenance(path)
        if source is not None:
            info["source"] = source
    return info
