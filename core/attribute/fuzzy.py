"""Misspelling-tolerant lookup: symmetric-delete candidate generation verified by edit distance.

The symmetric delete method (Garbe's SymSpell): every indexed string and each of its one-character
deletions point to the string; a query string looks up itself and its own one-character deletions.
Any indexed string within Damerau-Levenshtein (optimal string alignment) distance 1 — one
substitution, insertion, deletion or adjacent transposition — shares at least one of those keys,
so candidates are complete for distance 1; each is then verified with `osa_distance`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

import numpy as np

DEFAULT_MIN_FUZZY_CHARS = 4


def deletions(text: str) -> Iterator[str]:
    """`text` without one of its characters, each position once (repeats possible)."""
    for i in range(len(text)):
        yield text[:i] + text[i + 1:]


def osa_distance(a: str, b: str, limit: int = 2) -> int:
    """Optimal string alignment distance (Damerau-Levenshtein restricted to non-overlapping
    transpositions) of `a` and `b`, capped: any distance above `limit` is returned as limit + 1."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    if a == b:
        return 0
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        if min(cur) > limit:
            return limit + 1
        prev2, prev = prev, cur
    return min(prev[-1], limit + 1)


def within_one_edit(a: str, b: str) -> bool:
    """osa_distance(a, b) <= 1, in linear time (one scan to the first difference, then slices)."""
    if a == b:
        return True
    if len(a) < len(b):
        a, b = b, a
    if len(a) - len(b) > 1:
        return False
    i = 0
    n = len(b)
    while i < n and a[i] == b[i]:
        i += 1
    if len(a) > len(b):
        return a[i + 1:] == b[i:]
    return a[i + 1:] == b[i + 1:] or (i + 1 < n and a[i] == b[i + 1] and a[i + 1] == b[i] and a[i + 2:] == b[i + 2:])


def deletion_variants(s: str, min_chars: int) -> set[str]:
    """`s` and every string one deletion away from it; `s` alone when shorter than `min_chars`."""
    if len(s) < min_chars:
        return {s}
    return {s, *(s[:k] + s[k + 1:] for k in range(len(s)))}


def verified(text: str, candidates: Iterable[int], strings: Sequence[str], min_chars: int) -> list[tuple[int, int]]:
    """(id, distance) of the candidate ids whose string is `text` (0) or one edit from it (1; both
    at least `min_chars` long), in no order."""
    found: list[tuple[int, int]] = []
    for i in candidates:
        s = strings[i]
        if s == text:
            found.append((i, 0))
        elif len(s) >= min_chars and len(text) >= min_chars and within_one_edit(text, s):
            found.append((i, 1))
    return found


def _check_min_chars(min_chars: int) -> None:
    if min_chars < 1:
        raise ValueError(f"`min_chars` must be >= 1, but got {min_chars}")


class DeleteIndex:
    """Strings within edit distance 1 of a query string, by id.

    strings: the indexed strings; ids are their positions. Strings shorter than `min_chars`
    are matched exactly only (one edit in a three-letter word changes what it is).
    Layout: the (salted, per-process) hash of every string and of each of its deletions, int64,
    sorted, beside the id it came from (int32): a few bytes per key instead of a dict entry, and
    hash collisions are harmless because every candidate is verified.
    """

    def __init__(self, strings: Iterable[str], *, min_chars: int = DEFAULT_MIN_FUZZY_CHARS) -> None:
        _check_min_chars(min_chars)
        self.min_chars = min_chars
        self.strings = list(strings)
        hashes: list[int] = []
        ids: list[int] = []
        for i, s in enumerate(self.strings):
            variants = self._variants(s)
            hashes.extend(map(hash, variants))
            ids.extend([i] * len(variants))
        h = np.array(hashes, dtype=np.int64)
        order = np.argsort(h, kind="stable")
        self.hashes = h[order]
        self.ids = np.array(ids, dtype=np.int32)[order]

    def _variants(self, s: str) -> set[str]:
        return deletion_variants(s, self.min_chars)

    def __len__(self) -> int:
        return len(self.strings)

    def lookup(self, text: str) -> list[tuple[int, int]]:
        """(id, distance) of the indexed strings within distance 1 of `text`, exact ones first."""
        probe = np.fromiter(map(hash, self._variants(text)), dtype=np.int64)
        lo = np.searchsorted(self.hashes, probe, "left")
        hi = np.searchsorted(self.hashes, probe, "right")
        candidates = {int(x) for a, b in zip(lo.tolist(), hi.tolist(), strict=True) for x in self.ids[a:b]}
        return sorted(verified(text, candidates, self.strings, self.min_chars), key=lambda kv: (kv[1], kv[0]))


class FuzzyIndex(Protocol):
    """What query understanding reads of a misspelling index: `strings` by id, and `lookup`."""

    strings: list[str]

    def lookup(self, text: str) -> list[tuple[int, int]]: ...


class LiveDeleteIndex:
    """A DeleteIndex that grows and shrinks: `add` and `discard` strings while lookups run.

    Ids are positions in `strings`, append-only (a discarded string keeps its id and gets it back
    when added again); lookup orders by (distance, string), which for a DeleteIndex (strings
    sorted) is its (distance, id) order, so both answer alike over the same strings. Each
    variant's ids are a tuple replaced on change, never mutated, so a concurrent lookup iterates
    a consistent one.
    """

    def __init__(self, strings: Iterable[str] = (), *, min_chars: int = DEFAULT_MIN_FUZZY_CHARS) -> None:
        _check_min_chars(min_chars)
        self.min_chars = min_chars
        self.strings: list[str] = []
        self.id_of: dict[str, int] = {}
        self.present: set[int] = set()
        self.variants: dict[str, tuple[int, ...]] = {}
        for s in strings:
            self.add(s)

    def _variants(self, s: str) -> set[str]:
        return deletion_variants(s, self.min_chars)

    def __len__(self) -> int:
        return len(self.present)

    def __contains__(self, s: object) -> bool:
        return isinstance(s, str) and self.id_of.get(s, -1) in self.present

    def add(self, s: str) -> None:
        i = self.id_of.get(s)
        if i is None:
            i = self.id_of[s] = len(self.strings)
            self.strings.append(s)
        elif i in self.present:
            return
        for v in self._variants(s):
            self.variants[v] = (*self.variants.get(v, ()), i)
        self.present.add(i)

    def discard(self, s: str) -> None:
        i = self.id_of.get(s)
        if i is None or i not in self.present:
            return
        self.present.discard(i)
        for v in self._variants(s):
            rest = tuple(j for j in self.variants.get(v, ()) if j != i)
            if rest:
                self.variants[v] = rest
            else:
                self.variants.pop(v, None)

    def lookup(self, text: str) -> list[tuple[int, int]]:
        """(id, distance) of the present strings within distance 1 of `text`, exact ones first."""
        candidates = {i for v in self._variants(text) for i in self.variants.get(v, ())}
        found = verified(text, candidates, self.strings, self.min_chars)
        return sorted(found, key=lambda kv: (kv[1], self.strings[kv[0]]))
