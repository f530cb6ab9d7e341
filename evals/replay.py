"""Replay published model traces through the real loop and sandbox, and compare with the publication.

Two formats are read:

* ToRA (``idx, question, gt, code[0], pred[0]``): ``code[0]`` is one whole trace in the markdown
  format (prose, a ```python block, an ```output block, a closing sentence with ``\\boxed{}``).
  Their verdict is their grader's: ``pred[0]`` vs ``gt`` with ToRA's ``math_equal`` rules (numbers
  equal within rel. 1e-4, and ``gt/100`` or ``gt*100`` also accepted: the "x100 quirk").
* MathCoder (``id, debug_result, ground_truth``): blocks with roles text/code/execution. Their verdict
  is the file the row came from (``..._correct`` / ``..._wrong``; rows with ``model_answer`` are wrong).

Each model turn (the text the model generated between two executions) is handed to the scripted
backend; the real agent loop (:func:`mathagent.agent.loop.solve`) parses it, runs every code block in
our sandbox and asks for the next turn. The recorded outputs are never shown to the loop: we compare
them afterwards with what our kernel printed, and grade the final answer with our grader.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mathagent.agent.backends.scripted import ScriptedBackend
from mathagent.agent.config import AgentConfig
from mathagent.agent.formats.mathcoder import END_MESSAGE, blocks, steps_from_debug_result
from mathagent.agent.grading import extract_answer, gold_answer, is_equivalent
from mathagent.agent.trace import StepKind, Trace
from mathagent.evals.runner import solve_with_loop
from mathagent.sandbox.aio import reserve_threads
from mathagent.sandbox.base import ExecResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Published:
    """One published pass@1 accuracy (greedy decoding, one sample), with where it was published."""

    model: str
    dataset: str
    """Our data-set name: ``gsm8k`` or ``math``."""
    accuracy: float
    """Percent."""
    source: str


_TORA_SRC = "ToRA (arXiv:2309.17452), results table in microsoft/ToRA README.md @ 10fe71a"
_MC_SRC = "MathCoder (arXiv:2310.03731), Table 2"
PUBLISHED: tuple[Published, ...] = (
    Published("ToRA-7B", "gsm8k", 68.8, _TORA_SRC),
    Published("ToRA-7B", "math", 40.1, _TORA_SRC),
    Published("ToRA-Code-7B", "gsm8k", 72.6, _TORA_SRC),
    Published("ToRA-Code-7B", "math", 44.6, _TORA_SRC),
    Published("ToRA-13B", "gsm8k", 72.7, _TORA_SRC),
    Published("ToRA-13B", "math", 43.0, _TORA_SRC),
    Published("ToRA-Code-13B", "gsm8k", 75.8, _TORA_SRC),
    Published("ToRA-Code-13B", "math", 48.1, _TORA_SRC),
    Published("ToRA-Code-34B", "gsm8k", 80.7, _TORA_SRC),
    # the README's 51.0 is the released outputs' score (the first paper version printed 50.8)
    Published("ToRA-Code-34B", "math", 51.0, _TORA_SRC),
    Published("ToRA-70B", "gsm8k", 84.3, _TORA_SRC),
    Published("ToRA-70B", "math", 49.7, _TORA_SRC),
    Published("MathCoder-L-7B", "gsm8k", 64.2, _MC_SRC),
    Published("MathCoder-CL-7B", "gsm8k", 67.8, _MC_SRC),
    Published("MathCoder-L-13B", "gsm8k", 72.6, _MC_SRC),
    Published("MathCoder-CL-13B", "gsm8k", 74.1, _MC_SRC),
    Published("MathCoder-CL-34B", "gsm8k", 81.7, _MC_SRC),
    Published("MathCoder-CL-34B", "math", 45.2, _MC_SRC + " and abstract"),
    Published("MathCoder-L-70B", "gsm8k", 83.9, _MC_SRC + " and abstract"),
)
"""Published scores we can cite. A model or data set not listed here gets no published score (the
report prints none rather than another model's figure); ``mathagent replay --published`` supplies one."""


def published_for(model: str | None, dataset: str | None) -> Published | None:
    """The published result for this model and data set, or None."""
    if not model or not dataset:
        return None
    key = (model.lower(), dataset.lower())
    return next((p for p in PUBLISHED if (p.model.lower(), p.dataset) == key), None)


@dataclass(frozen=True)
class FileIdentity:
    """Which model wrote a trace file and on which data set, as far as the file tells."""

    model: str | None
    """E.g. ``ToRA-Code-34B``; None when neither the file name nor its rows say."""
    dataset: str | None
    """``gsm8k`` or ``math``; None when unknown."""
    evidence: str
    """Where the data set was read from: ``file name``, ``rows`` or ``unknown``."""

    @property
    def policy(self) -> str:
        """The grading policy for the file's answers (an unknown data set is graded as ``math``,
        which accepts every GSM8K-style number too, but never falls back to a stray last number)."""
        return self.dataset or "math"


_TORA_MODEL = re.compile(r"(?<![a-z])tora-?(code-?)?(\d+)b(?![a-z])")
_MC_MODEL = re.compile(r"(?<![a-z])mathcoder-?(cl|l)-?(\d+)b(?![a-z])")


def _model_from_name(text: str) -> str | None:
    t = text.lower().replace("_", "-")
    if m := _MC_MODEL.search(t):
        return f"MathCoder-{m.group(1).upper()}-{m.group(2)}B"
    if m := _TORA_MODEL.search(t):
        return f"ToRA-{'Code-' if m.group(1) else ''}{m.group(2)}B"
    return None


def _dataset_from_name(text: str) -> str | None:
    words = set(re.split(r"[^a-z0-9]+", text.lower()))
    if "gsm8k" in words:
        return "gsm8k"
    if words & {"math", "math500"}:
        return "math"
    return None


def _dataset_from_rows(rows: Sequence[dict[str, Any]]) -> str | None:
    """GSM8K solutions end in ``#### N``; MATH rows carry ``level``/``type`` or boxed solutions."""
    votes: Counter[str] = Counter()
    for row in rows:
        gt_raw = row.get("ground_truth")
        gt: dict[str, Any] = gt_raw if isinstance(gt_raw, dict) else {}
        solution = str(row.get("gt_cot") or gt.get("solution") or row.get("solution") or "")
        if "level" in row or "type" in row or "\\boxed" in solution:
            votes["math"] += 1
        elif "####" in solution or "<<" in solution:
            votes["gsm8k"] += 1
    return votes.most_common(1)[0][0] if votes else None


def identify_file(path: str | Path, rows: Sequence[dict[str, Any]] = ()) -> FileIdentity:
    """The model and data set of a trace file: its name and its two parent folders' names (as the
    published layouts ``tora-code-34b-v1.0/gsm8k/test_tora_....jsonl`` and
    ``MathCoder-L-7b/MATH/MATH_test_result-....jsonl`` give them), then its rows."""
    p = Path(path).resolve() if Path(path).exists() else Path(path)
    name = "/".join(p.parts[-3:])
    model = _model_from_name(name)
    meta = next((str(r["model"]) for r in rows if isinstance(r.get("model"), str)), None)
    if model is None and meta:
        model = _model_from_name(meta) or meta
    dataset, evidence = _dataset_from_name(Path(name).name) or _dataset_from_name(name), "file name"
    if dataset is None:
        dataset, evidence = _dataset_from_rows(rows), "rows"
    return FileIdentity(model, dataset, evidence if dataset else "unknown")


_TORA_CODE = re.compile(r"```python\n(.*?)```", re.S)
_TORA_OUT = re.compile(r"```output\n(.*?)```", re.S)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass(frozen=True)
class ReplayItem:
    """One published trace, split into what the model wrote and what the executor printed."""

    source: str
    """``tora`` or ``mathcoder``."""
    problem_id: str
    question: str
    gold: str
    turns: tuple[str, ...]
    """What the scripted backend serves: the whole published trace, recorded outputs included (the
    backend cuts it at the format's stop strings and drops each recorded output; the loop appends
    our own)."""
    codes: tuple[str, ...]
    """The code blocks, in order."""
    recorded: tuple[str | None, ...]
    """The recorded output per code block (None: the trace has no output for it)."""
    their_pred: str | None
    their_correct: bool
    format: str
    """The loop format that speaks these turns: ``markdown`` or ``mathcoder``."""
    dataset: str | None = "gsm8k"
    """The data set the file was identified as (None: unknown; graded with the ``math`` policy)."""
    model: str | None = None
    """The model the file was identified as (None: unknown)."""

    @property
    def policy(self) -> str:
        return self.dataset or "math"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- loading -------------------------------------------------------------------------------------
def _num(s: Any) -> float | None:
    try:
        return float(str(s).replace(",", "").replace("$", "").strip().rstrip("."))
    except (TypeError, ValueError):
        return None


def tora_equal(pred: str | None, gt: str) -> bool:
    """ToRA's numeric verdict: rel. 1e-4, with gt/100 and gt*100 also accepted."""
    a, b = _num(pred), _num(gt)
    if a is not None and b is not None:
        return any(math.isclose(a, x, rel_tol=1e-4) for x in (b / 100, b, b * 100))
    return pred is not None and str(pred).strip() == str(gt).strip()


def tora_item(row: dict[str, Any], dataset: str = "gsm8k") -> ReplayItem:
    text = row["code"][0]
    codes = [m.group(1).rstrip("\n") for m in _TORA_CODE.finditer(text)]
    recorded: list[str | None] = [m.group(1).rstrip("\n") for m in _TORA_OUT.finditer(text)]
    recorded += [None] * (len(codes) - len(recorded))
    pred = row.get("pred", [None])[0]
    score = row.get("score")  # their own verdict, in their MATH (and later) output files
    if isinstance(score, list) and score and isinstance(score[0], bool):
        their_ok = score[0]
    else:
        their_ok = tora_equal(pred, str(row["gt"]))
    return ReplayItem(
        "tora",
        str(row["idx"]),
        row["question"],
        str(row["gt"]),
        (text,),
        tuple(codes),
        tuple(recorded),
        pred,
        their_ok,
        "markdown",
        dataset,
    )


def mathcoder_item(row: dict[str, Any], their_correct: bool, dataset: str = "gsm8k") -> ReplayItem:
    question, steps = steps_from_debug_result(row["debug_result"])
    codes: list[str] = []
    recorded: list[str | None] = []
    for s in steps:
        if s.kind is StepKind.CODE:
            codes.append(s.content)
            recorded.append(None)
        elif s.kind is StepKind.EXECUTION and recorded and recorded[-1] is None:
            recorded[-1] = s.content
    their = None if their_correct else row.get("model_answer")
    return ReplayItem(
        "mathcoder",
        str(row["id"]),
        question or row.get("question", ""),
        gold_answer(row["ground_truth"], "math" if dataset == "math" else "generic"),
        (blocks(steps) + END_MESSAGE,),
        tuple(codes),
        tuple(recorded),
        str(their) if their is not None else None,
        their_correct,
        "mathcoder",
        dataset,
    )


def load_replay_file(
    path: str | Path,
    limit: int | None = None,
    *,
    model: str | None = None,
    dataset: str | None = None,
) -> list[ReplayItem]:
    """Read a ToRA or MathCoder trace file (format auto-detected by its fields).

    The model and data set are identified from the file (:func:`identify_file`) unless given.
    """
    path = Path(path)
    rows: list[tuple[int, dict[str, Any]]] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if limit is not None and len(rows) >= limit:
                break
            if not line.strip():
                continue
            try:
                rows.append((lineno, json.loads(line)))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
    ident = identify_file(path, [r for _, r in rows[:200]])
    model = model or ident.model
    dataset = dataset or ident.dataset
    items: list[ReplayItem] = []
    for lineno, row in rows:
        if "code" in row and "idx" in row:
            item = tora_item(row, dataset or "math")
        elif "debug_result" in row:
            wrong = "model_answer" in row or path.stem.endswith("_wrong")
            item = mathcoder_item(row, their_correct=not wrong, dataset=dataset or "math")
        else:
            raise ValueError(f"{path}:{lineno}: neither a ToRA nor a MathCoder trace row")
        items.append(dataclasses.replace(item, dataset=dataset, model=model))
    return items


# -- output comparison ---------------------------------------------------------------------------
MATHCODER_EMPTY = "<empty_execution>"
"""What MathCoder's executor recorded for a cell that printed nothing."""


def derive_output(ex: ExecResult, source: str) -> str:
    """What the published executor would have printed for this result."""
    if ex.timed_out:
        return "TimeoutError"
    if ex.error is not None:
        if source == "tora":  # ToRA keeps the last traceback line
            return f"{ex.error.ename}: {ex.error.evalue}"
        return _ANSI.sub("", ex.error.traceback or f"{ex.error.ename}: {ex.error.evalue}")
    parts = [ex.stdout.rstrip("\n")] if ex.stdout.strip() else []
    if ex.result is not None:
        parts.append(ex.result)
    out = "\n".join(parts).strip()
    if not out and source == "mathcoder":
        return MATHCODER_EMPTY
    return out


_NUM = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def _nums(s: str) -> list[float]:
    return [float(x) for x in _NUM.findall(s)]


def _ename(s: str) -> str | None:
    m = re.search(r"\b([A-Za-z_.]*(?:Error|Exception|Interrupt))\b", _ANSI.sub("", s))
    return m.group(1).split(".")[-1] if m else None


def classify(recorded: str | None, ours: str, ex: ExecResult | None, code: str) -> str:
    """Category of the difference between the recorded and the re-derived output."""
    if ex is None:
        return "not_executed"
    if recorded is None:
        return "no_recorded_output"
    r, o = recorded.strip(), ours.strip()
    if r == o:
        return "identical"
    if " ".join(r.split()) == " ".join(o.split()):
        return "whitespace"
    r_err, o_err = _ename(r) if ("Error" in r or "Traceback" in r) else None, None
    if ex.timed_out or "Timed Out" in r or "TimeoutError" in r:
        return "timeout"
    if ex.error is not None:
        o_err = ex.error.ename
    if r_err or o_err:
        return "error_same" if r_err == o_err else "error_differs"
    if re.search(r"\brandom\b|np\.random|shuffle|uuid|time\.time|datetime\.now", code):
        return "randomness"
    rn, on = _nums(r), _nums(o)
    if (
        rn
        and len(rn) == len(on)
        and all(math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9) for a, b in zip(rn, on, strict=True))
    ):
        return "float_format"
    if len(r) > len(o) and (r.startswith(o) or "..." in r):
        return "truncated"
    return "other"


