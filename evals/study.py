"""The method study: tables of modes, voting and verification, computed from ordinary run folders.

``bench/method_study.py`` is the command; this module holds the computation so a test can recompute
the committed tables from committed run folders. Every figure is per problem (a problem is the unit the
bootstrap resamples) and every cell says how many problems it covers, so partial runs are usable.

Cells of a (model, data set) group:

* k = 1 accuracy per mode. ``cot`` / ``pot`` / ``loop`` / ``loop+verify`` come from runs of that mode
  (sample 0 of each problem). A ``loop+verify`` run also gives ``loop (before verification)``: the answer
  its trace held before the verification phase (the first verification round's answer), graded again.
  A ``pot`` run in which some sample ran no program also gives ``pot, or prose answer if no program``:
  a pot sample whose model wrote no program at all (it answered in prose) counts its stated answer, as
  the loop would, so the table separates "the program was wrong" from "the model did not follow the
  one-program format".
* At k: maj@k, weighted@k (default weights), weighted@k (calibrated, when weights are given), maj@k
  with pruning, pass@k, over the problems whose k samples are all done.
* Verification: share of T/U/F and precision P(correct | state); revisions that fixed / broke an answer.
* Cost per sample: tokens (in + out), model calls, wall seconds.
* Grading: every answer is graded again by today's grader (runs started at different revisions are
  compared under one grader); the answers whose verdict changed are listed under the coverage table.
  Likewise a loop+verify record ends as today's revision rules end it (:func:`todays_ending`): a
  revision that boxed a verdict word or stated no answer keeps the refuted answer. That is exactly
  what today's code records for the same sample (the trajectory up to that revision is the same, and
  the phase stops there); cost figures stay as recorded.
* Coverage (once, above the groups): samples finished of those each run asks for, and the hours the
  rest takes at the pace measured so far; runs the study plans but has not started (``not_started``)
  are listed too, at the pace of the same model's k = 1 run of the same mode on the same data set, and
  each group names its missing runs, so an absent table reads as "not run yet", never as "left out".
* Paired comparisons on the problems both sides cover: difference with a bootstrap 95% interval and
  McNemar's exact p-value.
"""

from __future__ import annotations

import json
import logging
import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mathagent.agent.calibrate import crossfit_weights, fold_of, verification_skipped
from mathagent.agent.grading import extract_answer, grader_version, is_equivalent
from mathagent.agent.grading.extract import stated_answer
from mathagent.agent.grading.voting import MAJORITY, Sample, Weights, weighted_vote
from mathagent.agent.modes import run_mode
from mathagent.agent.verification import is_verdict_word
from mathagent.evals.runs import RunDir
from mathagent.evals.stats import bootstrap_diff, bootstrap_mean, mcnemar, min_detectable_diff
from mathagent.evals.summary import _cluster_fn, regrade

log = logging.getLogger(__name__)

MODE_ORDER = ("cot", "pot", "loop", "loop+verify")
LOOP_BEFORE = "loop (before verification)"
"""The k = 1 row read from a loop+verify trace's answer before its verification phase."""
POT_TEXT = "pot, or prose answer if no program"
"""The k = 1 row of a pot run that grades a sample without any program by the answer its text states."""


@dataclass(frozen=True)
class PlannedRun:
    """A run the study plans whose folder does not exist yet (``bench/method_study.py``'s plan)."""

    name: str
    model: str
    dataset: str
    mode: str
    k: int
    samples: int
    """``--limit`` x k."""


@dataclass
class Run:
    """One run folder, read for the study."""

    path: Path
    model: str
    dataset: str
    mode: str
    k: int
    temperature: float
    grading: str
    verify_prompt: str = "verify"
    """The verification prompt the run used (``--verify-prompt``)."""
    limit: int | None = None
    """Problems the run asks for (``--limit``); None: the whole data set."""
    concurrency: int | None = None
    """Trajectories its last invocation ran at once (the header's ``limits``); None: not recorded."""
    revision: str = ""
    """The git revision the run was started at (the header's ``git_revision``, short)."""
    problems: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Problem id -> its finished records, by sample index (``correct`` graded again, see regraded)."""
    regraded: list[dict[str, Any]] = field(default_factory=list)
    """Records whose stored verdict today's grader reverses: problem, sample, answer, gold, now."""
    rederived: list[dict[str, Any]] = field(default_factory=list)
    """Records today's revision rules end differently: problem, sample, recorded answer, today's answer."""


