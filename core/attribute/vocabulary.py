"""The value vocabulary query understanding matches against, built in memory at load.

Every (field, value) of the attribute index is one value id (vid) with a display form (the catalog's
own spelling, e.g. "Taylor Swift"), a prior weight and its entity bitmap. Lookups:
- phrases: exact query key -> (vid, confidence): value names, title aliases, synonyms, decade phrases;
- full: names of the fields in FULL_FUZZY_FIELDS within one edit ("taylorswift", "tayler swift");
- tokens: single words within one edit of a word of any value name, for word-by-word correction;
- partial: a word of a multi-word artist name -> the most popular artists having it ("tayler");
- text: the free-text index, stemmed word -> entities whose title, artist or album has it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pyroaring import BitMap

from core.analysis import Analyzer, text_key
from core.attribute.fuzzy import DeleteIndex, FuzzyIndex
from core.attribute.phrases import FILLERS, SYNONYMS, decade_phrases

# How readily a span is read as a constraint on each field (title and album names are often
# ordinary words, playlists even more so).
FIELD_PRIORS: Mapping[str, float] = {
    "artist": 1.0, "genre": 1.0, "subgenre": 0.9, "decade": 1.0, "year": 0.9, "mood": 0.9, "tempo": 0.8,
    "danceability": 0.8, "title": 0.7, "album": 0.6, "playlist": 0.4,
}
FULL_FUZZY_FIELDS = frozenset({"artist", "genre", "subgenre", "title"})
PARTIAL_FIELDS = frozenset({"artist"})
PARTIAL_PER_TOKEN = 3
PARTIAL_STOP = FILLERS | {"lil", "dj", "mc", "de", "la", "el", "los", "las", "le", "feat", "x", "y"}


@dataclass(frozen=True, slots=True)
class ValueEntry:
    """One (field, value) as stored: key (query-key form), display, popularity (max over its entities,
    catalog unit), bitmap (entity ordinals), aliases (more query keys meaning it)."""

    field: str
    key: str
    display: str
    popularity: float
    bitmap: BitMap
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Value:
    field: str
    display: str
    weight: float
    bitmap: BitMap


class Vocabulary:
    """entries: the values; text: stemmed word -> ordinals of the free-text index;
    max_popularity: the catalog's largest popularity (scales the popularity part of a value's weight)."""

    def __init__(self, entries: Sequence[ValueEntry], text: Mapping[str, BitMap], max_popularity: float) -> None:
        scale = max(max_popularity, 1e-9)
        self.values = [Value(e.field, e.display, FIELD_PRIORS.get(e.field, 0.5) * (0.6 + 0.4 * e.popularity / scale),
                             e.bitmap) for e in entries]
        self.by_name = {(e.field, e.key): vid for vid, e in enumerate(entries)}
        self.phrases: dict[str, list[tuple[int, float]]] = {}
        for vid, e in enumerate(entries):
            for key in (e.key, *e.aliases):
                self._phrase(key, vid, 1.0)
            if e.field == "decade":
                for phrase, conf in decade_phrases(e.display):
                    self._phrase(phrase, vid, conf)
        for phrase, (targets, conf) in SYNONYMS.items():
            for field, value in targets:
                target = self.by_name.get((field, text_key(value)))
                if target is not None:
                    self._phrase(phrase, target, conf)
        full_keys = sorted({k for k, hits in self.phrases.items()
                            if any(entries[v].field in FULL_FUZZY_FIELDS for v, _ in hits) or k in SYNONYMS})
        self.full: FuzzyIndex = DeleteIndex(full_keys, min_chars=3)
        words = sorted({w for k in self.phrases for w in k.split()} | set(SYNONYMS))
        self.tokens: FuzzyIndex = DeleteIndex(words, min_chars=4)
        self.partial = self._partial(entries)
        self.text = dict(text)
        self.analyzer = Analyzer()

    def tie_key(self, vid: int) -> tuple[int | str, ...]:
        """The order of equally weighted values: the build's value order (vid here; the live
        vocabulary gives its (field, name) order, which the build's vids follow)."""
        return (vid,)

    def _phrase(self, key: str, vid: int, conf: float) -> None:
        if not key:
            return
        hits = self.phrases.setdefault(key, [])
        for i, (v, c) in enumerate(hits):
            if v == vid:
                hits[i] = (v, max(c, conf))
                return
        hits.append((vid, conf))

    def _partial(self, entries: Sequence[ValueEntry]) -> dict[str, list[tuple[int, float]]]:
        """word -> up to PARTIAL_PER_TOKEN (vid, coverage) of multi-word names in PARTIAL_FIELDS,
        most popular first; coverage = the word's share of the name's characters."""
        by_word: dict[str, list[tuple[float, int, float]]] = {}
        for vid, e in enumerate(entries):
            words = e.key.split()
            if e.field not in PARTIAL_FIELDS or len(words) < 2:
                continue
            letters = sum(len(w) for w in words)
            for w in set(words) - PARTIAL_STOP:
                if len(w) >= 3:
                    by_word.setdefault(w, []).append((-e.popularity, vid, len(w) / letters))
        return {w: [(vid, cov) for _, vid, cov in sorted(c)[:PARTIAL_PER_TOKEN]] for w, c in by_word.items()}

    def free_weight(self, word: str, known: float, unknown: float) -> float:
        """Weight of reading `word` as free text: 1 for fillers, `known` when the free-text index has
        it, `unknown` otherwise (an unknown word is more likely a misspelt name than free text)."""
        if word in FILLERS:
            return 1.0
        stems = self.analyzer(word)
        return known if stems and all(s in self.text for s in stems) else unknown

    def text_bitmap(self, words: Sequence[str]) -> BitMap | None:
        """Entities whose title, artist or album has every word (stemmed); None when no word is indexable."""
        stems = [s for w in words for s in self.analyzer(w)]
        if not stems:
            return None
        maps = [self.text.get(s, BitMap()) for s in stems]
        return BitMap.intersection(*maps) if len(maps) > 1 else maps[0]
