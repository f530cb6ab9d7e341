"""Shards of one run, and merging them back (``eval --shard i/n``, ``mathagent eval merge``).

A shard keeps the problems whose stable hash (sha256 of the id) is ``i`` modulo ``n``, so every machine
computes the same split with no coordination; ``generate --shard`` uses the same :class:`Shard`.

:func:`merge_eval_runs` joins evaluation shards into one run folder, strictly: the folders must be
shards of one run (their identities equal once the fields shards may differ in,
:data:`EVAL_SHARD_FIELDS`, are set aside), each shard ``i/n`` given once, all ``n`` present, and each
shard finished (a record for every sample of its problems). Otherwise :class:`MergeError` says which
shards or samples are missing or overlap. The merged folder's summary is computed by the same
function a single run uses (:func:`mathagent.evals.summary.eval_summary`), over the same records.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mathagent.evals.runs import RunDir, config_digest, identity_diff, key_of

EVAL_SHARD_FIELDS = (
    ("config", "extra", "shard"),
    ("config", "base_url"),
    ("config", "extra", "script"),
    ("dataset", "path"),
)
"""Identity fields allowed to differ between shards of one evaluation: the shard itself, the server
(each machine may reach the shared endpoint by its own URL), and file paths (the data's sha256 and
the config's data set name still have to agree)."""


class MergeError(ValueError):
    """The folders are not the complete, disjoint shards of one run."""


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (``0 <= index < count``)."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str | None) -> Shard:
        if not text:
            return cls()
        try:
            i, n = (int(x) for x in text.split("/"))
        except ValueError:
            raise ValueError(f"--shard expects i/n (e.g. 0/4), got {text!r}") from None
        if n < 1 or not 0 <= i < n:
            raise ValueError(f"--shard {text}: need 0 <= i < n")
        return cls(i, n)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, problem_id: str) -> bool:
        return shard_of(problem_id, self.count) == self.index


def shard_of(problem_id: str, count: int) -> int:
    """Stable shard of a problem id: sha256 of the id, modulo ``count`` (same on every machine)."""
    return int.from_bytes(hashlib.sha256(str(problem_id).encode()).digest()[:8], "big") % max(1, count)


def without_fields(identity: dict[str, Any], paths: Sequence[Sequence[str]]) -> dict[str, Any]:
    """``identity`` without the (nested) fields ``paths``."""
    out = copy.deepcopy(identity)
    for path in paths:
        d: Any = out
        for part in path[:-1]:
            d = d.get(part, {}) if isinstance(d, dict) else {}
        if isinstance(d, dict):
            d.pop(path[-1], None)
    return out


def _shard_of_header(header: dict[str, Any]) -> Shard:
    return Shard.parse(header.get("identity", {}).get("config", {}).get("extra", {}).get("shard"))


def check_eval_shards(runs: Sequence[RunDir]) -> dict[str, Any]:
    """Validate ``runs`` as the shards of one evaluation; returns ``{"identity", "shards", "total"}``
    (the shared identity without shard fields, the shard specs, the run's problem count)."""
    if not runs:
        raise MergeError("nothing to merge")
    for r in runs:
        if r.bad_lines:
            raise MergeError(
                f"{r.path}/samples.jsonl has {len(r.bad_lines)} corrupt line(s): re-run that shard's "
                "`mathagent eval` command in its folder; it moves them aside and re-runs them"
            )
        ident = r.header.get("identity", {})
        if ident.get("kind") or "grading_dataset" not in ident:
            raise MergeError(
                f"{r.path} is not a `mathagent eval` run folder"
                + (" (a generation run: use `mathagent generate merge`)" if ident.get("kind") else "")
            )
        if "problems" not in r.header:
            raise MergeError(
                f"{r.path}: its header does not list its problems (written before --shard existed)"
            )
    ref = without_fields(runs[0].header["identity"], EVAL_SHARD_FIELDS)
    for r in runs[1:]:
        other = without_fields(r.header["identity"], EVAL_SHARD_FIELDS)
        if other != ref:
            raise MergeError(
                f"{r.path} is not a shard of the same run as {runs[0].path} "
                f"(config {config_digest(other)} vs {config_digest(ref)}: {identity_diff(ref, other)})"
            )
    shards = [_shard_of_header(r.header) for r in runs]
    counts = sorted({s.count for s in shards})
    if len(counts) > 1:
        raise MergeError(f"shards of different counts: {', '.join(str(s) for s in shards)}")
    n = counts[0]
    problems: list[str] = []
    by_index: dict[int, list[Path]] = {}
    for r, s in zip(runs, shards, strict=True):
        by_index.setdefault(s.index, []).append(r.path)
    overlap = {i: paths for i, paths in by_index.items() if len(paths) > 1}
    missing = [f"{i}/{n}" for i in range(n) if i not in by_index]
    errors = []
    if overlap:
        errors.append(
            "overlapping: "
            + "; ".join(
                f"shard {i}/{n} given {len(p)} times ({', '.join(map(str, p))})" for i, p in overlap.items()
            )
        )
    if missing:
        errors.append(f"missing shards: {', '.join(missing)}")
    if errors:
        raise MergeError(" and ".join(errors))
    totals = {int(r.header["problems"]["total"]) for r in runs}
    if len(totals) > 1:
        raise MergeError(f"the shards were cut from different problem lists (totals {sorted(totals)})")
    k = int(ref["config"]["k"])
    owner: dict[str, Path] = {}
    for r, s in zip(runs, shards, strict=True):
        ids = [str(i) for i in r.header["problems"]["ids"]]
        for pid in ids:
            if pid in owner:
                raise MergeError(f"overlapping: problem {pid!r} is in {owner[pid]} and in {r.path}")
            if not s.holds(pid):
                raise MergeError(f"{r.path}: problem {pid!r} does not belong to shard {s}")
            owner[pid] = r.path
        problems += ids
        done = r.done()
        pending = [f"{pid}#{i}" for pid in ids for i in range(k) if (pid, i) not in done]
        if pending:
            shown = ", ".join(pending[:10]) + (" ..." if len(pending) > 10 else "")
            raise MergeError(
                f"{r.path} (shard {s}) is unfinished: {len(pending)} of {len(ids) * k} samples missing "
                f"({shown}); run its `mathagent eval` command again to finish it"
            )
    total = totals.pop()
    if len(problems) != total:
        raise MergeError(f"the shards hold {len(problems)} problems, the run has {total}")
    return {"identity": ref, "shards": [str(s) for s in shards], "total": total, "problems": problems}


def merged_records(runs: Sequence[RunDir], problems: Sequence[str], k: int) -> list[dict[str, Any]]:
    """The records of the run's samples (problem order of the shards, then sample index)."""
    keys = {(pid, i) for pid in problems for i in range(k)}
    recs = [rec for r in runs for rec in r.records() if key_of(rec) in keys]
    return sorted(recs, key=key_of)
