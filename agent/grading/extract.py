"""Answer extraction from model text: boxed answers, "The answer is", GSM8K ``####``, last number.

Order (first hit wins): the last complete ``\\boxed{}`` / ``\\fbox{}`` (nested braces, also ``\\boxed 5``);
the last "answer is ..." / "Final Answer: ..." phrase; the last ``#### N`` line; then, only for data sets
whose policy says so, the last number in the text.
"""

from __future__ import annotations

import re

from mathagent.agent.grading.normalize import find_brace_group, normalize_answer
from mathagent.agent.grading.policy import GradingPolicy, policy_for

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")
_ANSWER_IS_RE = re.compile(
    r"(?:final answer|the answer|answer)\s*(?:is\b|:|=|\s(?=\$|\\\(|\\\[))\s*(?:[:=]\s*)?"
    r"(.+?)(?:\s*(?:\n\n|$)|\.\s+(?=[A-Z])|\.\s*$)",
    re.IGNORECASE | re.DOTALL,
)
_HASH_RE = re.compile(r"####\s*([^\n]+)")
_NUMBER_RE = re.compile(
    r"(?<![A-Za-z\d#])(?:-?\d{1,3}(?:(?:,| )\d{3})+(?![\d])(?:\.\d+)?|-?\d+(?:\.\d+)?(?:\s*/\s*\d+)?|-?\.\d+)"
)


def _boxes(text: str) -> list[tuple[int, int, str]]:
    """``(start, end, content)`` of every complete box, in order."""
    out: list[tuple[int, int, str]] = []
    for m in _BOX_RE.finditer(text):
        i = m.end()
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            end = find_brace_group(text, i)
            if end < 0:
                continue  # incomplete box (truncated generation)
            out.append((m.start(), end, text[i + 1 : end - 1].strip()))
        elif i > m.end():  # "\boxed 5": one token up to whitespace, $ or end
            tok = re.match(r"[^\s$]+", text[i:])
            if tok:
                out.append((m.start(), i + tok.end(), tok.group(0).rstrip(".,;")))
    return out


def find_boxed(text: str) -> list[str]:
    """Contents of every complete ``\\boxed{...}`` / ``\\fbox{...}`` (and ``\\boxed 5``), in order."""
    return [c for _, _, c in _boxes(text)]


_CONNECTIVE_RE = re.compile(
    r"\\(?:text|textbf|mathrm|mbox)\s*\{[^{}]*\}|\\(?:quad|qquad|[,;:! ()\[\]])|\\\\|[$&,.;:\s]"
    r"|\b(?:and|or|respectively)\b|(?:[a-zA-Z](?:_\{?\w+\}?)?|\([a-z, ]+\))\s*=",
)


def _is_connective(sep: str) -> bool:
    return len(sep) <= 80 and not _CONNECTIVE_RE.sub("", sep).strip()


def final_boxed(text: str) -> str | None:
    """The final answer in boxes: the last box, joined with the boxes just before it when only
    connective text (``and``, commas, ``\\quad``, ``$``, ``x =``) separates them: ``$\\boxed{-2}$ and
    $\\boxed{1}$`` gives ``-2, 1``. Empty boxes are skipped: "put the answer in \\(\\boxed{}\\):" is an
    instruction being echoed, not an answer."""
    boxes = [b for b in _boxes(text) if b[2]]
    if not boxes:
        return None
    run = [boxes[-1]]
    for prev in reversed(boxes[:-1]):
        if _is_connective(text[prev[1] : run[0][0]]):
            run.insert(0, prev)
        else:
            break
    return ", ".join(c for _, _, c in run)


def last_boxed(text: str) -> str | None:
    """The last complete, non-empty boxed answer (alone), or None."""
    boxes = [b for b in _boxes(text) if b[2]]
    return boxes[-1][2] if boxes else None


def _answer_phrase(text: str, depth: int = 0) -> str | None:
    hits = list(_ANSWER_IS_RE.finditer(text))
    for m in reversed(hits):
        cand = m.group(1).strip().strip("*").strip()
        if depth < 3:
            inner = _answer_phrase(cand, depth + 1)
            if inner is not None:
                cand = inner
        cand = re.sub(r"\.?\s*I hope it is correct\.?$", "", cand).strip()
        if cand:
            return cand
    return None


def last_number(text: str) -> str | None:
    """The last number in the text (thousands commas allowed, ``3/4`` kept as a fraction)."""
    nums = _NUMBER_RE.findall(text.replace("\\$", " ").replace("$", " "))
    if not nums:
        return None
    return nums[-1].replace(" ", "").rstrip(",")


def output_value(output: str | None) -> str | None:
    """A code output that is one value (one short line, e.g. ``4.0`` or ``\\frac{3}{4}``); else None."""
    if not output:
        return None
    value = output.strip()
    if not value or "\n" in value or len(value) > 100 or "Error" in value or "Traceback" in value:
        return None
    return value


