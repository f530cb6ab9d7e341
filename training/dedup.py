"""Near-duplicate detection for problems and solutions: word n-gram sets and Jaccard similarity.

Pure Python, no MinHash approximation: texts are normalized (lower case, Unicode NFKC, LaTeX commands
and punctuation split into their own tokens, runs of whitespace collapsed), cut into word n-grams
(*shingles*), and compared by exact Jaccard similarity ``|A ∩ B| / |A ∪ B|``. An inverted index over
shingles finds the candidates, so a query costs only the texts that share at least one shingle.

Thresholds (see docs/generate.md for how they were chosen):

* :data:`PROBLEM_JACCARD` = 0.6 on word 3-grams: two problems this close are the same problem with
  a few words or numbers changed (GSM8K test problems that differ only in names stay below ~0.4).
* :data:`SOLUTION_JACCARD` = 0.9 on word 3-grams of text + code: two solutions of one problem this
  close teach nothing new; only the first is kept.
* :data:`LEAK_JACCARD` = 0.5 on word 3-grams, or any shared :data:`LEAK_NGRAM` = 13-word n-gram (the
  contamination test of GPT-3 and later reports): a generated problem that close to a test problem is
  rejected as test leakage.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

PROBLEM_JACCARD = 0.6
SOLUTION_JACCARD = 0.9
LEAK_JACCARD = 0.5
LEAK_NGRAM = 13
SHINGLE_N = 3

_TOKEN = re.compile(r"\\[a-zA-Z]+|[a-z]+|\d+(?:\.\d+)?|[^\sa-z\d]")


def normalize(text: str) -> list[str]:
    """Tokens of ``text``: words, numbers (``1,000`` → ``1000``), LaTeX commands and single symbols."""
    text = unicodedata.normalize("NFKC", text or "").lower()
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)
    return _TOKEN.findall(text)


def _h(gram: tuple[str, ...]) -> int:
    return int.from_bytes(hashlib.blake2b(" ".join(gram).encode(), digest_size=8).digest(), "big")


def shingles(text: str, n: int = SHINGLE_N) -> frozenset[int]:
    """Hashed word ``n``-grams of the normalized text (a text shorter than ``n`` is one shingle)."""
    toks = normalize(text)
    if not toks:
        return frozenset()
    if len(toks) < n:
        return frozenset({_h(tuple(toks))})
    return frozenset(_h(tuple(toks[i : i + n])) for i in range(len(toks) - n + 1))


def jaccard(a: frozenset[int], b: frozenset[int]) -> float:
    if not a and not b:
        return 1.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter) if inter else 0.0


@dataclass(frozen=True)
class Match:
    """The closest indexed text to a query."""

    key: str
    """Id of the indexed text."""
    jaccard: float
    """Jaccard similarity of the shingle sets."""
    long_overlap: bool = False
    """The two texts share a whole ``long_n``-gram (only when the index tracks long n-grams)."""

    def to_dict(self) -> dict[str, object]:
        return {"key": self.key, "jaccard": round(self.jaccard, 4), "long_overlap": self.long_overlap}


class NearDupIndex:
    """An inverted index of shingle sets; :meth:`best` returns the closest indexed text.

    With ``long_n`` set, every text's word ``long_n``-grams are indexed too, and a match also reports
    whether the query shares one of them (the test-leakage rule).
    """

    def __init__(self, n: int = SHINGLE_N, long_n: int | None = None) -> None:
        self.n, self.long_n = n, long_n
        self._sets: dict[str, frozenset[int]] = {}
        self._postings: dict[int, list[str]] = defaultdict(list)
        self._long: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self._sets)

    def __contains__(self, key: str) -> bool:
        return key in self._sets

    def add(self, key: str, text: str) -> None:
        if key in self._sets:
            return
        s = shingles(text, self.n)
        self._sets[key] = s
        for h in s:
            self._postings[h].append(key)
        if self.long_n:
            for h in shingles(text, self.long_n) if len(normalize(text)) >= self.long_n else ():
                self._long.setdefault(h, key)

    def add_all(self, items: Iterable[tuple[str, str]]) -> NearDupIndex:
        for key, text in items:
            self.add(key, text)
        return self

    def best(self, text: str, *, exclude: str | None = None) -> Match | None:
        """The indexed text with the highest Jaccard similarity to ``text`` (None when none shares a shingle)."""
        q = shingles(text, self.n)
        counts: dict[str, int] = defaultdict(int)
        for h in q:
            for key in self._postings.get(h, ()):
                counts[key] += 1
        long_key = None
        if self.long_n and len(normalize(text)) >= self.long_n:
            long_key = next((self._long[h] for h in shingles(text, self.long_n) if h in self._long), None)
        best: Match | None = None
        for key, inter in counts.items():
            if key == exclude:
                continue
            score = inter / (len(q) + len(self._sets[key]) - inter)
            if best is None or score > best.jaccard:
                best = Match(key, score)
        if best is not None and long_key is not None and long_key != exclude:
            best = Match(best.key, best.jaccard, True)
        return best


def dedup_texts(
    items: Iterable[tuple[str, str]], threshold: float, n: int = SHINGLE_N
) -> tuple[list[str], dict[str, str]]:
    """Greedy near-duplicate removal in order: returns kept keys and ``{dropped: the kept key it matched}``."""
    index = NearDupIndex(n)
    kept: list[str] = []
    dropped: dict[str, str] = {}
    for key, text in items:
        m = index.best(text)
        if m is not None and m.jaccard >= threshold:
            dropped[key] = m.key
            continue
        index.add(key, text)
        kept.append(key)
    return kept, dropped