def load_run(path: Path) -> Run:
    rd = RunDir.read(path)
    ident = rd.header.get("identity", {})
    cfg = ident.get("config", {})
    run = Run(
        path=Path(path),
        model=str(cfg.get("model") or "?"),
        dataset=str(ident.get("dataset", {}).get("name") or cfg.get("dataset") or "?"),
        mode=run_mode(rd.header),
        k=int(cfg.get("k", 1)),
        temperature=float(cfg.get("temperature", 0.0)),
        grading=str(ident.get("grading_dataset") or "math"),
        verify_prompt=str(((cfg.get("extra") or {}).get("agent") or {}).get("verify_prompt") or "verify"),
        limit=int(cfg["limit"]) if cfg.get("limit") is not None else None,
        concurrency=(rd.header.get("limits") or {}).get("concurrency"),
        revision=str(rd.header.get("git_revision") or "")[:7],
    )
    records = []
    for r in rd.records():
        if (ending := todays_ending(r)) is not None:
            run.rederived.append(
                {"problem": str(r["problem_id"]), "sample": int(r.get("sample_index", 0)),
                 "recorded": r.get("answer"), "today": ending[0]}
            )  # fmt: skip
            today = _grade(ending[0], str(r.get("gold")), r.get("dataset") or run.grading)
            r = {**r, "answer": ending[0], "verification_state": ending[1], "correct": today,
                 "grader": grader_version()}  # fmt: skip
        records.append(r)
    records, changed = regrade(records)
    run.regraded = [
        {"problem": str(r["problem_id"]), "sample": int(r.get("sample_index", 0)), "answer": str(r["answer"]),
         "gold": str(r["gold"]), "now": bool(r["correct"])}
        for r in changed
    ]  # fmt: skip
    for r in records:
        run.problems.setdefault(str(r["problem_id"]), []).append(r)
    for recs in run.problems.values():
        recs.sort(key=lambda r: int(r.get("sample_index", 0)))
    return run


def find_runs(roots: Sequence[Path]) -> list[Run]:
    """Every run folder (a folder with ``header.json``) at or one/two levels below each root."""
    seen, out = set(), []
    for root in roots:
        for h in [root / "header.json", *root.glob("*/header.json"), *root.glob("*/*/header.json")]:
            if h.is_file() and h.parent.resolve() not in seen:
                seen.add(h.parent.resolve())
                try:
                    out.append(load_run(h.parent))
                except (OSError, ValueError) as e:
                    log.warning("skipping %s: %s", h.parent, e)
    return out


# ---------------------------------------------------------------- per-record facts


def todays_ending(rec: dict[str, Any]) -> tuple[str | None, str | None] | None:
    """(answer, state) a verified record ends with under today's revision rules
    (:func:`mathagent.agent.verification.verify_and_revise`), or None when that is what it recorded.

    A revision whose answer is a verdict word, or whose prose states no answer, ends the phase with the
    answer it was asked to correct (state False). Each revision is the i-th run of ``revise`` steps in the
    trace (its prose joined as the loop joins a turn's); its answer is the next round's, or the final one.
    """
    trace = rec.get("trace") or {}
    rounds = trace.get("verification") or []
    if not rounds:
        return None
    revisions: list[list[str]] = []
    prev = None
    for step in trace.get("steps") or []:
        phase = step.get("phase")
        if phase == "revise" and prev != "revise":
            revisions.append([])
        if phase == "revise" and step.get("kind") == "text":
            revisions[-1].append(str(step.get("content") or ""))
        prev = phase
    for i, texts in enumerate(revisions[: len(rounds)]):
        answer = rounds[i + 1].get("answer") if i + 1 < len(rounds) else rec.get("answer")
        if answer is None or is_verdict_word(answer) or stated_answer("\n".join(texts)) is None:
            kept = rounds[i].get("answer")
            if kept == rec.get("answer"):
                return None
            return kept, rounds[i].get("state")
    return None


def pre_verification_answer(rec: dict[str, Any]) -> str | None:
    """The answer a record held before its verification phase (its final answer when none ran)."""
    ver = (rec.get("trace") or {}).get("verification") or []
    return ver[0].get("answer") if ver else rec.get("answer")


def _grade(answer: str | None, gold: str, dataset: str) -> bool:
    return answer is not None and bool(is_equivalent(answer, gold, dataset or "math"))


def pre_correct(rec: dict[str, Any], dataset: str) -> bool:
    """Whether the pre-verification answer is right (graded again; the same as ``correct`` if unchanged)."""
    pre = pre_verification_answer(rec)
    if pre == rec.get("answer"):
        return bool(rec.get("correct"))
    return _grade(pre, str(rec.get("gold")), rec.get("dataset") or dataset)


