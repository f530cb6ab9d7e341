"""Join generation shards (``mathagent generate merge DIR1 DIR2 ... --out DIR``).

Each shard is a generation run folder (``--shard i/n``, usually on its own machine and server). A
merge:

1. validates: every folder is a generation run, and their identities agree once the fields that may
   differ between shards are set aside (shard, server URL, ``--limit``, script, data file path);
2. combines the sample records: a key ``(problem_id, sample_index)`` held by several shards is taken
   once, from the first folder given; a problem whose text near-duplicates a problem of another id is
   dropped (word 3-gram Jaccard >= :data:`dedup.PROBLEM_JACCARD`);
3. writes the result as a run folder at ``--out`` (re-running the same merge adds nothing) and builds
   the data set there (filters, both exports, card) exactly as ``mathagent generate`` does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mathagent.evals.runs import RunDir, identity_diff
from mathagent.evals.shards import without_fields
from mathagent.training import dedup
from mathagent.training.filters import FilterConfig
from mathagent.training.generate import DatasetInfo, build_dataset

log = logging.getLogger(__name__)

KIND = "mathagent-generate"
SHARD_FIELDS = (
    ("config", "base_url"),
    ("config", "limit"),
    ("config", "extra", "shard"),
    ("config", "extra", "script"),
    ("dataset", "path"),
)
"""Identity fields allowed to differ between shards of one generation."""


class MergeError(ValueError):
    """The folders are not shards of one generation."""


def merge_identity(identity: dict[str, Any]) -> dict[str, Any]:
    """``identity`` without the fields shards may differ in."""
    return without_fields(identity, SHARD_FIELDS)


def _shard(identity: dict[str, Any]) -> str | None:
    return identity.get("config", {}).get("extra", {}).get("shard")


def merge_runs(
    dirs: Sequence[Path | str],
    out: Path | str,
    *,
    filters: FilterConfig | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Merge generation run folders into ``out``; returns the statistics (see the module docstring)."""
    if not dirs:
        raise MergeError("nothing to merge")
    runs = [RunDir.read(d) for d in dirs]
    for r in runs:
        if r.bad_lines:
            lines = ", ".join(str(n) for n, _ in r.bad_lines[:10])
            raise MergeError(
                f"{r.path / 'samples.jsonl'} has {len(r.bad_lines)} corrupt line(s) ({lines}): re-run the "
                "shard's `mathagent generate` command in that folder; it moves them aside and re-runs them"
            )
    idents = [r.header.get("identity", {}) for r in runs]
    for r, ident in zip(runs, idents, strict=True):
        if ident.get("kind") != KIND:
            raise MergeError(f"{r.path} is not a `mathagent generate` run folder")
    ref = merge_identity(idents[0])
    for r, ident in zip(runs[1:], idents[1:], strict=True):
        if merge_identity(ident) != ref:
            raise MergeError(
                f"{r.path} is not a shard of the same generation as {runs[0].path}: {identity_diff(ref, merge_identity(ident))}"
            )
    shards = [_shard(i) for i in idents]
    counts = sorted({int(s.split("/")[1]) for s in shards if s})
    if len(counts) > 1:
        log.warning("shards of different counts merged: %s", shards)
    missing: list[str] = []
    if len(counts) == 1:
        have = {int(s.split("/")[0]) for s in shards if s}
        missing = [f"{i}/{counts[0]}" for i in range(counts[0]) if i not in have]
    # records: first folder wins per key
    seen: dict[tuple[str, int], dict[str, Any]] = {}
    duplicate_keys = 0
    for r in runs:
        for rec in r.records():
            key = (str(rec["problem_id"]), int(rec.get("sample_index", 0)))
            if key in seen:
                duplicate_keys += 1
                continue
            seen[key] = rec
    questions: dict[str, str] = {}
    for rec in seen.values():
        questions.setdefault(str(rec["problem_id"]), str(rec.get("question", "")))
    kept_ids, dropped = dedup.dedup_texts(questions.items(), dedup.PROBLEM_JACCARD)
    keep = set(kept_ids)
    records = [rec for rec in seen.values() if str(rec["problem_id"]) in keep]
    identity = {**ref, "merged": True}
    extra = {"merged_from": [str(r.path) for r in runs], "shards": shards}
    first_extra = {k: v for k, v in runs[0].header.items() if k in ("filters", "models", "sources")}
    merged = RunDir.open(out, identity, {**first_extra, **extra}, force=force)
    done = merged.done()
    for rec in records:
        if (str(rec["problem_id"]), int(rec.get("sample_index", 0))) not in done:
            merged.append(rec)
    if filters is None:
        built = ((runs[0].summary() or {}).get("dataset") or {}).get("info", {}).get("filters")
        filters = FilterConfig.from_dict(built or runs[0].header.get("filters", {}))
    stats = {
        "shards": shards,
        "shards_missing": missing,
        "duplicate_keys": duplicate_keys,
        "duplicate_problems": len(dropped),
        "records": len(merged.records()),
    }
    models = tuple(sorted({str(m) for r in runs for m in r.header.get("models", [])}))
    info = DatasetInfo(models=models, extra={"merge": stats})
    data = build_dataset(merged.path, merged.records(), filters, info)
    summary = {"merge": stats, "dataset": data}
    merged.write_summary(summary)
    return summary