IDENTICAL = ("identical",)
EQUIVALENT = ("identical", "whitespace", "float_format", "error_same")


# -- results -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReplayResult:
    """One replayed trace, graded by us, beside the publication's verdict."""

    source: str
    problem_id: str
    gold: str
    our_answer: str | None
    our_correct: bool
    their_pred: str | None
    their_correct: bool
    outputs: tuple[dict[str, Any], ...] = ()
    """Per code block: ``category``, ``recorded``, ``ours``."""
    why: str | None = None
    """Why our verdict differs from theirs (None when they agree)."""
    error: str | None = None
    time_s: float = 0.0
    trace: dict[str, Any] | None = field(default=None, compare=False)
    dataset: str | None = "gsm8k"
    """The data set the file was identified as; its answers were graded with that policy."""
    model: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["outputs"] = list(self.outputs)
        return d


def explain(item: ReplayItem, ours: str | None, our_ok: bool, categories: Sequence[str]) -> str | None:
    """Why our verdict differs from the publication's."""
    if our_ok == item.their_correct:
        return None
    a, g = _num(item.their_pred), _num(item.gold)
    if item.their_correct and not our_ok:
        if a is not None and g is not None and not math.isclose(a, g, rel_tol=1e-4):
            if any(math.isclose(a, x, rel_tol=1e-4) for x in (g / 100, g * 100)):
                return "their x100 acceptance (pred is gold*100 or gold/100)"
        if a is not None and g is not None and a != g and abs(a - g) < 0.01 + 1e-12:
            return "their 0.01 tolerance"
        if a is not None and g is not None and a != g and math.isclose(a, g, rel_tol=1e-4):
            return "their relative tolerance 1e-4"
        if any(c not in EQUIVALENT for c in categories):
            return "our re-execution differs (" + ",".join(c for c in categories if c not in EQUIVALENT) + ")"
        if ours is None:
            return "we extracted no answer"
        return f"our grader rejects {ours!r} vs gold {item.gold!r}"
    # we accept, they rejected
    if "no_recorded_output" in categories:
        why = (
            "their trace stops after the code, with no recorded output; our run of it prints the gold answer"
        )
        if item.their_pred and "boxed" in item.their_pred + item.question and _num(item.their_pred) is None:
            why += " (their extractor took the words after 'boxed' in the problem text as the answer)"
        return why
    if any(c not in EQUIVALENT for c in categories):
        return "our re-execution differs and gives the gold answer"
    if item.source == "mathcoder":
        return f"their extraction/grader rejected it (their answer {item.their_pred!r}); ours reads {ours!r}"
    return f"their extraction {item.their_pred!r} vs ours {ours!r}"