def ran_no_program(rec: dict[str, Any]) -> bool:
    """Whether a sample executed no code at all (a pot sample whose model answered in prose)."""
    steps = (rec.get("trace") or {}).get("steps") or []
    return not rec.get("ran_code") and not any(s.get("kind") == "execution" for s in steps)


def text_answer(rec: dict[str, Any], dataset: str) -> str | None:
    """The answer a record's prose states (its text steps, joined), as the grader extracts it."""
    steps = (rec.get("trace") or {}).get("steps") or []
    text = "\n".join(str(s.get("content") or "") for s in steps if s.get("kind") == "text")
    return extract_answer(text, dataset=rec.get("dataset") or dataset or "math") if text else None


def pot_text_correct(rec: dict[str, Any], dataset: str) -> bool:
    """A pot sample graded as the loop would grade it when it ran no program: by its stated answer."""
    if not ran_no_program(rec):
        return bool(rec.get("correct"))
    return _grade(text_answer(rec, dataset), str(rec.get("gold")), rec.get("dataset") or dataset)


def calls(rec: dict[str, Any]) -> int:
    return int(((rec.get("trace") or {}).get("meta") or {}).get("calls", 0))


def server_of(rec: dict[str, Any]) -> str:
    """The model server a sample ran on, as its trace recorded it (traces before the continuation record,
    and failed samples without a trace, did not say)."""
    meta = (rec.get("trace") or {}).get("meta") or {}
    return str((meta.get("continuation") or {}).get("server") or "not recorded")


# ---------------------------------------------------------------- cells


@dataclass(frozen=True)
class Cell:
    """Per-problem 0/1 (or fractional) scores for one row of a table.

    ``row`` names the row the same way in every run (a cross-fitted vote's label names the weights fitted
    on that run; its row does not); empty means the label. ``kind``: ``"vote"`` for a vote over the k
    samples, ``"pass"`` for pass@k, ``"mean"`` for the samples' mean accuracy (a fraction per problem, so
    McNemar's right/wrong test does not apply to it). ``weighted``: a vote that weighs the samples by
    their verification states (not a majority)."""

    label: str
    scores: dict[str, float]
    note: str = ""
    row: str = ""
    kind: str = "vote"
    weighted: bool = False

    @property
    def name(self) -> str:
        """The row's name across runs."""
        return self.row or self.label

    @property
    def n(self) -> int:
        return len(self.scores)

    def interval(self, seed: int = 0) -> Any:
        return bootstrap_mean(list(self.scores.values()), seed=seed) if self.scores else None


def k1_cells(runs: Sequence[Run]) -> list[Cell]:
    """k = 1 accuracy per mode (sample 0 of each problem); loop+verify runs also give the loop row."""
    cells: dict[str, Cell] = {}

    def put(label: str, scores: dict[str, float], note: str, prefer: bool) -> None:
        """One run per row: a k = 1 run beats sample 0 of a k > 1 run; then the one covering more problems."""
        old = cells.get(label)
        rank = (prefer, len(scores))
        if old is None or rank > (old.note.startswith("k=1 "), old.n):
            cells[label] = Cell(label, scores, note)

    for run in runs:
        first = {
            pid: recs[0] for pid, recs in run.problems.items() if recs and recs[0].get("sample_index", 0) == 0
        }
        note = f"k={run.k} T={run.temperature:g} {run.path.name}"
        prefer = run.k == 1
        tag = "" if run.verify_prompt == "verify" else f" [{run.verify_prompt}]"
        put(run.mode + tag, {p: float(bool(r.get("correct"))) for p, r in first.items()}, note, prefer)
        if run.mode == "loop+verify":
            pre = {p: float(pre_correct(r, run.grading)) for p, r in first.items()}
            put(LOOP_BEFORE + tag, pre, note, prefer)
        if run.mode == "pot" and any(ran_no_program(r) for r in first.values()):  # else the same as pot
            put(
                POT_TEXT, {p: float(pot_text_correct(r, run.grading)) for p, r in first.items()}, note, prefer
            )
    rank = {m: i for i, m in enumerate(["cot", "pot", POT_TEXT, "loop", "loop+verify", LOOP_BEFORE])}
    return sorted(cells.values(), key=lambda c: (rank.get(c.label.split(" [")[0], 9), c.label))


def unverified_label(k: int) -> str:
    """The row of a loop+verify run's k-sample vote taken on the answers from before verification."""
    return f"maj@{k} before verification (the loop's answers)"


