"""Exact numbers: parse normalized answers into ``fractions.Fraction`` and compare them.

Decimals are read exactly (``0.1`` is 1/10, not a binary float), so 5 == 5.0 and 0.5 == 1/2 with no
tolerance at all. Huge literals are refused (None), never evaluated.
"""

from __future__ import annotations

import re
from fractions import Fraction

MAX_DIGITS = 400
"""Literals with more digits than this are not parsed as numbers (compared as strings instead)."""

_DEC = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d{1,3})?"
_DEC_RE = re.compile(_DEC)
_SLASH_RE = re.compile(rf"({_DEC})\s*/\s*({_DEC})")
_FRAC_RE = re.compile(r"([-+]?)\s*\\frac\{\s*(" + _DEC + r")\s*\}\{\s*(" + _DEC + r")\s*\}")
_MIXED_RE = re.compile(r"([-+]?)(\d+)\s*\\frac\{\s*(\d+)\s*\}\{\s*(\d+)\s*\}")
_SPACED_MIXED_RE = re.compile(r"([-+]?)(\d+)\s+(\d+)\s*/\s*(\d+)")
"""``1 1/2``: a whole number, a space, a proper fraction (read before spaces are dropped: not ``11/2``)."""
_SCI_RE = re.compile(rf"({_DEC})\s*(?:\\times|\\cdot|\*)\s*10\s*\^\s*\{{?\s*([-+]?\d{{1,3}})\s*\}}?")


def _dec(s: str) -> Fraction | None:
    s = s.strip()
    if len(s) > MAX_DIGITS or not _DEC_RE.fullmatch(s):
        return None
    try:
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


def parse_number(s: str | None) -> Fraction | None:
    """The exact value of a plain numeric answer, or None if ``s`` is not a plain number.

    Accepts integers, decimals, ``a/b``, ``\\frac{a}{b}`` (with optional sign), mixed numbers
    ``2\\frac{1}{2}`` and ``2 1/2`` (a whole number, a space, a proper fraction), and ``a \\times 10^{k}``. Input should already be normalized (no commas/units).
    """
    if s is None:
        return None
    m = _SPACED_MIXED_RE.fullmatch(s.strip())
    if m:
        whole, num, den = int(m.group(2)), int(m.group(3)), int(m.group(4))
        if den == 0 or num >= den:  # "1 3/2" is no mixed number, and "13/2" would be a guess
            return None
        mixed = whole + Fraction(num, den)
        return -mixed if m.group(1) == "-" else mixed
    s = s.strip().replace(" ", "")
    if not s or len(s) > MAX_DIGITS:
        return None
    if s.startswith("{") and s.endswith("}") and s.count("{") == 1:
        s = s[1:-1]
    v = _dec(s)
    if v is not None:
        return v
    m = _SLASH_RE.fullmatch(s)
    if m:
        a, b = _dec(m.group(1)), _dec(m.group(2))
        return a / b if a is not None and b else None
    m = _FRAC_RE.fullmatch(s)
    if m:
        a, b = _dec(m.group(2)), _dec(m.group(3))
        if a is None or not b:
            return None
        v = a / b
        return -v if m.group(1) == "-" else v
    m = _MIXED_RE.fullmatch(s)
    if m:
        whole, num, den = int(m.group(2)), int(m.group(3)), int(m.group(4))
        if den == 0 or num >= den:
            return None
        mixed = whole + Fraction(num, den)
        return -mixed if m.group(1) == "-" else mixed
    m = _SCI_RE.fullmatch(s)
    if m:
        a = _dec(m.group(1))
        return a * Fraction(10) ** int(m.group(2)) if a is not None else None
    return None


def numbers_equal(a: Fraction, b: Fraction, rel_tol: float = 0.0, abs_tol: float = 0.0) -> bool:
    """Exact equality, or within the given tolerances (relative to the larger magnitude)."""
    if a == b:
        return True
    diff = abs(a - b)
    if abs_tol and diff <= Fraction(abs_tol):
        return True
    if rel_tol and diff <= Fraction(rel_tol) * max(abs(a), abs(b)):
        return True
    return False


ROUNDED_MIN_DIGITS = 6
"""A decimal literal with at least this many significant digits may be a rounded value (see below)."""


def rounded_places(s: str) -> int | None:
    """Decimal places of ``s`` when it is a decimal literal with >= ROUNDED_MIN_DIGITS significant digits."""
    m = re.fullmatch(r"[-+]?(\d*)\.(\d+)", s.strip())
    if not m:
        return None
    sig = (m.group(1) + m.group(2)).lstrip("0")
    return len(m.group(2)) if len(sig) >= ROUNDED_MIN_DIGITS else None


def rounds_to(exact: Fraction, rounded: Fraction, places: int) -> bool:
    """True when ``exact`` rounded to ``places`` decimals is ``rounded`` (half-unit tolerance)."""
    return abs(exact - rounded) <= Fraction(5, 10 ** (places + 1))