def group_key(r: ReplayResult) -> str:
    """One report section per identified (model, data set): ``ToRA-70B gsm8k``, ``mathcoder ?``."""
    return f"{r.model or r.source} {r.dataset or '?'}"


def build_report(
    results: Sequence[ReplayResult],
    wall_s: float | None = None,
    *,
    published: float | None = None,
) -> dict[str, Any]:
    """Accuracy beside the published score, disagreements with reasons, and output-match shares.

    One section per identified (model, data set). The published score comes from :data:`PUBLISHED`
    (None when the model or data set is unknown or not listed), or from ``published`` when given.
    """
    out: dict[str, Any] = {"sources": {}}
    for key in sorted({group_key(r) for r in results}):
        rs = [r for r in results if group_key(r) == key]
        source, model, dataset = rs[0].source, rs[0].model, rs[0].dataset
        n = len(rs)
        cats = Counter(o["category"] for r in rs for o in r.outputs)
        compared = sum(v for k, v in cats.items() if k not in ("no_recorded_output", "not_executed"))
        same = cats.get("identical", 0)
        equiv = sum(cats.get(k, 0) for k in EQUIVALENT)
        diffs = [
            {
                "problem_id": r.problem_id,
                "gold": r.gold,
                "ours": r.our_answer,
                "theirs": r.their_pred,
                "our_correct": r.our_correct,
                "their_correct": r.their_correct,
                "why": r.why,
            }
            for r in rs
            if r.why
        ]
        cited = published_for(model, dataset)
        if published is not None:
            score, cite = published, "given with --published"
        else:
            score, cite = (cited.accuracy, cited.source) if cited else (None, None)  # type: ignore[assignment]
        out["sources"][key] = {
            "source": source,
            "model": model,
            "dataset": dataset,
            "n": n,
            "our_accuracy": 100 * sum(r.our_correct for r in rs) / n if n else None,
            "their_accuracy_on_these": 100 * sum(r.their_correct for r in rs) / n if n else None,
            "published_accuracy": score,
            "published_source": cite,
            "disagreements": len(diffs),
            "we_accept_they_reject": sum(1 for d in diffs if d["our_correct"]),
            "they_accept_we_reject": sum(1 for d in diffs if not d["our_correct"]),
            "why_counts": dict(Counter(_why_key(d["why"]) for d in diffs)),
            "code_blocks": sum(cats.values()),
            "outputs_compared": compared,
            "output_identical_share": same / compared if compared else None,
            "output_equivalent_share": equiv / compared if compared else None,
            "output_categories": dict(cats),
            "replay_errors": sum(1 for r in rs if r.error),
            "diff_rows": diffs,
        }
    if wall_s is not None:
        out["wall_s"] = round(wall_s, 2)
    return out


