"""Problem interpolation (MathCodeInstruct's D1): new problems between an easy and a hard seed.

For each of ``n`` seeded (easy, hard) pairs the model is asked, with ``agent/prompts/interpolate.md``,
for one new problem harder than the easy one and easier than the hard one. Each reply is parsed and
checked; candidates are records of a resumable run folder (``OUT/interpolate/``), so a killed run
goes on where it stopped. A candidate is accepted when it:

* parses (some text after ``New problem:``, or the whole reply; no ``\\boxed`` answer in it);
* does not leak an evaluation test set: word 3-gram Jaccard < :data:`dedup.LEAK_JACCARD` with every
  GSM8K test and MATH test problem and no shared :data:`dedup.LEAK_NGRAM`-word n-gram;
* is not a near-duplicate of a seed problem (Jaccard >= :data:`dedup.PROBLEM_JACCARD`);
* is not a near-duplicate of a candidate accepted before it (candidates are decided in id order
  after generation, so the outcome does not depend on concurrency).

Accepted problems are written to ``OUT/problems.jsonl`` (no gold: the agreement filter decides) and
the statistics, including the overlap with the test sets, to ``OUT/interpolation.json``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mathagent.agent.backends.base import Backend, BackendError, GenerationParams
from mathagent.agent.prompts import load_prompt
from mathagent.evals.datasets import DatasetError, Problem, load_problems
from mathagent.evals.runs import RunDir
from mathagent.training import dedup

log = logging.getLogger(__name__)

PROBLEMS_FILE = "problems.jsonl"
STATS_FILE = "interpolation.json"
CANDIDATES_DIR = "interpolate"
SOURCE = "interpolated"
JACCARD_BINS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.01)

_MARKER = re.compile(r"new problem\s*[:：]\s*", re.IGNORECASE)
_ECHO = re.compile(r"\W*problem\s+[AB]\b", re.IGNORECASE)
_TAIL = re.compile(r"\n\s*(?:\*\*)?(?:solution|answer|hint|explanation)s?\b.*", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class InterpolationConfig:
    """How candidates are generated and checked (stored in the candidates' run header)."""

    n: int
    """Number of (easy, hard) pairs, i.e. candidate problems asked for."""
    seed: int = 0
    """Seeds the pair draw and the sampling seed of candidate ``i`` (``seed + i``)."""
    temperature: float = 0.8
    max_tokens: int = 400
    leak_jaccard: float = dedup.LEAK_JACCARD
    leak_ngram: int = dedup.LEAK_NGRAM
    problem_jaccard: float = dedup.PROBLEM_JACCARD
    min_words: int = 8
    """A reply with fewer words is not a problem."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_prompt(easy: str, hard: str) -> list[dict[str, str]]:
    """The chat messages asking for one interpolated problem."""
    template = load_prompt("interpolate").text
    return [
        {"role": "user", "content": template.replace("{easy}", easy.strip()).replace("{hard}", hard.strip())}
    ]


def prompt_hash() -> str:
    return load_prompt("interpolate").sha256[:16]


def parse_problem(text: str, min_words: int = 8) -> str | None:
    """The new problem in a model reply, or None when the reply holds none (or gives its answer away)."""
    text = (text or "").strip()
    markers = list(_MARKER.finditer(text))
    m = markers[-1] if markers else None
    if m is not None:
        text = text[m.end() :]
    text = _TAIL.sub("", text).strip().strip("*").strip()
    text = re.sub(r"^(?:problem\s*[:：]\s*)", "", text, flags=re.IGNORECASE).strip()
    if "\\boxed" in text or len(text.split()) < min_words:
        return None
    if _ECHO.match(text):  # it restated (and usually solved) one of the two seeds instead of a new problem
        return None
    return text


def draw_pairs(
    easy: Sequence[Problem], hard: Sequence[Problem], n: int, seed: int
) -> list[tuple[Problem, Problem]]:
    """``n`` (easy, hard) pairs drawn with a seeded generator (the same for every run with this seed)."""
    if not easy or not hard:
        raise ValueError("interpolation needs at least one easy and one hard problem")
    rng = random.Random(seed)
    return [(rng.choice(list(easy)), rng.choice(list(hard))) for _ in range(n)]


def test_set_index(long_n: int = dedup.LEAK_NGRAM) -> tuple[dedup.NearDupIndex, dict[str, int]]:
    """An index of the evaluation test sets (GSM8K test, MATH test or MATH-500) for the leakage check."""
    index = dedup.NearDupIndex(long_n=long_n)
    sizes: dict[str, int] = {}
    for name in ("gsm8k", "math", "math500"):
        if name == "math500" and "math" in sizes:
            continue  # MATH-500 is a subset of the 5000-problem MATH test set
        try:
            probs = load_problems(name)
        except DatasetError as e:
            log.info("leakage check: %s not available (%s)", name, e)
            continue
        index.add_all((f"{name}:{p.id}", p.question) for p in probs)
        sizes[name] = len(probs)
    return index, sizes


def candidate_record(
    i: int, easy: Problem, hard: Problem, reply: str | None, error: str | None, cfg: InterpolationConfig
) -> dict[str, Any]:
    problem = parse_problem(reply or "", cfg.min_words) if reply is not None else None
    return {
        "problem_id": f"i{i:06d}",
        "sample_index": 0,
        "status": "failed" if error else "ok",
        "error": error,
        "easy_id": easy.id,
        "hard_id": hard.id,
        "reply": reply,
        "question": problem,
    }


async def generate_candidates(
    pairs: Sequence[tuple[Problem, Problem]],
    backend_for: Callable[[str], Backend],
    run: RunDir,
    cfg: InterpolationConfig,
    *,
    concurrency: int = 4,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> int:
    """Ask for every pending candidate; each finished one is appended durably. Returns how many ran."""
    keys = [(f"i{i:06d}", 0) for i in range(len(pairs))]
    pending = set(run.pending(keys, retry_failed=True))
    sem = asyncio.Semaphore(max(1, concurrency))

    async def one(i: int) -> None:
        easy, hard = pairs[i]
        params = GenerationParams(temperature=cfg.temperature, max_tokens=cfg.max_tokens, seed=cfg.seed + i)
        async with sem:
            try:
                out = await backend_for(f"i{i:06d}").generate(
                    build_prompt(easy.question, hard.question), params
                )
                rec = candidate_record(i, easy, hard, out[0].text if out else "", None, cfg)
            except BackendError as e:
                rec = candidate_record(i, easy, hard, None, f"backend error: {e}", cfg)
            run.append(rec)
        if on_record:
            on_record(rec)

    todo = [i for i in range(len(pairs)) if keys[i] in pending]
    await asyncio.gather(*(one(i) for i in todo))
    return len(todo)


def _bin(x: float) -> str:
    for lo, hi in zip(JACCARD_BINS, JACCARD_BINS[1:], strict=False):
        if lo <= x < hi:
            return f"[{lo:.1f},{min(hi, 1.0):.1f})" if hi <= 1.0 else f"[{lo:.1f},1.0]"
    return "[0.0,0.1)"


def decide(
    candidates: Sequence[dict[str, Any]],
    test_index: dedup.NearDupIndex,
    seed_index: dedup.NearDupIndex,
    cfg: InterpolationConfig,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Accept or reject candidates in id order; returns the accepted rows and the statistics."""
    reasons = {"failed": 0, "unparsable": 0, "test_leak": 0, "duplicate_seed": 0, "duplicate_new": 0}
    leak_by_set: dict[str, int] = {}
    hist: dict[str, int] = {}
    max_test = 0.0
    long_overlaps = 0
    accepted: list[dict[str, Any]] = []
    new_index = dedup.NearDupIndex()
    for c in sorted(candidates, key=lambda r: r["problem_id"]):
        if c.get("status") == "failed":
            reasons["failed"] += 1
            continue
        q = c.get("question")
        if not q:
            reasons["unparsable"] += 1
            continue
        m = test_index.best(q)
        score = m.jaccard if m else 0.0
        hist[_bin(score)] = hist.get(_bin(score), 0) + 1
        max_test = max(max_test, score)
        long_overlaps += bool(m and m.long_overlap)
        if m is not None and (m.jaccard >= cfg.leak_jaccard or m.long_overlap):
            reasons["test_leak"] += 1
            name = m.key.split(":")[0]
            leak_by_set[name] = leak_by_set.get(name, 0) + 1
            log.info(
                "candidate %s leaks %s (jaccard %.2f, long n-gram %s)",
                c["problem_id"],
                m.key,
                m.jaccard,
                m.long_overlap,
            )
            continue
        s = seed_index.best(q)
        if s is not None and s.jaccard >= cfg.problem_jaccard:
            reasons["duplicate_seed"] += 1
            continue
        d = new_index.best(q)
        if d is not None and d.jaccard >= cfg.problem_jaccard:
            reasons["duplicate_new"] += 1
            continue
        new_index.add(c["problem_id"], q)
        accepted.append(
            {
                "id": c["problem_id"],
                "question": q,
                "dataset": SOURCE,
                "source": SOURCE,
                "easy_id": c["easy_id"],
                "hard_id": c["hard_id"],
                "max_test_jaccard": round(score, 4),
            }
        )
    stats = {
        "candidates": len(candidates),
        "accepted": len(accepted),
        "rejected": reasons,
        "test_overlap": {
            "max_jaccard": round(max_test, 4),
            "jaccard_histogram": dict(sorted(hist.items())),
            "shared_long_ngram": long_overlaps,
            "leaks_by_test_set": leak_by_set,
            "rule": f"leak when word 3-gram Jaccard >= {cfg.leak_jaccard} or a shared {cfg.leak_ngram}-gram",
        },
    }
    return accepted, stats


def write_problems(out: Path, accepted: Sequence[dict[str, Any]], stats: dict[str, Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / PROBLEMS_FILE, "w", encoding="utf-8") as f:
        for row in accepted:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    (out / STATS_FILE).write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    return out / PROBLEMS_FILE
