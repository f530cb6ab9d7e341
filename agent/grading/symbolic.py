"""Symbolic comparison with sympy. Runs INSIDE the grader worker process (see ``worker.py``).

Parsing: ``latex2sympy2_extended.latex2sympy`` for LaTeX, sympy's ``parse_expr`` for plain text
(``sqrt(2)/2``). Text written in Python/sympy syntax (what a program prints: ``3*sqrt(3)/4``,
``pi/2``, ``2**10``; no backslash or brace, and a ``**`` or a sympy function or constant name) is read
by ``parse_expr`` first: latex2sympy reads ``sqrt(3)`` as the letters ``s*q*r*t(3)`` and ``pi`` as
``p*i``, which would make a right printed answer unequal to its LaTeX gold. Decimals are rewritten as exact fractions before parsing, so nothing is rounded.
Equal means: ``simplify(a - b) == 0``, or, for constant expressions, ``|a - b|`` below 1e-40 relative at
60 significant digits (so 1/2^99 and 1/2^98 stay different). Equations compare ``lhs - rhs`` up to sign.
When ``i`` is the only symbol of both answers it is the imaginary unit.

sympy and latex2sympy are imported inside the functions (lazy, for start-up speed): importing this
module stays cheap for processes that never compare symbolically.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from mathagent.agent.grading.numbers import parse_number, rounded_places

log = logging.getLogger(__name__)

_PYTHON_SYNTAX_RE = re.compile(
    r"\*\*|\b(?:sqrt|cbrt|root|exp|log|ln|sin|cos|tan|cot|sec|csc|asin|acos|atan|sinh|cosh|tanh|Abs|"
    r"Rational|factorial|binomial|pi|oo|Integer|Float)\b"
)
"""Tokens that only Python/sympy syntax uses (with no backslash or brace in the text). Not ``E`` or
``I``: alone they are more often a choice letter than Euler's number or the imaginary unit."""

_DECIMAL_RE = re.compile(r"(?<![\d.])(\d+)\.(\d+)(?![\d.])")


def _exact_decimals(s: str) -> str:
    def repl(m: re.Match[str]) -> str:
        whole, frac = m.group(1), m.group(2)
        return "\\frac{" + str(int(whole + frac)) + "}{" + "1" + "0" * len(frac) + "}"

    return _DECIMAL_RE.sub(lambda m: "(" + repl(m) + ")", s)


def parse(s: str) -> Any | None:
    """A sympy object for ``s`` (LaTeX first, then plain text), or None."""
    import sympy
    from latex2sympy2_extended import latex2sympy

    expr = _parse_plain(s) if python_syntax(s) else None
    if expr is None:
        try:
            expr = latex2sympy(_exact_decimals(s))
        except Exception:  # noqa: BLE001 - any parse failure means "not parseable"
            expr = None
    if expr is None or isinstance(expr, (list, tuple)):
        expr = _parse_plain(s)
        if expr is None:
            return None
    if isinstance(expr, sympy.Float):
        expr = sympy.Rational(str(expr))
    return expr


def python_syntax(s: str) -> bool:
    """Whether ``s`` is written in Python/sympy syntax rather than LaTeX (see the module docstring)."""
    return not any(c in s for c in "\\{}") and bool(_PYTHON_SYNTAX_RE.search(s))


def _parse_plain(s: str) -> Any | None:
    """``s`` read by sympy's ``parse_expr`` (``^`` as power, implicit multiplication), or None."""
    try:
        from sympy.parsing.sympy_parser import (
            convert_xor,
            implicit_multiplication_application,
            parse_expr,
            standard_transformations,
        )

        return parse_expr(
            s.replace("^", "**"),
            transformations=standard_transformations + (implicit_multiplication_application, convert_xor),
            evaluate=True,
        )
    except Exception:  # noqa: BLE001 - any parse failure means "not parseable"
        return None


def _zero(d: Any) -> bool:
    import sympy

    if d == 0:
        return True
    try:
        if not d.free_symbols:
            v = sympy.N(d, 60)
            if v.is_number and v.is_real is not False:
                return bool(abs(v) < sympy.Float("1e-45", 60))
            return bool(sympy.simplify(d) == 0)
        s = sympy.simplify(d)
        if s == 0:
            return True
        return bool(sympy.expand(s) == 0)
    except Exception:  # noqa: BLE001
        return False


