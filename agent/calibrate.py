"""Verification weights measured per (model, prompts): ``mathagent calibrate`` and the lookup voting uses.

CSV never published its vote weights, and ours were picked on a simulation. Calibration measures them:
on a labelled **train** split, k samples per problem are solved with verification, and for each final
verification state ``s`` (True / Uncertain / False; an unverified sample counts as Uncertain, as in the
vote) the precision ``P(correct | s)`` is estimated and shrunk toward the pooled precision ``p0``::

    p_s = (correct_s + m * p0) / (n_s + m)          m = SHRINK pseudo-samples
    w_s = -log(1 - p_s) = log(1 + p_s / (1 - p_s))   (log of one plus the odds), scaled so max w = 1

Equal precisions give equal weights (plain majority); the more a state separates right from wrong
answers, the sharper the weights; weights are never negative. Small counts stay near equal weights.

Rule: calibrated voting must not lose to majority on held-out data beyond noise. :func:`calibrate`
checks it by two-fold cross-validation over problems (fit on one half, vote on the other); when the
calibrated vote loses to majority by more than one standard error of the paired difference, the saved
weights are majority weights (``fallback``), and the file says why.

The result is saved as JSON in ``$MATHAGENT_CACHE_DIR/calibration/`` (default
``~/.cache/mathagent/calibration``) under the model name and a hash of the system, verify and revise
prompts, shown by ``mathagent model list`` and found by :func:`lookup` for ``solve --k``, the REPL and
``eval``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import zlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mathagent.agent.cache import cache_dir
from mathagent.agent.grading.voting import MAJORITY, Sample, Weights, weighted_vote
from mathagent.agent.prompts import load_prompt

SCHEMA_VERSION = 1
SHRINK = 10.0
"""Pseudo-samples at the pooled precision added to each state (shrinkage toward equal weights)."""
P_MAX = 0.99
"""Precisions are clipped to [1 - P_MAX, P_MAX] so one state cannot take all the weight."""
STATES = ("T", "U", "F")


def calibration_dir() -> Path:
    return cache_dir("calibration")


# ---------------------------------------------------------------- the math (pure)


def state_counts(samples: Sequence[tuple[Any, Any]]) -> dict[str, list[int]]:
    """``(state, correct)`` pairs -> ``{state: [n, correct]}`` for T/U/F (None counts as U, as in the vote)."""
    out = {s: [0, 0] for s in STATES}
    for state, ok in samples:
        key = state if state in ("T", "F") else "U"
        out[key][0] += 1
        out[key][1] += bool(ok)
    return out


def shrunk_precisions(counts: Mapping[str, Sequence[int]], strength: float = SHRINK) -> dict[str, float]:
    """Per-state precision shrunk toward the pooled precision by ``strength`` pseudo-samples."""
    n = sum(c[0] for c in counts.values())
    right = sum(c[1] for c in counts.values())
    p0 = right / n if n else 0.5
    out = {}
    for s in STATES:
        ns, cs = counts.get(s, (0, 0))
        p = (cs + strength * p0) / (ns + strength) if ns + strength > 0 else p0
        out[s] = min(P_MAX, max(1 - P_MAX, p))
    return out


def derive_weights(counts: Mapping[str, Sequence[int]], strength: float = SHRINK) -> Any:
    """Vote weights from per-state counts (module doc): ``-log(1 - p_s)`` scaled to a maximum of 1."""
    p = shrunk_precisions(counts, strength)
    raw = {s: -math.log(1 - p[s]) for s in STATES}
    top = max(raw.values())
    w = {s: round(raw[s] / top, 4) for s in STATES}
    return Weights(w["T"], w["U"], w["F"])


def fold_of(problem_id: str) -> int:
    """The cross-validation fold (0 or 1) of a problem: fixed by its id, so every run splits alike."""
    return zlib.crc32(problem_id.encode("utf-8")) % 2


def crossfit_weights(
    problems: Mapping[str, Sequence[Mapping[str, Any]]], strength: float = SHRINK
) -> list[Any]:
    """Per fold, the weights fitted on the *other* fold's samples (``problems``: id -> records with
    ``verification_state`` and ``correct``), so that voting on a problem never uses its own labels.

    As in :func:`calibrate_records`, samples left unverified because their problem's samples agreed
    are not fitted on: counted as Uncertain, those (mostly right) answers would raise that state's
    precision, although no vote they take part in depends on the weights."""
    counts: list[list[tuple[Any, Any]]] = [[], []]
    for pid, recs in problems.items():
        counts[fold_of(pid)] += [
            (r.get("verification_state"), r.get("correct")) for r in recs if not verification_skipped(r)
        ]
    return [derive_weights(state_counts(counts[1 - f]), strength) for f in (0, 1)]


def heldout_check(problems: dict[str, list[dict[str, Any]]], dataset: str, strength: float = SHRINK) -> dict:
    """Two-fold cross-validation by problem: calibrated weighted vote vs majority on the held-out half.

    ``problems``: problem id -> its sample records (``answer``, ``verification_state``, ``correct``).
    Returns accuracies, the mean paired difference, its standard error and ``loses`` (difference below
    minus one standard error).
    """
    folds: list[dict[str, list[dict[str, Any]]]] = [{}, {}]
    for pid, recs in problems.items():
        folds[fold_of(pid)][pid] = recs
    diffs: list[float] = []
    maj_right = cal_right = 0
    fitted = crossfit_weights(problems, strength)
    fold_weights = [str(w) for w in fitted]
    for f in (0, 1):
        w = fitted[f]
        for recs in folds[f].values():
            samples = [Sample(r.get("answer"), r.get("verification_state")) for r in recs]
            votes = []
            for weights in (MAJORITY, w):
                res = weighted_vote(samples, weights, dataset=dataset)
                votes.append(res.winner_index is not None and bool(recs[res.winner_index].get("correct")))
            maj_right += votes[0]
            cal_right += votes[1]
            diffs.append(float(votes[1]) - float(votes[0]))
    n = len(diffs)
    mean = sum(diffs) / n if n else 0.0
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1) / n) if n > 1 else 0.0
    return {
        "n_problems": n,
        "majority": maj_right / n if n else None,
        "calibrated": cal_right / n if n else None,
        "diff": mean,
        "se": se,
        "fold_weights": fold_weights,
        "loses": bool(n and mean < -se - 1e-12),
    }


# ---------------------------------------------------------------- identity and storage


def prompt_hash(system_prompt: str, verify_prompt: str | None = None) -> str:
    """Hash of the shipped system, verify and revise prompts a configuration runs with (16 hex)."""
    parts = [load_prompt(n).sha256 for n in (system_prompt, verify_prompt or "verify", "revise")]
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:16]


def config_system_prompt(config: Any, format_name: str | None = None) -> str:
    """The system prompt an ``AgentConfig`` runs with: its own, else its format's, else markdown."""
    return config.system_prompt or config.format or format_name or "markdown"


