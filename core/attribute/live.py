"""Live writes for the attribute strategy: value bitmaps and the query-understanding vocabulary.

LiveVocabulary is a core.attribute.vocabulary.Vocabulary that follows the writes of a
LiveCollection: a value (artist, title, genre, mood...) appears with its first live entity and
disappears with its last, so a new artist's name is understood, one typo included, as soon as the
write is applied, and a value no entity has any more is no longer proposed. It keeps what the
offline build derives from the whole catalog, per value: the spellings with the entities using
them (display = the most used, ties: the one seen first in catalog order), a title's aliases,
popularity (max over its live entities) and weight (scaled by the largest live popularity), and
recomputes only the values, phrases, misspelling keys and partial-name lists a write touches
(all weights when the largest popularity changes). The result equals the vocabulary a fresh build
of the live catalog loads (the tests compare understanding and retrieval exactly).

Value ids are append-only; ties between equally weighted values go by (field, name), the order of
a fresh build's value ids (Vocabulary.tie_key). Start-up derives it from the catalog once (4.5 s
for 27,000 demo tracks, against 1.5 s to load the stored vocabulary: the stored one lacks the
spelling counts); a whole index only: a partition's vocabulary is the catalog's.

Concurrency: changed bitmaps, phrase lists and fuzzy-index entries are replaced, never mutated,
so a concurrent search never fails; within a batch it may see some of the batch's values updated
and not yet others (deleted entities are never returned: the collection removes them first).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator, Sequence

import numpy as np
from pyroaring import BitMap

from core.analysis import Analyzer, text_key
from core.attribute.buckets import derived_values
from core.attribute.fuzzy import LiveDeleteIndex
from core.attribute.index import QU_FIELDS, AttributeStrategy, _readings_bytes, short_title
from core.attribute.phrases import SYNONYMS, decade_phrases
from core.attribute.vocabulary import (
    FIELD_PRIORS,
    FULL_FUZZY_FIELDS,
    PARTIAL_FIELDS,
    PARTIAL_PER_TOKEN,
    PARTIAL_STOP,
    Value,
    Vocabulary,
)
from core.cache import SharedLRU
from core.catalog import Entity
from core.collection import filter_value
from core.live import Change, LiveCollection

ValueName = tuple[str, str]  # (field, name): name as the build's vocab.json has it
# (field, value key) -> the synonym phrases meaning it, with their confidences
SYNONYMS_OF: dict[tuple[str, str], list[tuple[str, float]]] = {}
for _phrase, (_targets, _conf) in SYNONYMS.items():
    for _field, _value in _targets:
        SYNONYMS_OF.setdefault((_field, text_key(_value)), []).append((_phrase, _conf))


def contributions(e: Entity, analyzer: Analyzer) -> Iterator[tuple[str, str, str]]:
    """(field, name, spelling) of every value `e` has, as the build derives them: the catalog's
    QU_FIELDS (folded name, raw spelling), derived fields, "title" (short-title key and spelling;
    its full-title alias as field "alias"), and "text" (stems of title, artist and album)."""
    for f, value in e.categorical():
        if f in QU_FIELDS and (name := filter_value(value)):
            yield f, name, value
    for f, value in derived_values(e.attributes):
        yield f, value, value
    title = e.fields.get("title", "")
    if key := text_key(short_title(title)):
        yield "title", key, short_title(title)
        if text_key(title) != key:
            yield "alias", key, text_key(title)
    for stem in set(analyzer(" ".join(e.fields.get(f, "") for f in ("title", "artist", "album")))):
        yield "text", stem, stem


def _note_gain(gained: dict[ValueName, float | None], value: ValueName, sign: int, popularity: float) -> None:
    """One entity gained (sign 1, with its popularity) or lost (-1) `value`: `gained` keeps the
    largest popularity gained, or None once any entity lost it (LiveVocabulary._count)."""
    if sign < 0:
        gained[value] = None
    elif value not in gained or ((best := gained[value]) is not None and popularity > best):
        gained[value] = popularity


class LiveVocabulary(Vocabulary):
    """See the module docstring. spellings: value -> spelling -> ordinal -> uses, for the values
    displayed by their most used spelling (QU_FIELDS, "title"; a title's aliases under
    ("alias", key)); own: bitmaps of the values the collection does not hold."""

    full: LiveDeleteIndex
    tokens: LiveDeleteIndex

    def __init__(self, collection: LiveCollection) -> None:  # builds its own state: no super().__init__
        self.collection = collection
        self.analyzer = Analyzer()
        self.values: list[Value] = []
        self.names: list[ValueName] = []
        self.keys: list[str] = []  # text_key of each value's name
        self.vid_of: dict[ValueName, int] = {}
        self.popularity: dict[int, float] = {}
        self.by_name: dict[tuple[str, str], int] = {}
        self.same_key: dict[tuple[str, str], set[int]] = {}
        self.phrases: dict[str, list[tuple[int, float]]] = {}
        self.phrase_votes: dict[str, dict[int, float]] = {}
        self.vid_phrases: dict[int, dict[str, float]] = {}
        self.word_keys: Counter[str] = Counter()
        self.full = LiveDeleteIndex(min_chars=3)
        self.tokens = LiveDeleteIndex(SYNONYMS, min_chars=4)
        self.partial: dict[str, list[tuple[int, float]]] = {}
        self.partial_members: dict[str, set[int]] = {}
        self.partials: dict[int, tuple[str, ...]] = {}  # partial_words of each value id
        self.spellings: dict[ValueName, dict[str, dict[int, int]]] = {}
        # per value and spelling: its uses summed, and its first user (lowest ordinal; absent: unknown)
        self.totals: dict[ValueName, dict[str, int]] = {}
        self.firsts: dict[ValueName, dict[str, int]] = {}
        # each value's display spelling, dropped when a write may change it (_use)
        self.displays: dict[ValueName, str] = {}
        self.own: dict[str, dict[str, BitMap]] = {}
        self.text: dict[str, BitMap] = {}
        self.scale = 0.0
        self.lock = threading.Lock()
        self.apply([Change(o, None, e) for o, e in enumerate(collection.entities) if e is not None])

    def tie_key(self, vid: int) -> tuple[int | str, ...]:
        return self.names[vid]

    # -- writes ---------------------------------------------------------------------------------

    def apply(self, changes: Sequence[Change]) -> None:
        """Apply changes the collection has applied already (its bitmaps are the new ones)."""
        with self.lock:
            touched, gained = self._count(changes)
            scale = max(self.collection.max_popularity(), 1e-9)
            rescale = scale != self.scale
            self.scale = scale
            keys: set[str] = set()
            words: set[str] = set()
            for value in sorted(touched):
                self._refresh(value, keys, words, gained.get(value))
            if rescale:
                for vid in self.popularity:
                    self.values[vid] = self._value(vid, self.values[vid].display, self.values[vid].bitmap)
            self._republish(keys, words)

    def _count(self, changes: Sequence[Change]) -> tuple[set[ValueName], dict[ValueName, float | None]]:
        """Update spellings and own bitmaps (copy on write); returns the values touched and, per
        value, the largest popularity among the entities that gained it, or None when an entity
        lost it (an update takes the value from its old content and gives it to its new one)."""
        touched: set[ValueName] = set()
        gained: dict[ValueName, float | None] = {}
        copies: dict[ValueName, BitMap] = {}
        popularity = self.collection.popularity
        for c in changes:
            for sign, e in ((-1, c.old), (1, c.new)):
                pop = float(popularity[c.ordinal]) if sign > 0 else 0.0
                for f, name, spelling in contributions(e, self.analyzer) if e is not None else ():
                    if f in QU_FIELDS or f in ("title", "alias"):  # the others display as named
                        self._use((f, name), spelling, c.ordinal, sign)
                    value = (f if f != "alias" else "title", name)
                    touched.add(value)
                    if f != "text":  # a text word is never refreshed: no popularity to keep
                        _note_gain(gained, value, sign, pop)
                    if f in QU_FIELDS or f == "alias":
                        continue
                    if (f, name) not in copies:
                        source = self.text if f == "text" else self.own.get(f, {})
                        copies[(f, name)] = BitMap(source.get(name, BitMap()))
                    bits = copies[(f, name)]
                    (bits.add if sign > 0 else bits.discard)(c.ordinal)
        for (f, name), bits in copies.items():
            target = self.text if f == "text" else self.own.setdefault(f, {})
            if bits:
                target[name] = bits
            else:
                target.pop(name, None)
        return {v for v in touched if v[0] != "text"}, gained

    def _use(self, value: ValueName, spelling: str, ordinal: int, sign: int) -> None:
        """Count (sign 1) or uncount (-1) one use of `spelling` for `value` by entity `ordinal`.
        A use of the display spelling or the loss of another's leaves the display as it is (it
        only gains on the others); anything else makes _display work it out again. The spelling's
        total uses and first user are kept beside its uses, so _display costs O(spellings), not
        O(entities using them) (a genre's spelling has thousands)."""
        if (sign > 0) != (spelling == self.displays.get(value)):
            self.displays.pop(value, None)
        spellings = self.spellings.setdefault(value, {})
        uses = spellings.get(spelling)
        if uses is None:
            uses = spellings[spelling] = {}
        before = uses.get(ordinal, 0)
        count = max(before + sign, 0)
        totals, firsts = self.totals.setdefault(value, {}), self.firsts.setdefault(value, {})
        totals[spelling] = totals.get(spelling, 0) + count - before
        if count > 0:
            uses[ordinal] = count
            if spelling in firsts and ordinal < firsts[spelling]:
                firsts[spelling] = ordinal
            return
        uses.pop(ordinal, None)
        if firsts.get(spelling) == ordinal:
            del firsts[spelling]  # the next _display finds the new first user
        if not uses:
            del spellings[spelling], totals[spelling]
            firsts.pop(spelling, None)
            if not spellings:
                del self.spellings[value], self.totals[value], self.firsts[value]

    def _bitmap(self, value: ValueName) -> BitMap | None:
        f, name = value
        source = self.collection.bitmaps.get(f, {}) if f in QU_FIELDS else self.own.get(f, {})
        return source.get(name)

    def _display(self, value: ValueName) -> str:
        """The most used spelling; ties: the one whose first use comes first in catalog order."""
        if value in self.displays:
            return self.displays[value]
        totals, firsts = self.totals.get(value, {}), self.firsts.get(value, {})
        used = [(totals[s], -(firsts[s] if s in firsts else firsts.setdefault(s, min(u))), s)
                for s, u in self.spellings.get(value, {}).items()]
        display = self.displays[value] = max(used)[2] if used else value[1]
        return display

    def _value(self, vid: int, display: str, bitmap: BitMap) -> Value:
        f = self.names[vid][0]
        return Value(f, display, FIELD_PRIORS.get(f, 0.5) * (0.6 + 0.4 * self.popularity[vid] / self.scale), bitmap)

    def _refresh(self, value: ValueName, keys: set[str], words: set[str], gained: float | None = None) -> None:
        """Recompute one value (or drop it when no live entity has it), noting the phrase keys and
        partial-name words whose lists change. gained: when no entity lost the value in this batch,
        the largest popularity of those that gained it; its popularity (the max over its entities)
        then needs only that, not a read of the whole bitmap (thousands for a genre or a decade)."""
        bitmap = self._bitmap(value)
        vid = self.vid_of.get(value)
        if not bitmap:
            if vid is not None and vid in self.popularity:
                del self.popularity[vid]
                self._regroup(vid, value, keys, add=False)
                self._rephrase(vid, keys)
                for w in self.partial_words(vid):
                    self.partial_members[w].discard(vid)
                    words.add(w)
            return
        if vid is None:
            vid = self.vid_of[value] = len(self.names)
            self.names.append(value)
            self.keys.append(text_key(value[1]))
            self.values.append(Value(value[0], "", 0.0, bitmap))
        was = self.popularity.get(vid)  # None: new, or back after no live entity had it
        if was is None:
            self.popularity[vid] = 0.0
            self._regroup(vid, value, keys, add=True)
            gained = None  # new or back: its max from all its entities
        popularity = self.collection.popularity
        self.popularity[vid] = float(popularity[bitmap.to_array()].max()) if gained is None else \
            max(self.popularity[vid], gained)
        self.values[vid] = self._value(vid, self._display(value), bitmap)
        self._rephrase(vid, keys)
        if self.popularity[vid] != was:  # partial lists rank live values by popularity: else they stay as they are
            for w in self.partial_words(vid):
                self.partial_members.setdefault(w, set()).add(vid)
                words.add(w)

    def _regroup(self, vid: int, value: ValueName, keys: set[str], *, add: bool) -> None:
        """Values of one (field, key) share the synonyms of by_name: the last of them by name."""
        group_key = (value[0], self.keys[vid])
        group = self.same_key.setdefault(group_key, set())
        (group.add if add else group.discard)(vid)
        if group:
            self.by_name[group_key] = max(group, key=lambda v: self.names[v])
        else:
            self.by_name.pop(group_key, None)
        for v in group - {vid}:  # `vid` itself is rephrased by the caller
            self._rephrase(v, keys)

    def _phrases_of(self, vid: int) -> dict[str, float]:
        """The phrase keys of a live value and their confidences, as Vocabulary.__init__ makes them."""
        if vid not in self.popularity:
            return {}
        f, name = self.names[vid]
        key = self.keys[vid]
        aliases = self.spellings.get(("alias", name), {}) if f == "title" else {}
        out = {k: 1.0 for k in (key, *aliases) if k}
        for phrase, conf in decade_phrases(self.values[vid].display) if f == "decade" else ():
            if phrase:
                out[phrase] = max(out.get(phrase, 0.0), conf)
        if self.by_name.get((f, key)) == vid:
            for phrase, conf in SYNONYMS_OF.get((f, key), ()):
                out[phrase] = max(out.get(phrase, 0.0), conf)
        return out

    def _rephrase(self, vid: int, keys: set[str]) -> None:
        old, new = self.vid_phrases.get(vid, {}), self._phrases_of(vid)
        if old == new:
            return
        for k in old.keys() - new.keys():
            self.phrase_votes[k].pop(vid, None)
        for k, conf in new.items():
            self.phrase_votes.setdefault(k, {})[vid] = conf
        self.vid_phrases[vid] = new
        keys.update(old.keys() | new.keys())

    def partial_words(self, vid: int) -> tuple[str, ...]:
        """The words a multi-word PARTIAL_FIELDS name is found by alone (Vocabulary._partial), each
        once; kept per value id, whose name never changes (as tuples: the collector stops tracking
        a tuple of strings, and there is one per value)."""
        found = self.partials.get(vid)
        if found is None:
            f, name = self.names[vid]
            words = text_key(name).split()
            found = () if f not in PARTIAL_FIELDS or len(words) < 2 else \
                tuple(sorted(w for w in set(words) - PARTIAL_STOP if len(w) >= 3))
            self.partials[vid] = found
        return found

    def _republish(self, keys: set[str], words: set[str]) -> None:
        """Replace the phrase lists of `keys` and their fuzzy entries, and the partial lists of `words`."""
        for k in keys:
            votes = self.phrase_votes.get(k, {})
            was = k in self.phrases
            if votes:
                self.phrases[k] = list(votes.items())
            else:
                self.phrase_votes.pop(k, None)
                self.phrases.pop(k, None)
            if was != bool(votes):
                for w in set(k.split()):
                    self.word_keys[w] += 1 if votes else -1
                    if self.word_keys[w] > 0 or w in SYNONYMS:
                        self.tokens.add(w)
                    else:
                        del self.word_keys[w]
                        self.tokens.discard(w)
            full = bool(votes) and (k in SYNONYMS or any(self.names[v][0] in FULL_FUZZY_FIELDS for v in votes))
            (self.full.add if full else self.full.discard)(k)
        for w in words:
            self._repartial(w)

    def _repartial(self, word: str) -> None:
        members = self.partial_members.get(word, set())
        ranked = sorted(members, key=lambda v: (-self.popularity[v], self.tie_key(v)))[:PARTIAL_PER_TOKEN]
        if ranked:
            self.partial[word] = [(v, self._coverage(v, word)) for v in ranked]
        else:
            self.partial.pop(word, None)
            self.partial_members.pop(word, None)

    def _coverage(self, vid: int, word: str) -> float:
        return len(word) / sum(len(w) for w in text_key(self.names[vid][1]).split())


class LiveAttribute:
    """Applies Changes to a whole-index AttributeStrategy whose collection is the LiveCollection
    that made them: swaps in a LiveVocabulary at construction, then keeps it, the popularity
    prior and the readings cache in step with every batch."""

    def __init__(self, strategy: AttributeStrategy) -> None:
        if not isinstance(strategy.collection, LiveCollection):
            raise TypeError("the strategy's collection must be a LiveCollection")
        if strategy.members is not None:
            raise ValueError("live writes need a whole attribute index, but got a partition's")
        self.strategy = strategy
        self.collection = strategy.collection
        self.vocab = LiveVocabulary(strategy.collection)
        self._publish()

    def apply(self, changes: Sequence[Change]) -> None:
        self.vocab.apply(changes)
        self._publish()

    def _publish(self) -> None:
        s = self.strategy
        top = self.collection.max_popularity()
        s.vocab = self.vocab
        s.prior = (1.0 + self.collection.popularity.astype(np.float64)) / (1.0 + top)
        s.readings = SharedLRU(s.config.cache_bytes, _readings_bytes)  # readings of the old vocabulary
