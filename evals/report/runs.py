"""Load run folders for the report pages: records, summary, mode, per-problem verdicts."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mathagent.agent.grading.voting import Sample, Weights, weighted_vote
from mathagent.evals.report.settings import config_of, run_mode
from mathagent.evals.runs import RunDir
from mathagent.evals.summary import regrade, summarize


def status_of(rec: dict[str, Any]) -> str:
    """``correct``, ``wrong`` or ``error`` (the sample failed: backend error, no trace)."""
    if rec.get("status") == "failed":
        return "error"
    return "correct" if rec.get("correct") else "wrong"


@dataclass
class Verdict:
    """One run's outcome on one problem: the vote over its samples, graded."""

    n: int
    """Samples of the problem in the run."""
    n_correct: int
    voted: str | None
    """The answer the run's weighted vote picks (the only sample's answer when k = 1)."""
    correct: bool
    """Whether the voted answer is right (the vote winner's own grade)."""


@dataclass
class LoadedRun:
    path: Path
    name: str
    header: dict[str, Any]
    records: list[dict[str, Any]]
    """Sorted by (problem_id, sample_index)."""
    summary: dict[str, Any]
    mode: str
    grading_dataset: str
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    bad_lines: list[Any] = field(default_factory=list)
    """Corrupt ``samples.jsonl`` lines the reader left out (line number, reason), when it reports them."""
    regraded: list[dict[str, Any]] = field(default_factory=list)
    """Records whose recorded verdict today's grader overturns (shown with today's verdict; the
    folder is not written: a report only reads)."""

    @property
    def k(self) -> int:
        return int(self.summary.get("overall", {}).get("k") or 1)


def _vote_weights(header: dict[str, Any], summary: dict[str, Any]) -> Any:
    """The weights the run voted with: ``header.vote_weights`` (calibrated or explicit) when recorded,
    else the summary's, else the defaults."""
    vw = header.get("vote_weights")
    if isinstance(vw, dict) and isinstance(vw.get("weights"), str):
        try:
            return Weights.parse(vw["weights"])
        except ValueError:
            pass
    return Weights.from_dict(summary["weights"]) if summary.get("weights") else Weights()


def _sort_key(pid: str) -> tuple[int, Any]:
    return (0, int(pid)) if pid.isdigit() else (1, pid)


def load_run(path: str | Path, name: str | None = None) -> LoadedRun:
    """Read a run folder; the summary is recomputed when ``summary.json`` is missing or stale."""
    try:
        run = RunDir.read(path)
    except json.JSONDecodeError as e:  # the header (its message names no file)
        raise ValueError(f"{Path(path) / 'header.json'}: not valid JSON ({e.msg}, line {e.lineno})") from None
    records = sorted(
        run.records(), key=lambda r: (_sort_key(str(r["problem_id"])), int(r.get("sample_index", 0)))
    )
    # a run written under an older grader is shown with today's verdicts, as eval would resume it
    records, regraded = regrade(records)
    cfg = config_of(run.header)
    grading = run.header.get("identity", {}).get("grading_dataset") or "math"
    try:
        summary = run.summary()
    except (json.JSONDecodeError, UnicodeDecodeError):  # derived data: recompute it
        summary = None
    if summary is None or summary.get("n_samples") != len(records) or regraded:
        summary = summarize(records, k=cfg.get("k"), weights=cfg.get("weights"), dataset=grading)
    loaded = LoadedRun(
        path=run.path,
        name=name or run.path.name,
        header=run.header,
        records=records,
        summary=summary,
        mode=run_mode(run.header),
        grading_dataset=grading,
    )
    weights = _vote_weights(run.header, summary)
    prune = bool((summary.get("prune") or {}).get("on"))
    loaded.bad_lines = list(getattr(run, "bad_lines", []) or [])
    loaded.regraded = regraded
    by_problem: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_problem[str(r["problem_id"])].append(r)
    for pid, recs in by_problem.items():
        n_correct = sum(bool(r.get("correct")) for r in recs)
        if len(recs) == 1:
            voted, correct = recs[0].get("answer"), bool(recs[0].get("correct"))
        else:
            vote = weighted_vote(
                [
                    Sample(
                        r.get("answer"),
                        r.get("verification_state"),
                        ran_code=r.get("ran_code", True),
                        fabricated_output=r.get("fabricated_output", False),
                    )
                    for r in recs
                ],
                weights,
                dataset=grading,
                prune_candidates=prune,
            )
            voted = vote.winner
            correct = vote.winner_index is not None and bool(recs[vote.winner_index].get("correct"))
        loaded.verdicts[pid] = Verdict(len(recs), n_correct, voted, correct)
    return loaded


def display_names(paths: list[Path]) -> list[str]:
    """Short, distinct names for run folders: the folder name, with parents added until unique."""
    depth = 1
    while True:
        names = ["/".join(p.resolve().parts[-depth:]) for p in paths]
        if len(set(names)) == len(names) or depth > 8:
            return names if len(set(names)) == len(names) else [f"{n} ({i + 1})" for i, n in enumerate(names)]
        depth += 1