def config_prompt_hash(config: Any, format_name: str | None = None) -> str:
    """:func:`prompt_hash` for an ``AgentConfig`` (:func:`config_system_prompt` and its verify prompt)."""
    return prompt_hash(config_system_prompt(config, format_name), config.verify_prompt)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name) or "model"


@dataclass(frozen=True)
class Calibration:
    """Measured vote weights for one (model, prompts)."""

    model: str
    prompt_hash: str
    weights: dict[str, float]
    """``true``/``uncertain``/``false`` weights actually used (majority when ``fallback``)."""
    counts: dict[str, list[int]]
    """State -> [samples, correct] on the calibration data."""
    precision: dict[str, float]
    """Shrunk precision per state."""
    heldout: dict[str, Any]
    fallback: bool = False
    """The fitted weights lost to majority on held-out problems, so majority weights were saved."""
    fitted: dict[str, float] = field(default_factory=dict)
    """The weights fitted on all the data (before the held-out rule)."""
    source: dict[str, Any] = field(default_factory=dict)
    """Data set, its sha256, k, problems, run folder."""
    created: str = ""
    schema_version: int = SCHEMA_VERSION

    def vote_weights(self) -> Any:
        return Weights.from_dict(self.weights)

    @property
    def weighs_states(self) -> bool:
        """Whether the saved weights tell the states apart: not a majority fallback, and not all equal.
        Only then does a vote have a use for the samples' verification states."""
        return not self.fallback and len(set(self.vote_weights().to_dict().values())) > 1

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})

    def path(self, directory: Path | None = None) -> Path:
        return (directory or calibration_dir()) / f"{_safe(self.model)}--{self.prompt_hash}.json"

    def save(self, directory: Path | None = None) -> Path:
        p = self.path(directory)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, p)
        return p