def _why_key(why: object) -> str:
    if not why:
        return ""
    why = str(why)
    return why.split(" (")[0].split(":")[0] if "rejects" not in why else "our grader rejects"


def report_table(report: dict[str, Any]) -> list[list[str]]:
    """Rows for a readable table: one per source."""
    rows = []
    for s in report["sources"].values():
        rows.append(
            [
                s["model"] or f"unknown ({s['source']})",
                s["dataset"] or "unknown",
                str(s["n"]),
                f"{s['our_accuracy']:.1f}",
                f"{s['their_accuracy_on_these']:.1f}",
                "none" if s["published_accuracy"] is None else f"{s['published_accuracy']}",
                str(s["disagreements"]),
                "-" if s["output_identical_share"] is None else f"{100 * s['output_identical_share']:.1f}",
                "-" if s["output_equivalent_share"] is None else f"{100 * s['output_equivalent_share']:.1f}",
            ]
        )
    return rows


REPORT_HEADER = [
    "model",
    "data set",
    "n",
    "ours %",
    "theirs %",
    "published %",
    "disagree",
    "out identical %",
    "out equiv %",
]


def result_from_trace(item: ReplayItem, trace: Trace, time_s: float = 0.0) -> ReplayResult:
    """Compare a replayed trace's executions with the recorded outputs and grade its answer."""
    execs = [s for s in trace.steps if s.kind is StepKind.EXECUTION]
    code_steps = [s for s in trace.steps if s.kind is StepKind.CODE]
    outputs = []
    for i, rec in enumerate(item.recorded):
        ex = execs[i].execution if i < len(execs) else None
        code = code_steps[i].content if i < len(code_steps) else item.codes[i]
        ours = derive_output(ex, item.source) if ex is not None else ""
        outputs.append({"category": classify(rec, ours, ex, code), "recorded": rec, "ours": ours})
    answer = trace.final_answer
    if answer is None:
        last_text = next((s.content for s in reversed(trace.steps) if s.kind is StepKind.TEXT), "")
        answer = extract_answer(last_text, item.policy)
    ok = answer is not None and is_equivalent(answer, item.gold, item.policy)
    why = explain(item, answer, ok, [str(o["category"]) for o in outputs])
    return ReplayResult(
        item.source,
        item.problem_id,
        item.gold,
        answer,
        ok,
        item.their_pred,
        item.their_correct,
        tuple(outputs),
        why,
        trace.error,
        time_s,
        trace.to_dict(),
        item.dataset,
        item.model,
    )


