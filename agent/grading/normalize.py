"""String normalization of answers: LaTeX noise, units, currency, percent, thousands separators.

Pure string functions; no sympy. ``normalize_answer`` is the canonical display / comparison form.
"""

from __future__ import annotations

import re

_BRACE_CMDS = (
    "\\text",
    "\\textbf",
    "\\textnormal",
    "\\textit",
    "\\mathrm",
    "\\mathbf",
    "\\textrm",
    "\\mbox",
    "\\operatorname",
)

# Unit words dropped when they trail a number ("5 cm", "12 \text{ dollars}").
_UNIT_WORDS = (
    "degrees?|degree|cm|centimeters?|meters?|m|km|kilometers?|mm|inches|inch|in|feet|foot|ft|yards?|miles?|"
    "units?|square units|sq units|cubic units|dollars?|cents?|hours?|hrs?|minutes?|mins?|seconds?|secs?|"
    "days?|weeks?|months?|years?|kg|g|grams?|pounds?|lbs?|ounces?|oz|liters?|litres?|ml|gallons?|mph|"
    "points?|percent|percentage|pct|people|students|apples|marbles|books|pages|cookies|miles per hour|sq ft|square feet|"
    "square meters|square inches|square centimeters|cubic feet|cubic inches|cubic centimeters|ways|times"
)
_UNIT_RE = re.compile(r"^(.*?\d[\d.,/]*)\s*(?:\\,|\\;|\\ |~)*\s*(?:" + _UNIT_WORDS + r")\.?$", re.IGNORECASE)
_RATE_RE = re.compile(
    r"^(.*?\d[\d.,]*)\s*(?:\\,|\\;|\\ |~)*\s*(?:(?:"
    + _UNIT_WORDS
    + r")\s*)?(?:/|\bper\b|\ban?\b)\s*(?:"
    + _UNIT_WORDS
    + r")\.?$",
    re.IGNORECASE,
)
"""A rate after a number: "6 hours/day", "6 per hour", "$6/hour", "20 miles an hour" (the number is the answer)."""
_THOUSANDS_FULL_RE = re.compile(r"[-+]?\d{1,3}(?:(?:,|\{,\}|\\,|\\ | )\d{3})+(?:\.\d+)?")


MAX_NORMALIZE_LEN = 4000
"""Longer answers are returned verbatim by ``normalize_answer`` (and only ever compared as strings)."""


def find_brace_group(s: str, start: int) -> int:
    """Index just past the brace group opening at ``s[start] == '{'``; -1 if unbalanced."""
    depth = 0
    i = start
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return -1


def unwrap_command(s: str, cmd: str, keep: bool = True) -> str:
    """Replace ``\\cmd{X}`` by ``X`` (or by nothing when ``keep`` is false), honouring nested braces."""
    out = []
    i = 0
    n = len(cmd)
    while True:
        j = s.find(cmd, i)
        if j < 0:
            out.append(s[i:])
            break
        k = j + n
        # the command must not continue with a letter (\textbf vs \text)
        if k < len(s) and s[k].isalpha():
            out.append(s[i:k])
            i = k
            continue
        while k < len(s) and s[k] == " ":
            k += 1
        if k < len(s) and s[k] == "{":
            end = find_brace_group(s, k)
            if end < 0:
                out.append(s[i:])
                break
            out.append(s[i:j])
            if keep:
                out.append(s[k + 1 : end - 1])
            i = end
        else:
            out.append(s[i:k])
            i = k
    return "".join(out)


def strip_text_units(s: str) -> str:
    """Drop a trailing ``\\text{...}`` / ``\\mbox{...}`` that follows a number (a unit)."""
    m = re.search(
        r"^(.*?[\d}])\s*(?:\\[,;! ]|~|\s)*\\(?:text|mbox|mathrm|textrm|textnormal|textbf|textit)\s*\{\s*[a-zA-Z][a-zA-Z .\-^0-9]*\}\s*$",
        s,
    )
    if m and re.search(r"\d", m.group(1)):
        return m.group(1)
    return s


def strip_thousands(s: str) -> str:
    """``7,425,000`` -> ``7425000``; ``1\\,000`` / ``1 000`` -> ``1000`` — only when the WHOLE answer is one
    such number, so tuples like ``(12,102)`` and lists like ``1,2`` are left alone."""
    t = s.strip()
    if _THOUSANDS_FULL_RE.fullmatch(t):
        return re.sub(r",|\\,|\\ |\s|\{,\}", "", t)
    return s


