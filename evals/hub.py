"""The standard evaluation sets from the Hugging Face Hub, for when no local copy exists.

:func:`mathagent.evals.datasets.resolve` calls :func:`locate` for a non-shipped set that no data folder
holds. The order is: the local data folders, then our converted cache, then the hub.

- **One pinned source per set** (:data:`SOURCES`): repo id, config, split, revision. The rows are
  converted once to the field layout of the local files (the fields ``datasets._convert`` reads), so
  a hub copy and a local copy give the same :class:`~mathagent.evals.datasets.Problem` records. The
  converted row count must equal the set's known size: a moved or edited repo is an error, never a
  silently different evaluation set.
- **Cache**: ``$MATHAGENT_CACHE_DIR/datasets/<name>.jsonl`` (default ``~/.cache/mathagent``), written
  atomically (temporary file + rename), with ``<name>.source.json`` beside it: repo id, config, split,
  requested revision, resolved commit, row count and the JSONL's sha256. Later loads read the cache
  and touch no network; a cache whose sha256 no longer matches its record is not used.
- **Off switches**: ``MATHAGENT_NO_HUB=1``, ``HF_HUB_OFFLINE=1`` or ``HF_DATASETS_OFFLINE=1``: no
  network is tried and ``datasets`` is not imported.
- ``datasets`` is optional and imported here only when a fetch is needed. Before loading, the hub is
  asked for the revision's commit with a short timeout (``MATHAGENT_HUB_TIMEOUT``, default 10 s), so
  an unreachable hub fails fast; the load itself then runs at that exact commit (which also keeps
  ``datasets`` from calling the dataset-viewer service). Every failure is a
  :class:`~mathagent.evals.datafiles.DatasetError` naming the paths searched and the repo.
- ``math`` has no hub source: its gold is the MARIO human-checked answers, which no hub data set
  carries (see :data:`NO_SOURCE`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mathagent.agent import cache
from mathagent.evals.datafiles import LOCAL, MARIO_FILE, DatasetError, sha256_file

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
Row = dict[str, Any]


def _gsm8k(r: Row, i: int) -> Row:
    return {"question": r["question"], "answer": r["answer"]}


def _math500(r: Row, i: int) -> Row:
    row = {"problem": r["problem"], "answer": r["answer"]}
    row.update({k: r[k] for k in ("solution", "subject", "level", "unique_id") if k in r})
    return row


def _svamp(r: Row, i: int) -> Row:
    row = {"ID": r.get("ID", str(i)), "Body": r["Body"], "Question": r["Question"], "Answer": r["Answer"]}
    return {**row, "Equation": r.get("Equation"), "Type": r.get("Type"), "idx": i}


def _gsm_hard(r: Row, i: int) -> Row:
    return {"input": r["input"], "code": r.get("code"), "target": r["target"], "idx": i}


def _aime24(r: Row, i: int) -> Row:
    return {
        "id": r.get("id", i),
        "problem": r["problem"],
        "solution": r.get("solution"),
        "answer": r["answer"],
        "url": r.get("url"),
    }


def _amc23(r: Row, i: int) -> Row | None:
    """AMC 2022 and 2023 share one repo; the 2023 rows (by their AoPS url) are the AMC23 set."""
    url = r["url"] or ""
    if "2023" not in url:
        return None
    return {"id": r.get("id", i), "problem": r["problem"], "answer": r["answer"], "url": url}


def _math_train(r: Row, i: int) -> Row:
    return {k: r[k] for k in ("problem", "level", "type", "solution") if k in r}


@dataclass(frozen=True)
class HubSource:
    """Where one standard set lives on the hub and how its rows map onto our local layout."""

    repo_id: str
    """Data set repository, ``owner/name``."""
    split: str
    """Split to load (the one matching our local file)."""
    rows: int
    """Rows expected after conversion; any other count is an error."""
    convert: Callable[[Row, int], Row | None]
    """Hub row (and its index) -> a row in the local file's layout, or ``None`` to drop it."""
    config: str | None = None
    """``datasets`` config name, when the repo has several."""
    revision: str = "main"
    """Commit sha where one has been checked, else a branch (the resolved commit is recorded)."""
    sha256: str | None = None
    """sha256 the converted JSONL must have, where known (a local reference copy); any other is an error."""


