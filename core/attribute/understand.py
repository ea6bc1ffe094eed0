"""Query understanding: spans of the query -> attribute constraints, several readings with likelihoods.

1. Words: the trimmed query splits at white space; each piece is normalised and tokenised like the
   value names (core.analysis.text_key), its tokens keeping the piece's offsets.
2. Span matches: every run of up to `max_span_tokens` words is looked up as a phrase exactly, with
   misspelt words corrected one at a time (edit distance 1), as a whole name within one edit
   (covers merged or split words), and, for one word, as part of a multi-word artist name.
   A match's confidence is the product of its corrections' similarities (1 - edits / length).
3. Readings: a beam search over segmentations; each word is either in one slot or free text.
   score = product over slots of SLOT_COST * confidence**2 * value weight (field prior x popularity
           share) * product over free words of their free weight (1 for fillers such as "songs").
   Readings whose slots no entity satisfies together are dropped. Likelihood = score / sum of the
   scores of every reading kept, so the returned likelihoods sum to at most 1.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass

from pyroaring import BitMap

from core.analysis import normalize, tokenize
from core.attribute.phrases import FILLERS
from core.attribute.vocabulary import Vocabulary
from core.types import Interpretation, Slot

DEFAULT_MAX_SPAN_TOKENS = 5
DEFAULT_MAX_QUERY_TOKENS = 12
DEFAULT_BEAM = 16
DEFAULT_MATCHES_PER_SPAN = 3
DEFAULT_FREE_KNOWN = 0.3
DEFAULT_FREE_UNKNOWN = 0.08
MAX_CORRECTIONS = 3
PARTIAL_DISCOUNT = 0.85
# Each slot multiplies a reading's score by this: of two readings explaining the same words, the
# one with fewer constraints is preferred ("latin pop" the subgenre over genre latin + genre pop).
SLOT_COST = 0.75
# Numbers and decades ("1995", "2000s", "90s") are never corrected: one edit makes another year.
_NUMBER = re.compile(r"^\d+s?$")


@dataclass(frozen=True, kw_only=True)
class UnderstandConfig:
    """max_span_tokens: longest phrase matched; max_query_tokens: words past this stay free text;
    beam: partial readings kept per position; matches_per_span: candidate values kept per span;
    free_known / free_unknown: weight of a free word the free-text index has / lacks, in (0, 1]."""

    max_span_tokens: int = DEFAULT_MAX_SPAN_TOKENS
    max_query_tokens: int = DEFAULT_MAX_QUERY_TOKENS
    beam: int = DEFAULT_BEAM
    matches_per_span: int = DEFAULT_MATCHES_PER_SPAN
    free_known: float = DEFAULT_FREE_KNOWN
    free_unknown: float = DEFAULT_FREE_UNKNOWN

    def __post_init__(self) -> None:
        for name in ("max_span_tokens", "max_query_tokens", "beam", "matches_per_span"):
            value = getattr(self, name)
            if not 1 <= value <= 64:
                raise ValueError(f"`{name}` must be in [1, 64], but got {value}")
        for name in ("free_known", "free_unknown"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 < value <= 1):
                raise ValueError(f"`{name}` must be in (0, 1], but got {value}")


@dataclass(frozen=True, slots=True)
class Word:
    text: str
    start: int
    end: int
    free_weight: float


@dataclass(frozen=True, slots=True)
class Match:
    """Value `vid` read from words [first, last); confidence in (0, 1]; weight: its reading score."""

    first: int
    last: int
    vid: int
    confidence: float
    weight: float


@dataclass(frozen=True, slots=True)
class Reading:
    score: float
    matches: tuple[Match, ...]
    free: tuple[int, ...]
    bits: BitMap | None


def words_of(text: str, vocab: Vocabulary, config: UnderstandConfig) -> list[Word]:
    """Normalised words of `text` with the offsets of the white-space piece each came from."""
    out: list[Word] = []
    start = 0
    for piece in text.split():
        start = text.index(piece, start)
        end = start + len(piece)
        for tok in tokenize(normalize(piece)):
            out.append(Word(tok, start, end, vocab.free_weight(tok, config.free_known, config.free_unknown)))
        start = end
    return out


def _similarity(word: str, distance: int) -> float:
    return 1.0 - distance / max(len(word), 1)


def _alternatives(words: list[Word], vocab: Vocabulary) -> list[list[tuple[str, float]]]:
    """Per word: itself (similarity 1) and up to MAX_CORRECTIONS known words one edit away."""
    out = []
    for w in words:
        alts = [(w.text, 1.0)]
        if _NUMBER.match(w.text):
            out.append(alts)
            continue
        for i, dist in vocab.tokens.lookup(w.text)[:MAX_CORRECTIONS + 1]:
            if dist:
                alts.append((vocab.tokens.strings[i], _similarity(w.text, dist)))
        out.append(alts[:MAX_CORRECTIONS + 1])
    return out


def _span_candidates(words: list[Word], alts: list[list[tuple[str, float]]], first: int, last: int,
                     vocab: Vocabulary) -> dict[int, float]:
    """vid -> best confidence for words [first, last)."""
    found: dict[int, float] = {}

    def add(key: str, conf: float) -> None:
        for vid, c in vocab.phrases.get(key, ()):
            if c * conf > found.get(vid, 0.0):
                found[vid] = c * conf

    for combo in itertools.islice(itertools.product(*alts[first:last]), 32):
        add(" ".join(w for w, _ in combo), math.prod(s for _, s in combo))
    exact = " ".join(w.text for w in words[first:last])
    for i, dist in [] if _NUMBER.match(exact) else vocab.full.lookup(exact):
        if dist:
            add(vocab.full.strings[i], _similarity(exact, dist))
    if last - first == 1:
        for word, sim in alts[first]:
            for vid, coverage in vocab.partial.get(word, ()):
                conf = sim * PARTIAL_DISCOUNT * (0.5 + 0.5 * coverage)
                if conf > found.get(vid, 0.0):
                    found[vid] = conf
    return found


def span_matches(words: list[Word], vocab: Vocabulary, config: UnderstandConfig) -> list[list[Match]]:
    """Matches by first word, each span's best `matches_per_span` by weight."""
    n = min(len(words), config.max_query_tokens)
    alts = _alternatives(words[:n], vocab)
    out: list[list[Match]] = [[] for _ in range(n)]
    for first in range(n):
        lasts = list(range(first + 1, min(n, first + config.max_span_tokens) + 1))
        if first == 0 and n > config.max_span_tokens:
            lasts.append(n)  # the whole query, for long names ("all i want for christmas is you")
        for last in lasts:
            found = _span_candidates(words, alts, first, last, vocab)
            ms = [Match(first, last, vid, conf, conf * conf * vocab.values[vid].weight) for vid, conf in found.items()]
            ms.sort(key=lambda m: (-m.weight, vocab.tie_key(m.vid)))
            out[first].extend(ms[:config.matches_per_span])
    return out