def _rel_zero(a: Any, b: Any) -> bool:
    import sympy

    if not a.free_symbols and not b.free_symbols:
        try:
            va, vb = sympy.N(a, 60), sympy.N(b, 60)
            scale = max(abs(va), abs(vb), sympy.Float(1))
            if va.is_real and vb.is_real:
                return bool(abs(va - vb) <= sympy.Float("1e-40", 60) * scale)
        except Exception:  # noqa: BLE001
            pass
    return _zero(a - b)


def _rounded_match(lit: str, other: Any) -> bool:
    """``lit`` is a decimal with >= 6 significant digits and ``other`` (constant) rounds to it."""
    import sympy

    places = rounded_places(lit)
    if places is None or other.free_symbols:
        return False
    try:
        v = sympy.N(other, 60)
        if not v.is_real:
            return False
        r = parse_number(lit)
        assert r is not None
        return bool(
            abs(v - sympy.Rational(r.numerator, r.denominator)) <= sympy.Rational(5, 10 ** (places + 1))
        )
    except Exception:  # noqa: BLE001
        return False


def _ineq_equal(ea: Any, eb: Any) -> bool:
    """Two one-variable inequalities with the same solution set."""
    import sympy

    syms = ea.free_symbols | eb.free_symbols
    if len(syms) != 1:
        return False
    (x,) = syms
    try:
        sa = sympy.solve_univariate_inequality(ea, x, relational=False)
        sb = sympy.solve_univariate_inequality(eb, x, relational=False)
        return bool(sa == sb)
    except Exception:  # noqa: BLE001
        return False


def _imaginary_unit(ea: Any, eb: Any) -> tuple[Any, Any]:
    """When ``i`` is the only symbol in either answer, it is the imaginary unit: ``(2+i)(1+i)`` is
    ``1+3i`` and ``i^2`` is ``-1``. With any other symbol beside it, ``i`` stays a variable."""
    import sympy

    try:
        syms = ea.free_symbols | eb.free_symbols
    except AttributeError:
        return ea, eb
    if len(syms) != 1 or str(next(iter(syms))) != "i":
        return ea, eb
    (i,) = syms
    try:
        return ea.subs(i, sympy.I), eb.subs(i, sympy.I)
    except Exception:  # noqa: BLE001
        return ea, eb


def sympy_equal(a: str, b: str, rounded: bool = True) -> bool:
    """True when the two answer strings denote the same mathematical object."""
    import sympy

    ea, eb = parse(a), parse(b)
    if ea is None or eb is None:
        return False
    ea, eb = _imaginary_unit(ea, eb)
    if rounded and isinstance(ea, sympy.Expr) and isinstance(eb, sympy.Expr):
        if _rounded_match(a, eb) or _rounded_match(b, ea):
            return True
    if isinstance(ea, sympy.MatrixBase) or isinstance(eb, sympy.MatrixBase):
        if (
            not (isinstance(ea, sympy.MatrixBase) and isinstance(eb, sympy.MatrixBase))
            or ea.shape != eb.shape
        ):
            return False
        return all(_rel_zero(x, y) for x, y in zip(ea, eb, strict=True))
    rel = (sympy.Eq, sympy.Rel)
    if isinstance(ea, rel) or isinstance(eb, rel):
        if not (isinstance(ea, sympy.Eq) and isinstance(eb, sympy.Eq)):
            if isinstance(ea, rel) and isinstance(eb, rel):
                if type(ea) is type(eb) and _zero(ea.lhs - eb.lhs) and _zero(ea.rhs - eb.rhs):
                    return True
                return _ineq_equal(ea, eb)
            return False
        da, db = ea.lhs - ea.rhs, eb.lhs - eb.rhs
        if _zero(da - db) or _zero(da + db):
            return True
        try:  # the same equation scaled: (2x+4y-3=0) vs (y = -x/2 + 3/4)
            ratio = sympy.simplify(da / db)
            return bool(ratio.is_number and ratio != 0 and ratio.is_finite)
        except Exception:  # noqa: BLE001
            return False
    if not isinstance(ea, sympy.Expr) or not isinstance(eb, sympy.Expr):
        try:
            return bool(ea == eb)
        except Exception:  # noqa: BLE001
            return False
    return _rel_zero(ea, eb)