GSM8K_TRAIN_SHA256 = "6043ef64147b59871f4fd3adf669c306fe0a4c27e5a5c4bfb761f3f084895a13"
"""sha256 of the reference gsm8k_train.jsonl (openai/grade-school-math @ 3101c7d) after our conversion
(one ``{"question", "answer"}`` object a line): the hub rows must be exactly the reference rows."""

SOURCES: dict[str, HubSource] = {
    "gsm8k": HubSource(
        "openai/gsm8k",
        "test",
        1319,
        _gsm8k,
        config="main",
        revision="e53f048856ff4f594e959d75785d2c2d37b678ee",
    ),
    "math500": HubSource(
        "HuggingFaceH4/MATH-500", "test", 500, _math500, revision="ff5b20257d8185524591543f8ff5993951537bb8"
    ),
    "svamp": HubSource(
        "tongyx361/svamp", "test", 1000, _svamp, revision="b1659891d2fadaf805de8ff31f46a3e2cdd2966c"
    ),
    "gsm8k-train": HubSource(
        "openai/gsm8k",
        "train",
        7473,
        _gsm8k,
        config="main",
        revision="e53f048856ff4f594e959d75785d2c2d37b678ee",
        sha256=GSM8K_TRAIN_SHA256,
    ),
    # MATH train is in no local reference folder; this repo holds the 7500 training problems with their
    # reference solutions (fields problem, level, type, solution). Its commit could not be looked up
    # from this machine (no hub access), so the branch is named and the resolved commit is recorded.
    "math-train": HubSource("DigitalLearningGmbH/MATH-lighteval", "train", 7500, _math_train),
    "gsm-hard": HubSource("reasoning-machines/gsm-hard", "train", 1319, _gsm_hard),
    "aime24": HubSource("HuggingFaceH4/aime_2024", "train", 30, _aime24),
    "amc23": HubSource(
        "AI-MO/aimo-validation-amc", "train", 40, _amc23, revision="8ef249608d65c2de7763ca7525f438e540ba285e"
    ),
}
"""Pinned hub source per standard set. ``gsm8k`` and ``math500`` ship in the package and are fetched
only by an explicit :func:`fetch`; the other sets are fetched when no local copy exists."""

NO_SOURCE: dict[str, str] = {
    "math": (
        "its gold is the MARIO human-checked answers, and no hub data set carries them; the hub copies "
        "of MATH give only the reference solutions, whose last \\boxed{} is not the answer for some "
        f"problems. Put math_test.jsonl and {MARIO_FILE} in $MATHAGENT_DATA_DIR, or use math500"
    ),
}
"""Standard sets deliberately without a hub source, and why."""

_TRUE = {"1", "true", "yes", "on"}


def _env_true(var: str) -> bool:
    return os.environ.get(var, "").strip().lower() in _TRUE