def normalize_answer(s: str | None, strip_units: bool = True) -> str:
    """Canonical string form of an answer, for display and cheap comparison.

    Removes ``$``/``\\(``, ``\\left``/``\\right``, ``\\dfrac``/``\\tfrac`` (-> ``\\frac``), ``\\!``, spacing
    commands, trailing punctuation, thousands separators, ``\\$``, ``\\%``, degrees and a trailing unit
    (``\\text{ cm}`` or a bare unit word after a number). Keeps the mathematical content otherwise verbatim.
    """
    if s is None:
        return ""
    s = str(s).strip()
    if len(s) > MAX_NORMALIZE_LEN:
        return s  # hostile or garbage: compared verbatim, never regex-scanned
    s = s.replace("\n", " ")
    # outer math delimiters
    for a, b in (("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$")):
        if s.startswith(a) and s.endswith(b) and len(s) >= len(a) + len(b):
            s = s[len(a) : len(s) - len(b)].strip()
    s = s.replace("\\$", "\x00")  # protect escaped dollars from the delimiter removal
    s = s.replace("$", "").replace("\x00", "\\$")
    if "\\begin" not in s:  # a stray line break before a command: "-2 \\\\le x"
        s = re.sub(r"(?<!\\)\\\\(?=[a-zA-Z])", r"\\", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\cfrac", "\\frac")
    s = s.replace("\\left", "").replace("\\right", "")
    s = re.sub(r"\\(?:displaystyle|textstyle|mathstrut|Big|big|Bigg|bigg)(?![a-zA-Z])", "", s)
    s = re.sub(r"(\d)(?:,|\{,\})\\!\s*(?=\d{3})", r"\1,", s)  # 11,\!111 is a thousands separator
    s = re.sub(r"(?<!\\)\\ ", " ", s.replace("\\!", ""))
    s = s.replace("bmatrix", "pmatrix").replace("\\\\ ", "\\\\")
    s = s.replace("\\;", " ").replace("\\,", " ").replace("\\:", " ").replace("\\quad", " ")
    s = s.replace("\\qquad", " ").replace("~", " ")
    s = s.replace("\\le ", "\\leq ").replace("\\ge ", "\\geq ")
    s = re.sub(r"\\lt(?![a-zA-Z])", "<", s)
    s = re.sub(r"\\gt(?![a-zA-Z])", ">", s)
    s = s.replace("<=", "\\leq ").replace(">=", "\\geq ").replace("!=", "\\neq ").replace("≤", "\\leq ")
    s = s.replace("≥", "\\geq ").replace("≠", "\\neq ").replace("\\ne ", "\\neq ")
    s = re.sub(r"\\(?:le|leqslant)(?![a-zA-Z])", r"\\leq", s)
    s = re.sub(r"\\(?:ge|geqslant)(?![a-zA-Z])", r"\\geq", s)
    s = s.replace("−", "-").replace("×", "\\times").replace("·", "\\cdot").replace("√", "\\sqrt")
    s = s.strip()
    # a time of day keeps its a.m./p.m. (the unit rules below would drop "\text{ p.m.}"): "3:30 pm"
    s = re.sub(
        r"(\d{1,2}:\d{2})\s*(?:\\(?:text|mathrm|mbox|rm)\s*\{\s*)?([aApP])\.?\s*[mM]\.?\s*\}?\s*$",
        lambda m: f"{m.group(1)} {m.group(2).lower()}m",
        s,
    )
    # trailing punctuation
    s = re.sub(r"(?:[\s.;:!?]|(?<!\\)\\$)+$", "", s)
    if strip_units:
        s = s.replace("\\$", "").replace("\\%", "").replace("%", "")
        s = re.sub(r"\^\s*\{?\\circ\}?", "", s)
        s = re.sub(r"\\circ$", "", s)
        s = s.replace("°", "").replace("€", "").replace("£", "").replace("m²", "")
        if len(s) <= 200:  # the unit patterns backtrack; answers with units are short
            s = strip_text_units(s.strip())
            m = _RATE_RE.match(s.strip()) or _UNIT_RE.match(s.strip())
            if m:
                s = m.group(1)
    else:
        s = s.replace("\\$", "$")
    # text wrappers: \text{Evelyn} -> Evelyn
    for cmd in _BRACE_CMDS:
        if cmd in s:
            s = unwrap_command(s, cmd)
    s = strip_thousands(s)
    s = re.sub(r"\s+", " ", s).strip()
    # "6 and 8", "21,16 or 11" -> comma lists (after \text{} unwrapping)
    s = re.sub(r"(?<=[)\]}])\s*(?:and|or)\s*(?=[(\[{])", ", ", s)
    if re.search(r"\s(?:and|or)\s", s):
        s = re.sub(r"\s*,?\s+(?:and|or)\s+", ", ", s)
    s = re.sub(r"[\s,.;]+$", "", s)
    if s.startswith("{") and find_brace_group(s, 0) == len(s):
        s = s[1:-1].strip()
    # "\frac12" -> "\frac{1}{2}"
    s = re.sub(r"\\frac\s*(\d)\s*(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac\s*\{([^{}]*)\}\s*(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac\s*(\d)\s*\{", r"\\frac{\1}{", s)
    s = re.sub(r"\\sqrt\s*(\d)", r"\\sqrt{\1}", s)
    return s
