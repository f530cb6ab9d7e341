"""Answer extraction from model text: boxed answers, "The answer is", GSM8K ``####``, last number.

Order (first hit wins): the last complete ``\\boxed{}`` / ``\\fbox{}`` (nested braces, also ``\\boxed 5``);
the last "answer is ..." / "Final Answer: ..." phrase; the last ``#### N`` line; then, only for data sets
whose policy says so, the last number in the text.
"""

from __future__ import annotations

import re

from mathagent.evals.grading.normalize import find_brace_group, normalize_answer
from mathagent.evals.grading.policy import GradingPolicy, policy_for

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")
_ANSWER_IS_RE = re.compile(
    r"(?:final answer|the answer|answer)\s*(?:is|:|=)\s*(?:[:=]\s*)?(.+?)(?:\s*(?:\n|$)|\.\s+(?=[A-Z])|\.\s*$)",
    re.IGNORECASE,
)
_HASH_RE = re.compile(r"####\s*([^\n]+)")
_NUMBER_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?|-?\.\d+")


def find_boxed(text: str) -> list[str]:
    """Contents of every complete ``\\boxed{...}`` / ``\\fbox{...}`` (and ``\\boxed 5``), in order."""
    out: list[str] = []
    for m in _BOX_RE.finditer(text):
        i = m.end()
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            end = find_brace_group(text, i)
            if end < 0:
                continue  # incomplete box (truncated generation)
            out.append(text[i + 1 : end - 1].strip())
        elif i > m.end():  # "\boxed 5": one token up to whitespace, $ or end
            tok = re.match(r"[^\s$]+", text[i:])
            if tok:
                out.append(tok.group(0).rstrip(".,;"))
    return out


def last_boxed(text: str) -> str | None:
    """The last complete boxed answer, or None."""
    boxes = find_boxed(text)
    return boxes[-1] if boxes else None


def _answer_phrase(text: str) -> str | None:
    hits = list(_ANSWER_IS_RE.finditer(text))
    for m in reversed(hits):
        cand = m.group(1).strip().strip("*").strip()
        if cand.startswith("$") and cand.count("$") >= 2:
            cand = cand[1 : cand.index("$", 1)]
        if cand:
            return cand
    return None


def last_number(text: str) -> str | None:
    """The last number in the text (thousands commas allowed, ``3/4`` kept as a fraction)."""
    nums = _NUMBER_RE.findall(text.replace("\\$", " ").replace("$", " "))
    if not nums:
        return None
    return nums[-1].replace(" ", "").rstrip(",")


def extract_raw(text: str, policy: GradingPolicy) -> str | None:
    """The answer substring as found in ``text`` (not normalized)."""
    if not text:
        return None
    box = last_boxed(text)
    if box is not None:
        return box
    phrase = _answer_phrase(text)
    if phrase is not None:
        return phrase
    hashes = _HASH_RE.findall(text)
    if hashes:
        return hashes[-1].strip()
    if policy.last_number_fallback:
        return last_number(text)
    return None


def extract_answer(text: str, dataset: str | GradingPolicy = "math") -> str | None:
    """The final answer in a model's text, normalized (see ``normalize_answer``); None if there is none."""
    policy = policy_for(dataset)
    raw = extract_raw(text or "", policy)
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