def _extend(r: Reading, m: Match, vocab: Vocabulary) -> Reading | None:
    """`r` with `m` added, or None when `m` repeats a value or no entity satisfies every slot."""
    if any(x.vid == m.vid for x in r.matches):
        return None
    bits = vocab.values[m.vid].bitmap
    if r.bits is not None:
        bits = r.bits & bits
    if not bits:
        return None
    return Reading(r.score * m.weight * SLOT_COST, (*r.matches, m), r.free, bits)


def segment(words: list[Word], matches: list[list[Match]], vocab: Vocabulary, beam: int) -> list[Reading]:
    """Complete readings of `words`, best first (beam search over positions)."""
    n = len(words)
    states: list[list[Reading]] = [[] for _ in range(n + 1)]
    states[0] = [Reading(1.0, (), (), None)]
    for i in range(n):
        states[i].sort(key=lambda r: -r.score)
        del states[i][beam:]
        for r in states[i]:
            states[i + 1].append(Reading(r.score * words[i].free_weight, r.matches, (*r.free, i), r.bits))
            for m in matches[i] if i < len(matches) else ():
                extended = _extend(r, m, vocab)
                if extended is not None:
                    states[m.last].append(extended)
    best: dict[tuple[int, ...], Reading] = {}
    for r in states[n]:
        key = tuple(sorted(m.vid for m in r.matches))
        if key not in best or r.score > best[key].score:
            best[key] = r
    return sorted(best.values(), key=lambda r: (-r.score, len(r.matches)))


def _interpretation(r: Reading, text: str, words: list[Word], vocab: Vocabulary, likelihood: float
                   ) -> Interpretation:
    slots = []
    for m in r.matches:
        value = vocab.values[m.vid]
        start, end = words[m.first].start, words[m.last - 1].end
        slots.append(Slot(field=value.field, value=value.display, span=text[start:end], start=start, end=end,
                          confidence=round(m.confidence, 4)))
    free = " ".join(words[i].text for i in r.free if words[i].text not in FILLERS)
    return Interpretation(slots=tuple(slots), free_text=free, likelihood=likelihood)


@dataclass(frozen=True, slots=True)
class Analysis:
    """One reading for retrieval: its Interpretation, the entities satisfying all its slots (None:
    no slots) and its free words (fillers removed)."""

    interpretation: Interpretation
    slot_bits: BitMap | None
    free_words: tuple[str, ...]


def analyse(text: str, vocab: Vocabulary, max_interpretations: int,
            config: UnderstandConfig = UnderstandConfig()) -> list[Analysis]:
    """Readings of `text` (trimmed query text), most likely first, at most `max_interpretations`;
    slot spans are substrings of `text`. An empty or wordless text reads as free text only."""
    if max_interpretations < 1:
        raise ValueError(f"`max_interpretations` must be >= 1, but got {max_interpretations}")
    words = words_of(text, vocab, config)
    if not words:
        return [Analysis(Interpretation(slots=(), free_text="", likelihood=1.0), None, ())]
    readings = segment(words, span_matches(words, vocab, config), vocab, config.beam)
    total = sum(r.score for r in readings)
    out = []
    for r in readings[:max_interpretations]:
        interp = _interpretation(r, text, words, vocab, r.score / total)
        out.append(Analysis(interp, r.bits, tuple(interp.free_text.split())))
    return out


def understand(text: str, vocab: Vocabulary, max_interpretations: int,
               config: UnderstandConfig = UnderstandConfig()) -> tuple[Interpretation, ...]:
    """The interpretations of `analyse`."""
    return tuple(a.interpretation for a in analyse(text, vocab, max_interpretations, config))
