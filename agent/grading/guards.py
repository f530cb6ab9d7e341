"""Cheap checks that run BEFORE any parsing, so hostile answers never reach sympy.

An answer is "unsafe" when evaluating it could take unbounded time or memory: very long text, deep
brace nesting, power towers (``10^{10^{10}}``), huge exponents, huge factorials, very long literals.
Unsafe answers are still graded, but only by exact string comparison.
"""

from __future__ import annotations

import re

MAX_LEN = 2000
MAX_DEPTH = 24
MAX_FRACS = 40
MAX_EXPONENT = 2000
MAX_LITERAL_DIGITS = 300
MAX_FACTORIAL = 500

_EXP_RE = re.compile(r"(?:\^|\*\*)\s*(\{)?")
_INT_RE = re.compile(r"\d+")
_FACT_RE = re.compile(r"(\d+)\s*!")


def brace_depth(s: str) -> int:
    """Maximum nesting depth of ``{}``, ``()`` and ``[]`` together."""
    depth = best = 0
    for c in s:
        if c in "{([":
            depth += 1
            best = max(best, depth)
        elif c in "})]":
            depth = max(0, depth - 1)
    return best


def _exponent_text(s: str, i: int, braced: bool) -> str:
    if not braced:
        m = re.match(r"\s*[-+]?(\d+|[a-zA-Z]|\\[a-zA-Z]+)", s[i:])
        return m.group(0) if m else ""
    depth = 1
    j = i
    while j < len(s) and depth:
        if s[j] == "{":
            depth += 1
        elif s[j] == "}":
            depth -= 1
        j += 1
    return s[i : j - 1]


def unsafe_reason(s: str, max_len: int = MAX_LEN) -> str | None:
    """Why ``s`` must not be parsed symbolically, or None when it is safe."""
    if len(s) > max_len:
        return f"longer than {max_len} characters"
    if brace_depth(s) > MAX_DEPTH:
        return f"nesting deeper than {MAX_DEPTH}"
    if s.count("\\frac") > MAX_FRACS:
        return f"more than {MAX_FRACS} fractions"
    for lit in _INT_RE.findall(s):
        if len(lit) > MAX_LITERAL_DIGITS:
            return f"a literal longer than {MAX_LITERAL_DIGITS} digits"
    for m in _FACT_RE.finditer(s):
        if int(m.group(1)) > MAX_FACTORIAL:
            return f"factorial above {MAX_FACTORIAL}"
    if "factorial" in s or "\\Gamma" in s:
        return "factorial / gamma function"
    for m in _EXP_RE.finditer(s):
        exp = _exponent_text(s, m.end(), bool(m.group(1)))
        if "^" in exp or "**" in exp:
            return "power tower"
        for lit in _INT_RE.findall(exp):
            if int(lit) > MAX_EXPONENT:
                return f"exponent above {MAX_EXPONENT}"
    return None


def is_safe(s: str, max_len: int = MAX_LEN) -> bool:
    """True when ``s`` may be handed to the symbolic comparison."""
    return unsafe_reason(s, max_len) is None
