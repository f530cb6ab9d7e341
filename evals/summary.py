"""Summaries of an evaluation run: accuracy, maj@k, weighted vote, pass@k, by level and subject.

Input is the run's sample records (see :func:`mathagent.evals.runner.sample_record`). A failed
sample (backend error) counts as answered ``None``: wrong, and it never wins a vote.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from mathagent.agent.grading import cluster_answers, grader_version, is_equivalent, voting

SCHEMA_VERSION = 1


def regrade(records: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The records with today's verdicts, and the records whose verdict changed (new copies).

    A record judged by another grader (its ``grader`` stamp differs, or it has none: written before
    stamps) is graded again; one this grader judged is kept as it is, so the usual cost is a comparison
    of stamps. A resumed run is then summarised under one grader, not the old one for its first samples
    and the new one for the rest. A changed record gets today's stamp and keeps the verdict it had
    (``regraded_from``); an unchanged one is left as it was (and checked again next time)."""
    version = grader_version()
    out: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    for r in records:
        if r.get("grader") == version or r.get("status") != "ok" or r.get("gold") is None:
            out.append(r)
            continue
        answer = r.get("answer")
        now = answer is not None and bool(
            is_equivalent(str(answer), r["gold"], r.get("dataset") or "generic")
        )
        if now != bool(r.get("correct")):
            r = {**r, "correct": now, "grader": version, "regraded_from": bool(r.get("correct"))}
            changed.append(r)
        out.append(r)
    return out, changed


def _ks(k: int) -> list[int]:
    ks, x = [], 1
    while x < k:
        ks.append(x)
        x *= 2
    return ks + [k]


def _group_metrics(
    groups: dict[str, list[dict[str, Any]]], k: int, weights: Any, dataset: str, prune: bool = False
) -> dict:
    """Metrics over problems -> their records (sorted by sample_index)."""
    problems = list(groups.values())
    n = len(problems)
    if not n:
        return {"n_problems": 0}
    first = sum(bool(recs[0].get("correct")) for recs in problems) / n
    samples = [
        [
            voting.Sample(
                r.get("answer"),
                r.get("verification_state"),
                ran_code=r.get("ran_code", True),
                fabricated_output=r.get("fabricated_output", False),
            )
            for r in recs
        ]
        for recs in problems
    ]
    correct = [[bool(r.get("correct")) for r in recs] for recs in problems]
    kk = min(k, min(len(c) for c in correct))
    rows = voting.vote_accuracy_at_k(
        samples,
        correct,
        ks=_ks(kk),
        weights=weights,
        dataset=dataset,
        cluster_fn=_cluster_fn(dataset),
        prune_candidates=prune,
    )
    top = rows[-1] if rows else None
    return {
        "n_problems": n,
        "accuracy": first,
        "k": kk,
        "maj_at_k": top.majority if top else None,
        "weighted_at_k": top.weighted if top else None,
        "pass_at_k": top.pass_at_k if top else None,
        "by_k": [r.to_dict() for r in rows],
    }


def _cluster_fn(dataset: str):
    def fn(answers: Sequence[str | None]) -> list[int]:
        return cluster_answers(answers, dataset)

    return fn


def summarize(
    records: Sequence[dict[str, Any]],
    *,
    k: int | None = None,
    weights: Any = None,
    dataset: str = "math",
    prune: bool = False,
) -> dict[str, Any]:
    """Build the run summary (written as ``summary.json`` and shown as the final table).

    ``prune``: votes (maj@k, weighted@k) drop pruned samples first (``voting.prune``); the reasons
    are counted over all samples either way (``prune``).
    """
    if weights is None:
        weights = voting.Weights()
    elif isinstance(weights, str):
        weights = voting.Weights.parse(weights)
    by_problem: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_problem[str(r["problem_id"])].append(r)
    for recs in by_problem.values():
        recs.sort(key=lambda r: int(r.get("sample_index", 0)))
    k = k or max((len(v) for v in by_problem.values()), default=1)
    overall = _group_metrics(by_problem, k, weights, dataset, prune)

    def split(field: str) -> dict[str, Any]:
        sub: dict[str, dict[str, list]] = defaultdict(dict)
        for pid, recs in by_problem.items():
            val = recs[0].get(field)
            if val is not None:
                sub[str(val)][pid] = recs
        return {key: _group_metrics(sub[key], k, weights, dataset, prune) for key in sorted(sub)}

    ex = {"cells": 0, "errors": 0, "timeouts": 0, "restarts": 0}
    tokens_in = tokens_out = 0
    time_s = 0.0
    failed: dict[str, int] = defaultdict(int)
    stops: dict[str, int] = defaultdict(int)
    vstates: dict[str, int] = defaultdict(int)
    for r in records:
        for key in ex:
            ex[key] += int(r.get("exec", {}).get(key, 0))
        tokens_in += int(r.get("tokens_in", 0))
        tokens_out += int(r.get("tokens_out", 0))
        time_s += float(r.get("time_s", 0.0))
        stops[str(r.get("stop_reason"))] += 1
        vstates[str(r.get("verification_state") or "none")] += 1
        if r.get("status") == "failed":
            failed[(r.get("error") or "unknown").split(":")[0][:80]] += 1
    return {
        "schema_version": SCHEMA_VERSION,
        "n_samples": len(records),
        "n_failed": sum(failed.values()),
        "failed_reasons": dict(failed),
        "weights": weights.to_dict(),
        "overall": overall,
        "by_level": split("level"),
        "by_subject": split("subject"),
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
        "sample_time_s": round(time_s, 3),
        "exec": ex,
        "stop_reasons": dict(stops),
        "verification_states": dict(vstates),
        "verification": _state_stats(records, dataset),
        "prune": {"on": prune, "reasons": _prune_reasons(records)},
    }