def verification_skipped(rec: Mapping[str, Any]) -> bool:
    """Whether a sample record went unverified because its problem's samples agreed
    (``eval --verify-contested``): it carries no state, and its problem's vote needs no weights."""
    return bool(((rec.get("trace") or {}).get("meta") or {}).get("verification_skipped"))


def calibrate_records(
    records: Sequence[dict[str, Any]],
    *,
    model: str,
    prompt_hash: str,
    dataset: str = "math",
    strength: float = SHRINK,
    source: dict[str, Any] | None = None,
) -> Calibration:
    """Fit weights on finished sample records (from a run folder) and apply the held-out rule."""
    done = [r for r in records if r.get("status") != "failed"]
    if not done:
        raise ValueError("no finished samples to calibrate on")
    # counted as Uncertain, samples left unverified because their problem's samples agreed would skew
    # that state's precision
    done = [r for r in done if not verification_skipped(r)] or done
    if not any(r.get("verification_state") for r in done):
        raise ValueError("the samples carry no verification state: calibrate needs runs with verification on")
    counts = state_counts([(r.get("verification_state"), r.get("correct")) for r in done])
    fitted = derive_weights(counts, strength)
    by_problem: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in done:
        by_problem[str(r["problem_id"])].append(r)
    for recs in by_problem.values():
        recs.sort(key=lambda r: int(r.get("sample_index", 0)))
    held = heldout_check(by_problem, dataset, strength)
    used = MAJORITY if held["loses"] else fitted
    return Calibration(
        model=model,
        prompt_hash=prompt_hash,
        weights=used.to_dict(),
        counts=counts,
        precision=shrunk_precisions(counts, strength),
        heldout=held,
        fallback=bool(held["loses"]),
        fitted=fitted.to_dict(),
        source={"problems": len(by_problem), "samples": len(done), **(source or {})},
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )


def lookup(model: str | None, prompt_hash_: str, directory: Path | None = None) -> Calibration | None:
    """The saved calibration for (model, prompts), or None (also None for an unreadable file)."""
    if not model:
        return None
    p = (directory or calibration_dir()) / f"{_safe(model)}--{prompt_hash_}.json"
    try:
        return Calibration.from_dict(json.loads(p.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def find(
    model: str | None,
    system_prompt: str | None,
    verify_prompt: str | None = None,
    directory: Path | None = None,
) -> Calibration | None:
    """The saved calibration for ``model`` run with these prompts (``system_prompt``: a prompt or format
    name, None for markdown; ``verify_prompt``: None for the default), or None. A prompt name that does
    not exist has nothing calibrated for it: None too."""
    if not model:
        return None
    try:
        ph = prompt_hash(system_prompt or "markdown", verify_prompt)
    except ValueError:
        return None
    return lookup(model, ph, directory)


def list_calibrations(directory: Path | None = None) -> list[Calibration]:
    d = directory or calibration_dir()
    out = []
    for p in sorted(d.glob("*.json")) if d.is_dir() else []:
        try:
            out.append(Calibration.from_dict(json.loads(p.read_text(encoding="utf-8"))))
        except (OSError, ValueError, TypeError):
            continue
    return out