def vote_cells(run: Run, weights: Any = None, calibrated: Any = None) -> list[Cell]:
    """maj@k, weighted@k, calibrated weighted@k, cross-fitted weighted@k, maj@k pruned, maj@k of the
    answers before verification (loop+verify runs: the vote ``--mode loop`` would have taken on the same
    samples, for the loop's part of the cost), pass@k and the samples' mean accuracy over problems with
    all k samples.

    The cross-fitted row calibrates on this run itself without leaking: the problems split in two folds
    by id (:func:`~mathagent.agent.calibrate.fold_of`) and each fold votes with weights fitted on the
    other fold's samples (the held-out rule of ``mathagent calibrate``, on the study's own split).
    """
    k = run.k
    full = {p: recs for p, recs in run.problems.items() if len(recs) >= k}
    cf = _cluster_fn(run.grading)
    variants: list[tuple[str, str, Any, bool]] = [
        (f"maj@{k}", "", MAJORITY, False),
        (f"weighted@{k} (default {weights or Weights()})", "", weights or Weights(), False),
    ]
    if calibrated is not None:
        variants.append((f"weighted@{k} (calibrated {calibrated})", "", calibrated, False))
    folds = crossfit_weights({p: recs[:k] for p, recs in full.items()})
    if any(fold_of(p) == 0 for p in full) and any(fold_of(p) == 1 for p in full):
        variants.append(
            (
                f"weighted@{k} (2-fold cross-fit: {folds[0]} / {folds[1]})",
                f"weighted@{k} (2-fold cross-fit)",
                folds,
                False,
            )
        )
    variants.append((f"maj@{k} pruned", "", MAJORITY, True))
    out = []
    for label, row, wv, prune in variants:
        scores = {}
        for pid, recs in full.items():
            w = wv[fold_of(pid)] if isinstance(wv, list) else wv
            samples = [
                Sample(
                    r.get("answer"),
                    r.get("verification_state"),
                    ran_code=r.get("ran_code", True),
                    fabricated_output=r.get("fabricated_output", False),
                )
                for r in recs[:k]
            ]
            res = weighted_vote(samples, w, cluster_fn=cf, prune_candidates=prune)
            scores[pid] = float(res.winner_index is not None and bool(recs[res.winner_index].get("correct")))
        out.append(Cell(label, scores, row=row, weighted=wv is not MAJORITY))
    if run.mode == "loop+verify":  # what `--mode loop` would have voted: the same samples, unverified
        scores = {}
        for pid, recs in full.items():
            pre = [Sample(pre_verification_answer(r), None) for r in recs[:k]]
            res = weighted_vote(pre, MAJORITY, cluster_fn=cf)
            scores[pid] = float(
                res.winner_index is not None and pre_correct(recs[res.winner_index], run.grading)
            )
        out.append(Cell(unverified_label(k), scores))
    out.append(
        Cell(
            f"pass@{k}",
            {p: float(any(r.get("correct") for r in recs[:k])) for p, recs in full.items()},
            kind="pass",
        )
    )
    out.append(
        Cell(
            f"mean accuracy of the {k} samples",
            {p: sum(bool(r.get("correct")) for r in recs[:k]) / k for p, recs in full.items()},
            kind="mean",
        )
    )
    return out


