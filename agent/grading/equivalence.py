"""Answer equivalence under a per-data-set ``GradingPolicy``, and clustering for voting.

Decision ladder for one (pred, gold) pair, both normalized (``normalize_answer``):
1. identical strings;
2. a variable assignment on one side (``x = 3`` vs ``3``): compare the right-hand side;
3. plain numbers: exact rational equality (``Fraction``), tolerance only where the policy sets one;
4. text answers: case, spaces and ``\\text{}`` ignored;
5. structures: tuples / intervals (ordered, same brackets), ``\\{...\\}`` sets and (by policy) bare comma
   lists (as multisets), unions of intervals; element by element with this same ladder;
6. symbolic: sympy in a worker process with a deadline, only for answers that pass ``guards.is_safe``.
Anything undecided is NOT equivalent.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

from mathagent.agent.grading.guards import is_safe
from mathagent.agent.grading.normalize import normalize_answer
from mathagent.agent.grading.numbers import numbers_equal, parse_number, rounded_places, rounds_to
from mathagent.agent.grading.policy import GradingPolicy, policy_for
from mathagent.agent.grading.worker import bounded_sympy_equal

_OPEN = {"(": ")", "[": "]", "\\{": "\\}"}


def split_top_level(s: str, sep: str = ",") -> list[str]:
    """Split ``s`` at ``sep`` outside any brackets / braces."""
    parts, depth, cur = [], 0, []
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s) and s[i + 1] in "{}":
            cur.append(s[i : i + 2])
            depth += 1 if s[i + 1] == "{" else -1
            i += 2
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        if depth == 0 and s.startswith(sep, i):
            parts.append("".join(cur).strip())
            cur = []
            i += len(sep)
            continue
        cur.append(c)
        i += 1
    parts.append("".join(cur).strip())
    return parts


def split_items(s: str) -> list[str]:
    """Top-level items of a list: split at ``;`` when there is one at top level, else at ``,``."""
    parts = split_top_level(s, ";")
    return parts if len(parts) > 1 else split_top_level(s, ",")


def _container(s: str) -> tuple[str, str, list[str]] | None:
    """``(open, close, elements)`` when ``s`` is one bracketed sequence like ``(1, 2]`` or ``\\{1,2\\}``."""
    s = s.strip()
    for o in ("\\{", "(", "["):
        if s.startswith(o):
            break
    else:
        return None
    body_start = len(o)
    # find the bracket matching the opening one
    depth, i = 0, 0
    while i < len(s):
        if s.startswith("\\{", i) or s.startswith("\\}", i):
            depth += 1 if s[i + 1] == "{" else -1
            i += 2
        else:
            depth += 1 if s[i] in "([{" else -1 if s[i] in ")]}" else 0
            i += 1
        if depth == 0:
            break
    if i != len(s):
        return None
    close = s[-2:] if s.endswith("\\}") else s[-1]
    if o == "\\{" and close != "\\}":
        return None
    body = s[body_start : len(s) - len(close)]
    return o, close, split_items(body)


def _text_key(s: str) -> str:
    s = re.sub(r"\\(?:text|mathrm|textbf|mbox)\s*", "", s)
    return re.sub(r"[\s{}]", "", s).lower()


def _multiset_match(ps: list[str], gs: list[str], policy: GradingPolicy) -> bool:
    """Set equality: every predicted item equals some gold item and every gold item is predicted."""
    return all(any(_equiv(p, g, policy) for g in gs) for p in ps) and all(
        any(_equiv(p, g, policy) for p in ps) for g in gs
    )


def _seq_equiv(p: str, g: str, policy: GradingPolicy) -> bool | None:
    """Verdict for sequence-like answers, or None when neither side is a sequence."""
    cp, cg = _container(p), _container(g)
    if "\\cup" in p or "\\cup" in g:
        pp, gg = split_top_level(p, "\\cup"), split_top_level(g, "\\cup")
        if len(pp) > 1 or len(gg) > 1:
            return len(pp) == len(gg) and _multiset_match(pp, gg, policy)
    lp = cp[2] if cp else split_items(p)
    lg = cg[2] if cg else split_items(g)
    if len(lp) < 2 and len(lg) < 2:
        if cp and cg and (cp[0], cp[1]) != (cg[0], cg[1]) and len(lp) == len(lg) == 1:
            return None if cp[0] == "(" and cg[0] == "(" else False
        return None
    if cp and cg:
        if (cp[0], cp[1]) != (cg[0], cg[1]):
            return False
        unordered = cp[0] == "\\{"
    elif cp or cg:
        c = cp or cg
        assert c is not None
        if c[0] == "\\{":
            unordered = True
        elif c[0] == "(" and c[1] == ")":
            unordered = False  # a tuple written with / without its parentheses
        else:
            return False  # an interval against a bare list
    else:
        unordered = policy.unordered_lists
    if unordered:
        return _multiset_match(lp, lg, policy)
    if len(lp) != len(lg):
        return False
    return all(_equiv(a, b, policy) for a, b in zip(lp, lg, strict=True))


_REL_RE = re.compile(r"\\leq|\\geq|\\neq|<|>")
_FLIP = {"<": ">", ">": "<", "\\leq": "\\geq", "\\geq": "\\leq", "\\neq": "\\neq"}


def _top_level_eq(s: str) -> list[str]:
    parts = split_top_level(s, "=")
    return parts if len(parts) > 1 and all(parts) else [s]


def _relation(s: str) -> tuple[list[str], list[str]] | None:
    """``a < b \\leq c`` -> (["a", "b", "c"], ["<", "\\leq"]), with ``>``-type chains flipped to ``<``-type."""
    if "," in s or ";" in s or "=" in s.replace("\\leq", "").replace("\\geq", ""):
        return None
    ops = _REL_RE.findall(s)
    if not ops:
        return None
    terms = [t.strip() for t in _REL_RE.split(s)]
    if not all(terms):
        return None
    if all(o in (">", "\\geq") for o in ops):
        terms, ops = terms[::-1], [_FLIP[o] for o in reversed(ops)]
    return terms, ops


_NAME_RE = re.compile(r"_\{[^{}]*\}|_[a-zA-Z0-9]")


def _labelled(s: str) -> str | None:
    """The value of a labelled answer: ``x = 3`` -> ``3``, ``(p,q)=(3,2)`` -> ``(3,2)``, ``|AB|=1`` -> ``1``;
    a chain ``x = 5+5+1 = 11`` -> ``11``. None when ``s`` is not one (``a + 3z = 0`` is an equation)."""
    if len(split_items(s)) > 1:
        return None
    parts = _top_level_eq(s)
    if len(parts) < 2:
        return None
    if len(parts) > 2:
        return parts[-1]
    lhs = _NAME_RE.sub("", parts[0])
    if re.search(r"[\d+\-^*]|\\(?:cdot|times|sqrt)", lhs) or not re.search(r"[a-zA-Z]", lhs):
        return None
    return parts[1]


_FUNC_LABEL_RE = re.compile(r"[a-zA-Z](?:_\{?\w+\}?)?\s*\(\s*[a-zA-Z](?:\s*,\s*[a-zA-Z])*\s*\)")


def _same_function_label(a: str, b: str) -> bool:
    """``f(x)`` / ``g(t)`` / ``y``: names of a function's value, so ``f(x) = 2x+1`` is ``y = 2x+1``.

    At least one side must be a function application; ``x = 3`` and ``y = 3`` stay different."""
    fa, fb = _FUNC_LABEL_RE.fullmatch(a.strip()), _FUNC_LABEL_RE.fullmatch(b.strip())
    return bool(fa or fb) and all(f or x.strip() == "y" for f, x in ((fa, a), (fb, b)))


_CLOCK_RE = re.compile(r"(\d{1,2}):(\d{2})(?:\s*([ap]m))?")


def _clock(s: str) -> set[int] | None:
    """Minutes after midnight a time of day may mean: ``3:30 pm`` -> {930}; ``3:30`` -> {210, 930}
    (no a.m./p.m.: either half of the day); ``15:30`` -> {930}. None when ``s`` is not ``h:mm``."""
    m = _CLOCK_RE.fullmatch(s.strip())
    if not m:
        return None
    h, mins, half = int(m.group(1)), int(m.group(2)), m.group(3)
    if mins >= 60 or h > 24:
        return None
    if half:
        return {(h % 12 + (12 if half == "pm" else 0)) * 60 + mins} if 1 <= h <= 12 else None
    if 1 <= h <= 12:
        return {(h % 12) * 60 + mins, (h % 12 + 12) * 60 + mins}
    return {(h % 24) * 60 + mins}


def _times(p: str, g: str) -> bool | None:
    """Times of day compare as clock times: both sides ``h:mm``, or one marked a.m./p.m. or with a
    zero-led minute (``9:05``) against anything. None (undecided: a ratio such as ``7:32``) otherwise."""
    tp, tg = _clock(p), _clock(g)
    if tp is not None and tg is not None:
        return bool(tp & tg)
    one = p if tp is not None else g if tg is not None else None
    if one is None:
        return None
    if one.endswith("m") or re.search(r":0\d", one):
        return False
    return None


def _expand_pm(s: str) -> str:
    """``a \\pm b`` -> ``a+b, a-b``; ``\\pm b`` -> ``b, -b`` (one occurrence, top level)."""
    if s.count("\\pm") != 1:
        return s
    a, b = s.split("\\pm")
    a, b = a.strip(), b.strip()
    if not b:
        return s
    return f"{a}+{b}, {a}-{b}" if a else f"{b}, -{b}"


def _as_interval(s: str) -> str | None:
    """``-2 \\leq x \\leq 7`` -> ``[-2,7]``; ``x < 3`` -> ``(-\\infty,3)``; ``x \\in S`` -> ``S``."""
    m = re.match(r"^[a-zA-Z](?:_\{?\w+\}?)?\s*\\in\s*(.+)$", s)
    if m:
        return m.group(1).strip()
    rel = _relation(s)
    if rel is None:
        return None
    terms, ops = rel
    if any(o not in ("<", "\\leq") for o in ops):
        return None
    if len(terms) == 3 and parse_number(terms[1]) is None:
        return (
            ("[" if ops[0] == "\\leq" else "(")
            + terms[0]
            + ","
            + terms[2]
            + ("]" if ops[1] == "\\leq" else ")")
        )
    if len(terms) == 2:
        if re.fullmatch(r"[a-zA-Z]", terms[0]):
            return "(-\\infty," + terms[1] + ("]" if ops[0] == "\\leq" else ")")
        if re.fullmatch(r"[a-zA-Z]", terms[1]):
            return ("[" if ops[0] == "\\leq" else "(") + terms[0] + ",\\infty)"
    return None


def _numbers(p: str, g: str, policy: GradingPolicy) -> bool | None:
    np_, ng = parse_number(p), parse_number(g)
    if np_ is None or ng is None:
        return None
    if numbers_equal(np_, ng, policy.rel_tol, policy.abs_tol):
        return True
    if policy.allow_rounded:
        for lit, exact, rounded in ((p, ng, np_), (g, np_, ng)):
            places = rounded_places(lit)
            if places is not None and rounded_places(g if lit is p else p) is None:
                if rounds_to(exact, rounded, places):
                    return True
    return False


@lru_cache(maxsize=1 << 16)
def _equiv(p: str, g: str, policy: GradingPolicy) -> bool:
    if p == g:
        return True
    if not p or not g:
        return False
    num = _numbers(p, g, policy)
    if num is not None:
        return num
    clock = _times(p, g)
    if clock is not None:
        return clock
    if _text_key(p) == _text_key(g):
        return True
    if "\\pm" in p or "\\pm" in g:
        xp, xg = _expand_pm(p), _expand_pm(g)
        if (xp, xg) != (p, g):
            return _equiv(xp, xg, policy)
    # labelled answers and equation chains: "x = 3" vs "3", "(p,q)=(3,2)", "x = 5+5+1 = 11"
    ep, eg = _labelled(p), _labelled(g)
    if policy.numeric_only and ep is None and "=" not in g:
        # numeric data sets have no equation answers: "6 + 3 = 9" states its result last
        parts = _top_level_eq(p)
        if len(parts) == 2:
            ep = parts[1]
    if ep is not None and eg is None and "=" not in g:
        return _equiv(ep, g, policy)
    if eg is not None and ep is None and "=" not in p:
        return _equiv(p, eg, policy)
    if ep is not None and eg is not None and _equiv(ep, eg, policy):
        lp, lg = _top_level_eq(p)[0], _top_level_eq(g)[0]
        if _text_key(lp) == _text_key(lg) or len(_top_level_eq(p)) > 2 or len(_top_level_eq(g)) > 2:
            return True
        if _same_function_label(lp, lg):
            return True
    # inequalities and intervals
    if not policy.numeric_only:
        rp, rg = _relation(p), _relation(g)
        if rp and rg and rp[1] == rg[1] and len(rp[0]) == len(rg[0]):
            if all(_equiv(a, b, policy) for a, b in zip(rp[0], rg[0], strict=True)):
                return True
        ip, ig = _as_interval(p), _as_interval(g)
        if ip is not None or ig is not None:
            if _equiv(ip or p, ig or g, policy):
                return True
    # lists, tuples, sets, intervals
    if not policy.numeric_only:
        seq = _seq_equiv(p, g, policy)
        if seq is not None:
            return seq
    if not policy.symbolic:
        return False
    if not (is_safe(p, policy.max_len) and is_safe(g, policy.max_len)):
        return False
    if not (re.search(r"[\d\\a-zA-Z]", p) and re.search(r"[\d\\a-zA-Z]", g)):
        return False
    return bool(bounded_sympy_equal(p, g, policy.symbolic_timeout_s, policy.allow_rounded))


def clear_cache() -> None:
    """Forget the memoised comparisons (benchmarks measure the grader cold)."""
    _equiv.cache_clear()


def is_equivalent(pred: str | None, gold: str | Sequence[str], dataset: str | GradingPolicy = "math") -> bool:
    """True when ``pred`` (an extracted answer) equals ``gold`` under the data set's policy.

    ``gold`` may be a sequence of acceptable answers (any match counts). ``pred`` None is never equal.
    """
    if pred is None:
        return False
    policy = policy_for(dataset)
    golds = [gold] if isinstance(gold, (str, int, float)) else list(gold)
    p = normalize_answer(str(pred), policy.strip_units)
    return any(_equiv(p, normalize_answer(str(g), policy.strip_units), policy) for g in golds)


def cluster_answers(answers: Sequence[str | None], dataset: str | GradingPolicy = "math") -> list[int]:
    """A cluster id per answer (-1 for None / empty); ids numbered in order of first appearance.

    Each answer joins the first existing cluster whose representative (its first member) it equals, so
    the result is deterministic and does not depend on equivalence being transitive.
    """
    policy = policy_for(dataset)
    reps: list[str] = []
    ids: list[int] = []
    for a in answers:
        n = normalize_answer(str(a), policy.strip_units) if a is not None else ""
        if not n:
            ids.append(-1)
            continue
        for cid, r in enumerate(reps):
            if _equiv(n, r, policy):
                ids.append(cid)
                break
        else:
            reps.append(n)
            ids.append(len(reps) - 1)
    return ids