RESULT_FIELDS = (
    "schema_version",
    "n_samples",
    "n_failed",
    "failed_reasons",
    "weights",
    "overall",
    "by_level",
    "by_subject",
    "tokens_in",
    "tokens_out",
    "exec",
    "stop_reasons",
    "verification_states",
    "verification",
    "prune",
    "vote_weights",
    "mode",
)
"""The fields of :func:`eval_summary` that depend only on the records and the run's settings: equal for
the same records however they were produced (one invocation or a resumed crash, shards merged). The
others (``sample_time_s``, ``wall_s``, ``run_dir``, ``counts``) differ by nature."""


def result_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The :data:`RESULT_FIELDS` in which two summaries differ (empty: the same results)."""
    return [k for k in RESULT_FIELDS if a.get(k) != b.get(k)]


def eval_summary(
    records: Sequence[dict[str, Any]],
    *,
    k: int,
    weights: Any,
    dataset: str,
    prune: bool,
    vote_weights: dict[str, Any],
    mode: str,
) -> dict[str, Any]:
    """An evaluation run's summary, the same for one run and for merged shards: :func:`summarize` over
    the records in key order (so the sums do not depend on which sample finished first), the vote
    weights and mode, and weighted@k under calibrated weights when the run used them."""
    records = sorted(records, key=lambda r: (str(r["problem_id"]), int(r.get("sample_index", 0))))
    summary = summarize(records, k=k, weights=weights, dataset=dataset, prune=prune)
    summary["vote_weights"] = dict(vote_weights)
    summary["mode"] = mode
    if vote_weights.get("source") == "calibrated":
        cal = summarize(records, k=k, weights=vote_weights["weights"], dataset=dataset, prune=prune)
        summary["overall"]["weighted_calibrated_at_k"] = cal["overall"].get("weighted_at_k")
    return summary


def run_counts(
    records: Sequence[dict[str, Any]], total: int, invocation: dict[str, int], invocations: int = 1
) -> dict[str, Any]:
    """``summary.counts``: the whole run's state, not only this invocation's.

    ``records``: the run's latest record per key of this run; ``total``: its number of keys;
    ``invocation``: what :func:`mathagent.evals.runner.run_eval_async` returned this time (``ran``,
    ``skipped``, ``failed``); ``invocations``: how many times the run was started (1 + resumes).
    """
    failed = sum(1 for r in records if r.get("status") == "failed")
    return {
        "total": total,
        "done": len(records),
        "ok": len(records) - failed,
        "failed": failed,
        "pending": total - len(records),
        "ran": int(invocation.get("ran", 0)),
        "skipped": int(invocation.get("skipped", 0)),
        "failed_this_invocation": int(invocation.get("failed", 0)),
        "invocations": invocations,
    }


def _prune_reasons(records: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Samples pruning would drop, by reason (a sample counts once, under its first reason)."""
    out: dict[str, int] = defaultdict(int)
    for r in records:
        why = voting.prune_reason(
            voting.Sample(
                r.get("answer"),
                ran_code=r.get("ran_code", True),
                fabricated_output=r.get("fabricated_output", False),
            )
        )
        if why:
            out[why] += 1
    return dict(out)


def _state_stats(records: Sequence[dict[str, Any]], dataset: str) -> dict[str, Any]:
    """Share of T/U/F over finished samples and the precision of each (how often its answer is right)."""
    done = [r for r in records if r.get("status") != "failed"]
    samples = [voting.Sample(r.get("answer"), r.get("verification_state")) for r in done]
    return voting.state_stats(samples, [bool(r.get("correct")) for r in done]).to_dict()


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def summary_rows(summary: dict[str, Any]) -> list[list[str]]:
    """Rows ``[group, n, acc, maj@k, weighted@k, pass@k]`` for a table (overall, levels, subjects)."""
    rows = []

    def add(name: str, m: dict[str, Any]) -> None:
        if m.get("n_problems"):
            rows.append(
                [
                    name,
                    str(m["n_problems"]),
                    _pct(m.get("accuracy")),
                    _pct(m.get("maj_at_k")),
                    _pct(m.get("weighted_at_k")),
                    _pct(m.get("pass_at_k")),
                ]
            )

    add("overall", summary["overall"])
    for lvl, m in summary.get("by_level", {}).items():
        add(f"level {lvl}", m)
    for subj, m in summary.get("by_subject", {}).items():
        add(subj, m)
    return rows