def verification_rows(run: Run) -> dict[str, Any]:
    """State shares and precisions over all finished samples (``skipped``: not verified, as its
    problem's samples agreed); revisions that fixed or broke an answer."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    fixed = broke = revised = 0
    scores: dict[str, list[float]] = defaultdict(list)
    for recs in run.problems.values():
        for r in recs:
            if r.get("status") == "failed":
                continue
            s = r.get("verification_state") or ("skipped" if verification_skipped(r) else "none")
            counts[s][0] += 1
            counts[s][1] += bool(r.get("correct"))
            scores[s].append(float(bool(r.get("correct"))))
            pre = pre_verification_answer(r)
            if pre != r.get("answer"):
                revised += 1
                before, after = pre_correct(r, run.grading), bool(r.get("correct"))
                fixed += (not before) and after
                broke += before and not after
    total = sum(c[0] for c in counts.values())
    return {
        "total": total,
        "states": {
            s: {
                "n": counts[s][0],
                "share": counts[s][0] / total if total else 0.0,
                "precision": bootstrap_mean(scores[s]) if scores[s] else None,
            }
            for s in ("T", "U", "F", "none", "skipped")
            if counts[s][0]
        },
        "revised": revised,
        "fixed": fixed,
        "broke": broke,
    }


def cost_row(run: Run) -> dict[str, Any]:
    recs = [r for rs in run.problems.values() for r in rs if r.get("status") != "failed"]
    n = len(recs) or 1
    return {
        "samples": len(recs),
        "tokens": sum(int(r.get("tokens_in", 0)) + int(r.get("tokens_out", 0)) for r in recs) / n,
        "tokens_out": sum(int(r.get("tokens_out", 0)) for r in recs) / n,
        "calls": sum(calls(r) for r in recs) / n,
        "seconds": sum(float(r.get("time_s", 0.0)) for r in recs) / n,
        "verify_share": verify_share(recs),
    }


def coverage_row(run: Run) -> dict[str, Any]:
    """How far a run is: samples finished of those it asks for (``--limit`` x k), problems with all k
    samples, the median and mean wall seconds of a sample and, at the mean pace, the hours its
    remaining samples take in one stream (a sample's wall time over the trajectories run at once; None
    when the run's size, pace or concurrency is unknown). The mean, not the median: sample times have
    a long tail (a contested k = 4 problem verifies and revises), and the tail is most of the time."""
    finished = [[r for r in rs if r.get("status") != "failed"] for rs in run.problems.values()]
    recs = [r for rs in finished for r in rs]
    planned = run.limit * run.k if run.limit is not None else None
    times = [float(r.get("time_s", 0.0)) for r in recs]
    median = statistics.median(times) if times else None
    mean = statistics.fmean(times) if times else None
    left = None
    if planned is not None and len(recs) >= planned:
        left = 0.0
    elif planned is not None and mean is not None and run.concurrency:
        left = (planned - len(recs)) * mean / run.concurrency / 3600
    return {
        "servers": dict(Counter(map(server_of, recs)).most_common()),
        "done": len(recs),
        "planned": planned,
        "complete": sum(len(rs) >= run.k for rs in finished),
        "median_s": median,
        "mean_s": mean,
        "hours_left": left,
    }


def verify_share(recs: Sequence[dict[str, Any]]) -> float | None:
    """Share of the trajectories' wall time spent verifying and revising (the traces' ``timings``);
    None when no sample verified."""
    total = verify = 0.0
    for r in recs:
        t = (r.get("trace") or {}).get("timings") or {}
        total += float(t.get("total") or 0.0)
        verify += float(t.get("verify") or 0.0)
    return verify / total if verify > 0 and total > 0 else None


def compare(a: Cell, b: Cell) -> dict[str, Any] | None:
    """``a`` minus ``b`` on the problems both cover: bootstrap interval and McNemar's exact test."""
    common = sorted(set(a.scores) & set(b.scores))
    if not common:
        return None
    xa, xb = [a.scores[p] for p in common], [b.scores[p] for p in common]
    m = mcnemar([x >= 0.5 for x in xa], [x >= 0.5 for x in xb])
    return {"a": a.label, "b": b.label, "n": len(common), "diff": bootstrap_diff(xa, xb), "mcnemar": m}


# ---------------------------------------------------------------- the document


def _iv(cell: Cell | None) -> str:
    if cell is None or not cell.scores:
        return "- | 0"
    return f"{cell.interval().fmt()} | {cell.n}"


def _cmp_row(c: dict[str, Any] | None) -> str:
    if c is None:
        return ""
    d, m = c["diff"], c["mcnemar"]
    return f"| {c['a']} − {c['b']} | {c['n']} | {d.fmt()} | {m.only_a} / {m.only_b} | {m.p_value:.3f} |"