def hub_off_reason() -> str | None:
    """Which environment variable turns the hub off, or ``None`` when fetching is allowed."""
    for var in ("MATHAGENT_NO_HUB", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if _env_true(var):
            return f"{var}={os.environ[var]}"
    return None


def hub_timeout() -> float:
    """Seconds the first hub request may take (``MATHAGENT_HUB_TIMEOUT``, default 10)."""
    return float(os.environ.get("MATHAGENT_HUB_TIMEOUT") or 10)


def cache_dir() -> Path:
    """``$MATHAGENT_CACHE_DIR/datasets``, else ``~/.cache/mathagent/datasets``."""
    return cache.cache_dir("datasets")


def _record_path(jsonl: Path) -> Path:
    return jsonl.with_name(jsonl.stem + ".source.json")


def _read_record(jsonl: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The record beside a cached file if the file still matches it, else (None, why not)."""
    record_path = _record_path(jsonl)
    if not jsonl.is_file():
        return None, None
    if not record_path.is_file():
        return None, f"{jsonl} has no {record_path.name} beside it"
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        return None, f"{record_path} is unreadable ({e})"
    if not isinstance(record, dict) or record.get("sha256") != sha256_file(jsonl):
        return None, f"{jsonl} does not match the sha256 recorded in {record_path.name}"
    return record, None


def provenance(path: Path) -> dict[str, Any] | None:
    """Where a cached file came from (repo, split, revision, commit), for run headers; else ``None``."""
    record, _ = _read_record(Path(path))
    if record is None:
        return None
    return {k: record.get(k) for k in ("repo_id", "config", "split", "revision", "commit")}


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _brief(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[0][:300]}" if lines else type(e).__name__


def fetch(name: str) -> Path:
    """Load ``name`` from its pinned hub source through ``datasets``, convert it, cache it; return the path.

    Raises :class:`DatasetError` (never a library exception) when the hub is off or unreachable, the
    repo or revision is missing, ``datasets`` is not installed, or the rows do not convert.
    """
    src = SOURCES[name]
    where = f"{src.repo_id} (revision {src.revision}, split {src.split})"
    off = hub_off_reason()
    if off:
        raise DatasetError(f"the hub is off ({off}); not fetching {where}")
    try:
        import datasets as hf_datasets
        from huggingface_hub import HfApi
    except ImportError as e:
        raise DatasetError(
            f"fetching {where} needs the optional `datasets` library (pip install datasets): {e}"
        ) from None
    endpoint = hf_datasets.config.HF_ENDPOINT
    try:
        info = HfApi(endpoint=endpoint).dataset_info(
            src.repo_id, revision=src.revision, timeout=hub_timeout()
        )
    except Exception as e:
        raise DatasetError(f"could not reach {where} on {endpoint}: {_brief(e)}") from None
    commit = info.sha
    if not commit:
        raise DatasetError(f"{endpoint} gave no commit for {where}")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mathagent-hub-") as tmp:
        try:
            ds = hf_datasets.load_dataset(
                src.repo_id, src.config, split=src.split, revision=commit, cache_dir=tmp
            )
            raw = [dict(r) for r in ds]
        except Exception as e:
            raise DatasetError(
                f"loading {src.repo_id}@{commit[:12]} from {endpoint} through `datasets` failed: {_brief(e)}"
            ) from None
    rows: list[Row] = []
    for i, r in enumerate(raw):
        try:
            row = src.convert(r, i)
        except KeyError as e:
            raise DatasetError(f"{src.repo_id}@{commit[:12]} row {i + 1}: missing field {e}") from None
        if row is not None:
            rows.append(row)
    if len(rows) != src.rows:
        raise DatasetError(
            f"{src.repo_id}@{commit[:12]} gave {len(rows)} {name} problems, expected {src.rows}; not caching it"
        )
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    if src.sha256 is not None and hashlib.sha256(data).hexdigest() != src.sha256:
        raise DatasetError(
            f"{src.repo_id}@{commit[:12]} converted to a {name} file with sha256 "
            f"{hashlib.sha256(data).hexdigest()[:16]}..., not the pinned {src.sha256[:16]}...; not caching it"
        )
    path = cache_dir() / f"{name}.jsonl"
    _write_atomic(path, data)
    record = {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "repo_id": src.repo_id,
        "config": src.config,
        "split": src.split,
        "revision": src.revision,
        "commit": commit,
        "rows": len(rows),
        "sha256": sha256_file(path),
        "endpoint": endpoint,
        "datasets_version": getattr(hf_datasets, "__version__", None),
        "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    _write_atomic(_record_path(path), (json.dumps(record, indent=1) + "\n").encode("utf-8"))
    log.info(
        "fetched %s: %d rows from %s@%s in %.1fs -> %s",
        name,
        len(rows),
        src.repo_id,
        commit[:12],
        time.monotonic() - started,
        path,
    )
    return path


def locate(name: str, searched: list[Path]) -> Path:
    """The cached hub copy of a standard set, fetched first if need be; ``searched`` = local folders tried."""
    filename = LOCAL[name]
    missing = (
        f"data set {name!r} is not shipped and no data folder holds {filename} "
        f"(searched: {', '.join(str(d) for d in searched)}; set $MATHAGENT_DATA_DIR to a folder that has it)"
    )
    if name in NO_SOURCE:
        raise DatasetError(f"{missing}. It is not loaded from the hub: {NO_SOURCE[name]}")
    path = cache_dir() / f"{name}.jsonl"
    record, refused = _read_record(path)
    if record is not None:
        src = SOURCES[name]
        if (record.get("repo_id"), record.get("revision")) != (src.repo_id, src.revision):
            log.warning(
                "%s was fetched from %s@%s, not the pinned %s@%s; delete it to fetch again",
                path,
                record.get("repo_id"),
                record.get("revision"),
                src.repo_id,
                src.revision,
            )
        return path
    if refused:
        log.warning("not using the cached copy: %s", refused)
    try:
        return fetch(name)
    except DatasetError as e:
        cache_note = f"; cache {path}: {refused}" if refused else f"; no cached copy at {path}"
        raise DatasetError(f"{missing}{cache_note}; hub fallback failed: {e}") from None