def stated_answer(text: str) -> str | None:
    """The answer ``text`` states in so many words, not found by a fallback: the final ``\\boxed{}``,
    "the answer is ...", or ``#### ...``; None when the text only contains numbers or math spans (a
    revision cut off mid-sentence, or one that ends on ``$2 \\times 20 = 40$``)."""
    text = text or ""
    box = final_boxed(text)
    if box is not None:
        return box
    phrase = _answer_phrase(text)
    if phrase is not None:
        return _unwrap_math(phrase)
    hashes = _HASH_RE.findall(text)
    return hashes[-1].strip() if hashes else None


def extract_raw(text: str, policy: GradingPolicy, last_output: str | None = None) -> str | None:
    """The answer substring as found in ``text`` (not normalized).

    Order: the final ``\\boxed{}``, "the answer is ...", ``#### ...``; then, when the text states no
    answer that way, ``last_output`` (the last code output) if it is a single value, as tool-using
    models often end with a sentence like "5 cars drove through in the first 15 minutes." after
    printing 5; then the last math span (non-numeric sets) or the last number.
    """
    if not text and not last_output:
        return None
    text = text or ""
    stated = stated_answer(text)
    if stated is not None:
        return stated
    value = output_value(last_output)
    if value is not None and (not policy.numeric_only or _NUMBER_RE.search(value)):
        return value
    if not policy.numeric_only:
        span = last_math_span(text)
        if span is not None:
            return span
    if policy.last_number_fallback:
        return last_number(text)
    return None


_MATH_SPAN_RE = re.compile(r"\$\$(.+?)\$\$|\\\[(.+?)\\\]|\\\((.+?)\\\)|(?<!\\)\$(.+?)(?<!\\)\$", re.DOTALL)


def last_math_span(text: str) -> str | None:
    """Content of the last ``$...$`` / ``$$...$$`` / ``\\(...\\)`` / ``\\[...\\]`` span in the text, joined
    with the spans just before it when only connective text separates them (``$1$ and $2$``)."""
    spans = [
        (m.start(), m.end(), next(g for g in m.groups() if g is not None).strip())
        for m in _MATH_SPAN_RE.finditer(text)
    ]
    spans = [sp for sp in spans if sp[2]]
    if not spans:
        return None
    run = [spans[-1]]
    for prev in reversed(spans[:-1]):
        sep = text[prev[1] : run[0][0]]
        if sep.strip() and _is_connective(sep):
            run.insert(0, prev)
        else:
            break
    return ", ".join(c for _, _, c in run)


_PROSE_RE = re.compile(r"[A-Za-z]{2,}\s+[A-Za-z]{2,}\s+[A-Za-z]{2,}")


def _unwrap_math(phrase: str) -> str:
    """A phrase that is prose ("The largest $n$ is 34") gives its last number or math span."""
    bare = _MATH_SPAN_RE.sub(" ", phrase)
    if _PROSE_RE.search(re.sub(r"\\text\{[^{}]*\}", " ", bare)):
        num = last_number(bare)
        if num is not None:
            return num
        span = last_math_span(phrase)
        if span is not None:
            return span
    return _unwrap_single_span(phrase)


def _unwrap_single_span(phrase: str) -> str:
    """``$9$`` / ``\\(9\\)`` inside an answer phrase -> ``9``; a sentence around one math span -> that span."""
    span = last_math_span(phrase)
    if span is not None and len(_MATH_SPAN_RE.findall(phrase)) == 1:
        rest = _MATH_SPAN_RE.sub("", phrase).strip(" .")
        if not re.search(r"\d", rest):
            return span
    return phrase


def extract_answer(
    text: str, dataset: str | GradingPolicy = "math", last_output: str | None = None
) -> str | None:
    """The final answer in a model's text, normalized (see ``normalize_answer``); None if there is none.

    ``last_output``: the output of the last code cell, used when the text states no answer explicitly
    (see :func:`extract_raw`).
    """
    policy = policy_for(dataset)
    raw = extract_raw(text or "", policy, last_output)
    if raw is None:
        return None
    ans = normalize_answer(raw, strip_units=policy.strip_units)
    if (
        policy.numeric_only
        and ans
        and not re.fullmatch(r"[-+]?[\d.]+(?:/\d+)?|\\frac\{-?\d+\}\{\d+\}|-\\frac\{\d+\}\{\d+\}", ans)
    ):
        # numeric data sets: a phrase like "42 apples in total" -> its first number
        num = last_number(ans) if policy.last_number_fallback else None
        if num is not None and _NUMBER_RE.search(ans) and len(_NUMBER_RE.findall(ans)) == 1:
            return normalize_answer(num)
    return ans or None