def render(
    runs: Sequence[Run],
    *,
    calibrated: dict[str, Any] | None = None,
    command: str = "",
    not_started: Sequence[PlannedRun] = (),
) -> str:
    """The results document (Markdown) for all groups found in ``runs``.

    ``calibrated``: model name -> :class:`~mathagent.agent.grading.voting.Weights` for the calibrated column.
    ``not_started``: planned runs without a folder yet: listed under coverage and in their group.
    """
    groups: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for r in runs:
        groups[(r.model, r.dataset)].append(r)
    lines = ["<!-- generated by bench/method_study.py; do not edit by hand -->", ""]
    if command:
        lines += [f"Regenerate: `{command}`", ""]
    lines += [
        "Accuracies are percent with a bootstrap 95% interval over problems (2000 resamples, seed 0) and the "
        "number of problems each cell covers; comparisons are paired on the problems both sides cover, with "
        "McNemar's exact test (discordant counts a-only / b-only).",
        "",
    ]
    lines += coverage_table(runs, not_started)
    lines += regraded_lines(runs)
    for (model, dataset), rs in sorted(groups.items()):
        rs = sorted(
            rs, key=lambda r: (MODE_ORDER.index(r.mode) if r.mode in MODE_ORDER else 9, r.k, r.path.name)
        )
        n_max = max(len(r.problems) for r in rs)
        lines += [f"## {model} · {dataset}", ""]
        for plan in (p for p in not_started if (p.model, p.dataset) == (model, dataset)):
            lines += [
                f"Not started yet: `{plan.name}` ({plan.mode}, k = {plan.k}, {plan.samples} samples); "
                "its tables will appear here (see coverage for the time it takes).",
                "",
            ]
        lines += [
            f"With {n_max} problems an accuracy near 50% is known to about ±{100 * min_detectable_diff(n_max):.0f} "
            "points; paired differences smaller than that are not resolved.",
            "",
            "### k = 1, by mode",
            "",
            "| mode | accuracy % [95% CI] | problems | source |",
            "|---|---|---|---|",
        ]
        k1 = k1_cells(rs)
        for c in k1:
            lines.append(f"| {c.label} | {_iv(c)} | {c.note} |")
        by = {c.label: c for c in k1}
        loop = "loop" if "loop" in by else LOOP_BEFORE
        pairs = [
            (loop, "cot"),
            ("pot", "cot"),
            (POT_TEXT, "cot"),
            (POT_TEXT, "pot"),
            (loop, "pot"),
            ("loop+verify", LOOP_BEFORE),
            ("loop+verify", "loop"),
        ]
        pairs += [(c.label, "loop+verify") for c in k1 if c.label.startswith("loop+verify [")]
        comps = [compare(by[a], by[b]) for a, b in dict.fromkeys(pairs) if a in by and b in by]
        for run in rs:
            if run.k < 2:
                continue
            cal = (calibrated or {}).get(run.model)
            cells = vote_cells(run, calibrated=cal)
            lines += [
                "",
                f"### k = {run.k}, voting ({run.mode}, T={run.temperature:g}, {run.path.name})",
                "",
                "| vote | accuracy % [95% CI] | problems |",
                "|---|---|---|",
            ]
            lines += [f"| {c.label} | {_iv(c)} |" for c in cells]
            maj, votes = cells[0], [c for c in cells[1:] if c.kind == "vote"]
            comps += [compare(c, maj) for c in votes]
            # what verification adds at k: its weighted votes against the unverified samples' majority
            if before := next((c for c in votes if c.label == unverified_label(run.k)), None):
                comps += [compare(c, before) for c in votes if c.weighted]
        lines += ["", "### paired comparisons", ""]
        real = [c for c in comps if c is not None]
        if real:
            lines += ["| a − b | problems | difference, points [95% CI] | a-only / b-only | McNemar p |"]
            lines += ["|---|---|---|---|---|", *(_cmp_row(c) for c in real)]
        else:
            lines.append("(none: no two cells cover the same problems yet)")
        ver = [(r, verification_rows(r)) for r in rs if r.mode == "loop+verify"]
        if len({r.verify_prompt for r, _ in ver}) > 1:
            lines += ["", *prompt_table(ver)]
        if ver:
            lines += [
                "",
                "### verification",
                "",
                "| run | state | samples | share % | precision % [95% CI] |",
            ]
            lines.append("|---|---|---|---|---|")
            for r, v in ver:
                for s, row in v["states"].items():
                    prec = row["precision"].fmt() if row["precision"] else "-"
                    lines.append(f"| {r.path.name} | {s} | {row['n']} | {100 * row['share']:.1f} | {prec} |")
            lines += ["", "| run | answers changed by revision | fixed | broke |", "|---|---|---|---|"]
            lines += [f"| {r.path.name} | {v['revised']} | {v['fixed']} | {v['broke']} |" for r, v in ver]
        lines += [
            "",
            "### cost per sample",
            "",
            "| run | mode | samples | tokens in+out | tokens out | model calls | seconds | of which verifying % |",
        ]
        lines.append("|---|---|---|---|---|---|---|---|")
        for r in rs:
            cost = cost_row(r)
            share = "-" if cost["verify_share"] is None else f"{100 * cost['verify_share']:.0f}"
            lines.append(
                f"| {r.path.name} | {r.mode} | {cost['samples']} | {cost['tokens']:.0f} | {cost['tokens_out']:.0f} | "
                f"{cost['calls']:.1f} | {cost['seconds']:.1f} | {share} |"
            )
        lines.append("")
    return "\n".join(lines)