# -- running -------------------------------------------------------------------------------------
def replay_config(cell_timeout: float = 10.0) -> Any:
    """Agent settings for replays: no verification (published traces have none), generous limits."""
    return AgentConfig(
        verify=False,
        max_rounds=64,
        max_text_blocks=64,
        max_tokens=1 << 16,
        context_budget=1 << 24,
        cell_timeout=cell_timeout,
        temperature=0.0,
    )


async def replay_one(item: ReplayItem, provider: Any, config: Any) -> ReplayResult:
    """Feed one published trace through the scripted backend into the real loop."""
    import time

    backend = ScriptedBackend(item.turns, default_format=item.format, on_exhausted="empty")
    cfg = dataclasses.replace(config, format=item.format)
    t0 = time.perf_counter()
    trace = await solve_with_loop(item.question, backend, provider, cfg, problem_id=item.problem_id)
    return result_from_trace(item, trace, time.perf_counter() - t0)


async def replay_async(
    items: Sequence[ReplayItem],
    provider: Any,
    *,
    concurrency: int = 4,
    cell_timeout: float = 10.0,
    on_result: Any = None,
) -> list[ReplayResult]:
    """Replay ``items`` with up to ``concurrency`` trajectories at once; results in input order."""
    import asyncio

    reserve_threads(concurrency)  # a thread per trajectory for its blocking sandbox calls
    config = replay_config(cell_timeout)
    sem = asyncio.Semaphore(max(1, concurrency))
    results: list[ReplayResult | None] = [None] * len(items)

    async def one(i: int, item: ReplayItem) -> None:
        async with sem:
            try:
                r = await replay_one(item, provider, config)
            except Exception as e:  # noqa: BLE001 - one broken row must not end the replay
                log.exception("replay of %s %s failed", item.source, item.problem_id)
                r = ReplayResult(
                    item.source,
                    item.problem_id,
                    item.gold,
                    None,
                    False,
                    item.their_pred,
                    item.their_correct,
                    why=None,
                    error=f"{type(e).__name__}: {e}",
                    dataset=item.dataset,
                    model=item.model,
                )
        results[i] = r
        if on_result:
            on_result(r)

    await asyncio.gather(*(one(i, it) for i, it in enumerate(items)))
    return [r for r in results if r is not None]


def write_replay_report(report: dict[str, Any], results: Sequence[ReplayResult], out_dir: Path) -> Path:
    """``replay_report.json`` (+ ``replay_results.jsonl`` with every trace) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "replay_report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    with open(out_dir / "replay_results.jsonl", "w", encoding="utf-8") as f:
        for r in results:
            f.write(json.dumps(r.to_dict(), ensure_ascii=False) + "\n")
    return out_dir / "replay_report.json"