def regraded_lines(runs: Sequence[Run]) -> list[str]:
    """What today's revision rules and grading every answer again with today's grader changed."""
    total = sum(len(recs) for r in runs for recs in r.problems.values())
    changed = [(r, g) for r in runs for g in r.regraded]
    rederived = [(r, g) for r in runs for g in r.rederived]
    head = []
    if rederived:
        head = [
            f"{len(rederived)} verified samples end as today's revision rules end them (docs/verification.md: a "
            "revision that boxes a verdict word or states no answer keeps the refuted answer), not as recorded: "
            "today's code stops each of them there, so this is what it records; their cost stays as recorded:",
            "",
            *(
                f"- {r.path.name} {g['problem']}#{g['sample']}: `{g['recorded']}` → `{g['today']}`"
                for r, g in rederived
            ),
            "",
        ]
    lines = [
        "Every answer is graded again by the grader of the revision that wrote this page, so runs started at "
        f"different revisions are compared under one grader: {len(changed)} of {total} verdicts differ from "
        "the ones recorded when the samples ran" + (":" if changed else "."),
        "",
    ]
    for r, g in changed:
        verdict = "wrong → right" if g["now"] else "right → wrong"
        lines.append(
            f"- {r.path.name} {g['problem']}#{g['sample']}: `{g['answer']}` (gold `{g['gold']}`), {verdict}"
        )
    return [*head, *lines, ""] if changed else [*head, *lines]


def pace_of(plan: PlannedRun, runs: Sequence[Run]) -> tuple[Run, float] | None:
    """The run whose mean sample time stands in for a planned run not started: the same model, data
    set and mode (the k = 1 run, or the one with the most samples), with its mean seconds."""
    same = [r for r in runs if (r.model, r.dataset, r.mode) == (plan.model, plan.dataset, plan.mode)]
    best: tuple[Run, float] | None = None
    for r in sorted(same, key=lambda r: (r.k != 1, -sum(len(v) for v in r.problems.values()))):
        mean = coverage_row(r)["mean_s"]
        if mean is not None:
            best = (r, mean)
            break
    return best


def coverage_table(runs: Sequence[Run], not_started: Sequence[PlannedRun] = ()) -> list[str]:
    """Which runs are complete and, for the others, what is left at the pace measured so far; planned
    runs without a folder at the pace of :func:`pace_of`."""
    out = [
        "## coverage",
        "",
        "Samples finished of those each run asks for (`--limit` x k), problems with all k samples, the median "
        "and mean wall time of a sample as recorded (on a shared machine, waiting included), how many trajectories "
        "the run's last invocation ran at once, and the hours the rest takes at the mean pace in one stream (? where the "
        "header does not record it), the revision each run started at, and the model server its samples ran on (as "
        "their traces record it; with the samples of each when a run used more than one). Partial runs count in the "
        "tables below on the problems they cover.",
        "",
        "| run | mode | k | samples done / planned | problems complete | s per sample, median / mean | at once | hours left "
        "| started at | server |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = {r.path.name: coverage_row(r) for r in runs}
    for r in sorted(runs, key=lambda r: r.path.name):
        c = rows[r.path.name]
        planned = "?" if c["planned"] is None else str(c["planned"])
        median = "-" if c["median_s"] is None else f"{c['median_s']:.0f} / {c['mean_s']:.0f}"
        left = (
            "-" if c["hours_left"] is None else ("done" if c["hours_left"] == 0 else f"{c['hours_left']:.1f}")
        )
        at_once = "?" if r.concurrency is None else str(r.concurrency)
        servers = c["servers"]
        server = (
            next(iter(servers), "-")
            if len(servers) <= 1
            else ", ".join(f"{k} {n}" for k, n in servers.items())
        )
        out.append(
            f"| {r.path.name} | {r.mode} | {r.k} | {c['done']} / {planned} | {c['complete']} | {median} | "
            f"{at_once} | {left} | {r.revision or '?'} | {server} |"
        )
    total = sum(c["hours_left"] or 0.0 for c in rows.values())
    unknown = [name for name, c in rows.items() if c["hours_left"] is None]
    for plan in sorted(not_started, key=lambda p: p.name):
        pace = pace_of(plan, runs)
        if pace is None:
            left = "?"
            unknown.append(plan.name)
        else:
            hours = plan.samples * pace[1] / 3600
            total += hours
            left = f"{hours:.1f} (at the pace of {pace[0].path.name}: {pace[1]:.0f} s)"
        out.append(
            f"| {plan.name} | {plan.mode} | {plan.k} | 0 / {plan.samples} | 0 | - | - | {left} | not started | - |"
        )
    if not_started or total:
        rest = f" ({', '.join(unknown)}: unknown)" if unknown else ""
        out += ["", f"Left in all: about {total:.1f} hours of one stream{rest}."]
    return [*out, ""]


def prompt_table(ver: Sequence[tuple[Run, dict[str, Any]]]) -> list[str]:
    """Verification prompts side by side: state shares and precisions, and how far T and F separate."""
    out = [
        "### verification prompts",
        "",
        "| prompt | run | samples | T n / precision % | U n / precision % | F n / precision % | P(T) − P(F) | fixed / broke | s per sample |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r, v in ver:
        cells, prec = [], {}
        for s in ("T", "U", "F"):
            row = v["states"].get(s)
            if row is None:
                cells.append("0 / -")
                continue
            prec[s] = row["precision"].value
            cells.append(f"{row['n']} / {100 * row['precision'].value:.0f}")
        sep = f"{100 * (prec['T'] - prec['F']):+.0f}" if "T" in prec and "F" in prec else "-"
        out.append(
            f"| {r.verify_prompt} | {r.path.name} | {v['total']} | {' | '.join(cells)} | {sep} | "
            f"{v['fixed']} / {v['broke']} | {cost_row(r)['seconds']:.0f} |"
        )
    return out


def load_calibrations(paths: Sequence[Path]) -> dict[str, Any]:
    """Calibration JSON files (``mathagent calibrate``) -> model name -> Weights."""
    out = {}
    for p in paths:
        d = json.loads(Path(p).read_text(encoding="utf-8"))
        out[d["model"]] = Weights.from_dict(d["weights"])
    return out


# ---------------------------------------------------------------- two runs that differ in one thing


def paired_runs(a: Run, b: Run) -> str:
    """Two runs with the same settings on the same problems that differ in one thing outside the run's
    identity (the model server, a build): every vote row and the mean sample accuracy side by side,
    ``b − a`` with a paired bootstrap interval and McNemar's test over the problems both have all k
    samples of, then the verification states and what a sample cost in each (Markdown).

    ``ValueError`` when the runs differ in model, data set, mode, k, temperature or verify prompt: then a
    difference would not be the one thing's."""
    keys = ("model", "dataset", "mode", "k", "temperature", "verify_prompt")
    if diff := [
        f"{key}: {getattr(a, key)!r} vs {getattr(b, key)!r}"
        for key in keys
        if getattr(a, key) != getattr(b, key)
    ]:
        raise ValueError(f"the runs differ in more than one thing ({'; '.join(diff)})")
    common = sorted(
        p for p in a.problems.keys() & b.problems.keys() if min(len(a.problems[p]), len(b.problems[p])) >= a.k
    )
    if not common:
        raise ValueError(f"no problem has all {a.k} samples in both runs")

    def only(run: Run) -> Run:
        return replace(run, problems={p: run.problems[p][: run.k] for p in common})

    a, b = only(a), only(b)
    servers = {
        r.path.name: sorted({server_of(x) for recs in r.problems.values() for x in recs}) for r in (a, b)
    }
    lines = [
        f"{a.model} · {a.dataset} · {a.mode}, k = {a.k}, T = {a.temperature:g}: **a** = `{a.path.name}` "
        f"(server {', '.join(servers[a.path.name])}), **b** = `{b.path.name}` (server "
        f"{', '.join(servers[b.path.name])}), over the {len(common)} problems both have all {a.k} samples of "
        f"(an accuracy near 50% is known to about ±{100 * min_detectable_diff(len(common)):.0f} points on "
        f"{len(common)} problems).",
        "",
        "| row | a % [95% CI] | b % [95% CI] | b − a, points [95% CI] | a-only / b-only | McNemar p |",
        "|---|---|---|---|---|---|",
    ]

    b_cells = {c.name: c for c in vote_cells(b)}
    for ca in vote_cells(a):
        if (cb := b_cells.get(ca.name)) is None:
            continue
        c = compare(cb, ca)
        assert c is not None  # both cover every common problem
        m = c["mcnemar"]
        tested = f"{m.only_b} / {m.only_a} | {m.p_value:.3f}" if ca.kind != "mean" else "- | -"
        lines.append(
            f"| {ca.name} | {ca.interval().fmt()} | {cb.interval().fmt()} | {c['diff'].fmt()} | {tested} |"
        )
    lines += [
        "",
        "| run | samples | T / U / F / none / skipped % | tokens out | model calls | s per sample, mean |",
        "|---|---|---|---|---|---|",
    ]
    for r in (a, b):
        v, cost = verification_rows(r), cost_row(r)
        shares = " / ".join(
            f"{100 * v['states'][s]['share']:.0f}" if s in v["states"] else "0"
            for s in ("T", "U", "F", "none", "skipped")
        )
        lines.append(
            f"| {r.path.name} | {cost['samples']} | {shares} | {cost['tokens_out']:.0f} | {cost['calls']:.1f} | {cost['seconds']:.1f} |"
        )
    return "\n".join(lines) + "\n"
