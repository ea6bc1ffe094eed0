"""The attribute strategy: structured search over Roaring bitmaps, driven by query understanding.

On disk (component "attribute", see core.storage):
- vocab.json: {field: [[name, display, popularity, [alias, ...]], ...]}: the value vocabulary.
  For the catalog's categorical fields (QU_FIELDS) `name` is the collection's folded value and the
  bitmap is the collection's own filter bitmap (not stored twice); for the derived fields (mood,
  tempo, danceability: core.attribute.buckets) and "title" (short title: the part before " - ",
  "(" or "[") `name` keys the bitmaps stored here. popularity: the largest of the value's entities.
- bitmaps.json + bitmaps.roaring: {field: {name: [offset, size]}} of serialized Roaring bitmaps,
  for the derived fields, "title" and "text" (stemmed word -> entities having it in title, artist
  or album: the free-text index).

In a document partition of a larger catalog (core.partitioning), the vocabulary is the whole
catalog's (every value, display form and popularity, every free-text word, with an empty bitmap
where the partition has none), so every partition understands a query as one index over everything
would: the value bitmaps (QU_FIELDS too, stored here then) are the whole catalog's, in its
ordinals, since a reading is kept only when some entity of the catalog satisfies all its slots;
members.roaring holds the partition's entities as catalog ordinals, in the partition's order,
and params["max_popularity"] the catalog's largest popularity. The text bitmaps are the
partition's own. Retrieve maps a reading's entities to the partition's ordinals. Cost: every
partition holds the catalog's value bitmaps (on the demo catalog, 2 partitions hold 6.7 MB of
attribute component each against 5.0 MB for one index): understanding is not split, retrieval is.

Retrieve: the top `max_interpretations` readings of the query (core.attribute.understand); an
entity's score = sum of the likelihoods of the readings it satisfies, times (1 + popularity) /
(1 + the catalog's largest popularity). A reading with slots and free text gives its full
likelihood to entities satisfying both, and `relax` x likelihood to those satisfying the slots only.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pyroaring import BitMap

from core.analysis import Analyzer, text_key
from core.attribute.buckets import DERIVED_FIELDS, derived_values
from core.attribute.understand import Analysis, UnderstandConfig, analyse
from core.attribute.vocabulary import ValueEntry, Vocabulary
from core.cache import SharedLRU
from core.catalog import Entity
from core.collection import Collection, filter_value
from core.query import Query
from core.storage import ComponentReader, ComponentWriter
from core.types import Hits, Interpretation, StrategyEntry, StrategyKind

COMPONENT = "attribute"
QU_FIELDS = ("artist", "album", "genre", "subgenre", "decade", "year", "playlist")
DEFAULT_MAX_INTERPRETATIONS = 4
DEFAULT_RELAX = 0.5
# Readings of recent query texts, kept for the Retrieve that follows the broker's Understand of the
# same text and for repeated queries (popular queries repeat). A reading holds its slots' bitmap, so
# the bound is on bytes: 32 MiB keeps thousands of texts at the demo's scale.
DEFAULT_CACHE_BYTES = 32 * 2**20
_READING_BYTES = 256  # an Analysis without its bitmap, roughly
_TITLE_CUT = re.compile(r"\s+-\s+|\s*[(\[]")


@dataclass(frozen=True, kw_only=True)
class AttributeConfig:
    """Run-time settings. max_interpretations: readings Retrieve uses, 1..32; relax: share of a
    reading's likelihood given to entities matching its slots but not its free text, in [0, 1];
    cache_bytes: bound of the cache of recent texts' readings (0 = no cache)."""

    max_interpretations: int = DEFAULT_MAX_INTERPRETATIONS
    relax: float = DEFAULT_RELAX
    understand: UnderstandConfig = field(default_factory=UnderstandConfig)
    cache_bytes: int = DEFAULT_CACHE_BYTES

    def __post_init__(self) -> None:
        if not 1 <= self.max_interpretations <= 32:
            raise ValueError(f"`max_interpretations` must be in [1, 32], but got {self.max_interpretations}")
        if not (math.isfinite(self.relax) and 0 <= self.relax <= 1):
            raise ValueError(f"`relax` must be in [0, 1], but got {self.relax}")
        if self.cache_bytes < 0:
            raise ValueError(f"`cache_bytes` must be >= 0, but got {self.cache_bytes}")

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> AttributeConfig:
        """From CLI-style options: max_interpretations, relax, beam, max_span_tokens, cache_bytes."""
        qu = {k: int(options[k]) for k in ("beam", "max_span_tokens") if k in options}
        return cls(max_interpretations=int(options.get("max_interpretations", DEFAULT_MAX_INTERPRETATIONS)),
                   relax=float(options.get("relax", DEFAULT_RELAX)), understand=UnderstandConfig(**qu),
                   cache_bytes=int(options.get("cache_bytes", DEFAULT_CACHE_BYTES)))


def _readings_bytes(item: tuple[int, list[Analysis]]) -> int:
    """Estimated bytes of cached readings: a Roaring array container takes 2 bytes per entity (denser
    containers take less, so this over-counts them)."""
    return sum(_READING_BYTES + 2 * (len(a.slot_bits) if a.slot_bits is not None else 0) for a in item[1])


def _below(bits: BitMap, n: int) -> np.ndarray:
    """The members of `bits` below `n`, uint32, ascending."""
    members = np.asarray(bits.to_array(), dtype=np.uint32)
    return members[:int(np.searchsorted(members, n))]


def short_title(title: str) -> str:
    """"Love Story - Taylor's Version" -> "Love Story"; "Bad Guy (with Justin Bieber)" -> "Bad Guy"."""
    return _TITLE_CUT.split(title, maxsplit=1)[0].strip() or title.strip()


class AttributeStrategy:
    """A loaded attribute index; implements core.types.Strategy and SupportsUnderstand."""

    kind = StrategyKind.ATTRIBUTE
    vector_dim = 0

    def __init__(self, config: AttributeConfig, collection: Collection, vocab: Vocabulary, *,
                 members: BitMap | None = None, max_popularity: float | None = None) -> None:
        """members: in a partition, its entities as catalog ordinals (ascending: the partition keeps
        catalog order), which the value bitmaps use; max_popularity: the catalog's largest
        popularity (default: the collection's)."""
        if members is not None and len(members) != len(collection):
            raise ValueError(f"`members` must hold {len(collection)} ordinals, but got {len(members)}")
        self.config = config
        self.collection = collection
        self.vocab = vocab
        self.members = members
        self.member_ordinals = np.asarray(members.to_array(), dtype=np.int64) if members is not None else None
        pop = collection.popularity.astype(np.float64)
        top = max_popularity if max_popularity is not None else (pop.max() if pop.size else 0.0)
        self.prior = (1.0 + pop) / (1.0 + top)
        # text -> (readings asked for, the readings); analyse's first n readings do not depend on
        # how many more were asked for, so a longer cached list answers a shorter request
        self.readings: SharedLRU[str, tuple[int, list[Analysis]]] = SharedLRU(config.cache_bytes, _readings_bytes)

    def analyse(self, text: str, n: int) -> list[Analysis]:
        """core.attribute.understand.analyse of `text` with this index's vocabulary, cached."""
        cached = self.readings.get(text, usable=lambda item: item[0] >= n)
        if cached is not None:
            return cached[1][:n]
        readings = analyse(text, self.vocab, n, self.config.understand)
        self.readings.put(text, (n, readings))
        return readings

    def understand(self, query: Query, max_interpretations: int) -> tuple[Interpretation, ...]:
        return tuple(a.interpretation for a in self.analyse(query.text, max_interpretations))

    def local(self, bits: BitMap) -> BitMap:
        """Catalog ordinals -> this index's ordinals of those it holds (the same in a whole index)."""
        if self.members is None or self.member_ordinals is None:
            return bits
        held = (bits & self.members).to_array()
        return BitMap(np.searchsorted(self.member_ordinals, held).astype(np.uint32))

    def retrieve(self, query: Query, quota: int, allowed: BitMap | None) -> Hits:
        readings = self.analyse(query.text, self.config.max_interpretations)
        # One size for the whole call: a live collection (core.live) may grow meanwhile, so
        # ordinals past the prior's length (written after this search began) are left out.
        prior = self.prior
        n = prior.size
        acc = np.zeros(n, dtype=np.float64)
        for r in readings:
            like = r.interpretation.likelihood
            text = self.vocab.text_bitmap(r.free_words) if r.free_words else None
            slot_bits = self.local(r.slot_bits) if r.slot_bits is not None else None
            if slot_bits is None:
                if text is not None:
                    acc[_below(text, n)] += like
            elif text is None:
                acc[_below(slot_bits, n)] += like
            else:
                acc[_below(slot_bits, n)] += like * self.config.relax
                acc[_below(slot_bits & text, n)] += like * (1.0 - self.config.relax)
        if allowed is not None:
            mask = self.collection.mask(allowed)[:n]
            acc[:mask.size] *= mask
            acc[mask.size:] = 0.0
        elif self.collection.deleted:
            acc[_below(self.collection.deleted, n)] = 0.0
        candidates = np.flatnonzero(acc > 0)
        scores = (acc[candidates] * prior[candidates]).astype(np.float32)
        # By the float32 score the wire carries, then the ordinal: the order partitions merge by.
        order = np.lexsort((candidates, -scores))[:quota]
        return Hits(candidates[order].astype(np.int64), scores[order], int(candidates.size),
                    tuple(r.interpretation for r in readings))

    def warm_up(self) -> None:
        self.vocab.analyzer("warm up")
        analyse("warm up 90s chill songs", self.vocab, 2, self.config.understand)

    def describe(self) -> dict[str, str]:
        counts = Counter(v.field for v in self.vocab.values)
        return {"max_interpretations": str(self.config.max_interpretations), "relax": str(self.config.relax),
                "beam": str(self.config.understand.beam), "values": str(len(self.vocab.values)),
                "fields": ",".join(f"{f}:{n}" for f, n in sorted(counts.items())),
                "phrases": str(len(self.vocab.phrases)), "text_words": str(len(self.vocab.text))}

    # -- build and storage -------------------------------------------------------------------

    @classmethod
    def build(cls, entities: Sequence[Entity], collection: Collection, root: str | os.PathLike[str],
              options: Mapping[str, Any]) -> None:
        write_index(entities, collection, root)

    @classmethod
    def load(cls, root: str | os.PathLike[str], collection: Collection,
             options: Mapping[str, Any] | None = None) -> AttributeStrategy:
        r = ComponentReader(root, COMPONENT)
        blob = r.read_bytes("bitmaps.roaring")
        own = {f: {name: BitMap.deserialize(blob[off:off + size]) for name, (off, size) in values.items()}
               for f, values in r.read_json("bitmaps.json").items()}
        entries = []
        for f, rows in r.read_json("vocab.json").items():
            source = own.get(f) if f in own else collection.bitmaps.get(f, {})
            for name, display, popularity, aliases in rows:
                bitmap = (source or {}).get(name)
                if bitmap is not None:
                    entries.append(ValueEntry(f, text_key(name), display, popularity, bitmap, tuple(aliases)))
        members = BitMap.deserialize(r.read_bytes("members.roaring")) if "members.roaring" in r.files else None
        max_pop = float(r.params["max_popularity"]) if members is not None else \
            (float(collection.popularity.max()) if len(collection) else 0.0)
        vocab = Vocabulary(entries, own.get("text", {}), max_pop)
        return cls(AttributeConfig.from_options(options or {}), collection, vocab, members=members,
                   max_popularity=max_pop)


def _display_forms(entities: Sequence[Entity]) -> dict[tuple[str, str], str]:
    """(field, folded value) -> the spelling used most often in the catalog (ties: first seen)."""
    counts: dict[tuple[str, str], Counter[str]] = {}
    for e in entities:
        for name, value in e.categorical():
            if name in QU_FIELDS:
                counts.setdefault((name, filter_value(value)), Counter())[value] += 1
    return {k: c.most_common(1)[0][0] for k, c in counts.items()}


def _own_bitmaps(entities: Sequence[Entity]) -> tuple[dict[str, dict[str, BitMap]], dict[str, dict[str, Any]]]:
    """Bitmaps of the derived fields, short titles and the free-text index; title display forms
    and aliases (full-title keys)."""
    own: dict[str, dict[str, BitMap]] = {f: {} for f in (*DERIVED_FIELDS, "title", "text")}
    titles: dict[str, dict[str, Any]] = {}
    analyzer = Analyzer()
    for i, e in enumerate(entities):
        for f, value in derived_values(e.attributes):
            own[f].setdefault(value, BitMap()).add(i)
        title = e.fields.get("title", "")
        key = text_key(short_title(title))
        if key:
            own["title"].setdefault(key, BitMap()).add(i)
            meta = titles.setdefault(key, {"display": Counter(), "aliases": set()})
            meta["display"][short_title(title)] += 1
            if text_key(title) != key:
                meta["aliases"].add(text_key(title))
        text = " ".join(e.fields.get(f, "") for f in ("title", "artist", "album"))
        for stem in set(analyzer(text)):
            own["text"].setdefault(stem, BitMap()).add(i)
    return own, titles


@dataclass(frozen=True)
class AttributeTables:
    """What the attribute component of a catalog holds (module docstring): vocab rows per field
    [name, display, popularity, aliases]; own: bitmaps of the derived fields, "title" and "text"."""

    vocab: dict[str, list[list[Any]]]
    own: dict[str, dict[str, BitMap]]


def attribute_tables(entities: Sequence[Entity], collection: Collection) -> AttributeTables:
    """The vocabulary and bitmaps of `entities` (the collection's catalog)."""
    pop = collection.popularity

    def top(bitmap: BitMap) -> float:
        return float(pop[bitmap.to_array()].max()) if bitmap else 0.0

    displays = _display_forms(entities)
    vocab: dict[str, list[list[Any]]] = {}
    for f in QU_FIELDS:
        for name, bitmap in sorted(collection.bitmaps.get(f, {}).items()):
            vocab.setdefault(f, []).append([name, displays.get((f, name), name), top(bitmap), []])
    own, titles = _own_bitmaps(entities)
    for f in DERIVED_FIELDS:
        vocab[f] = [[name, name, top(b), []] for name, b in sorted(own[f].items())]
    vocab["title"] = [[key, titles[key]["display"].most_common(1)[0][0], top(b), sorted(titles[key]["aliases"])]
                      for key, b in sorted(own["title"].items())]
    return AttributeTables(vocab, own)


def partition_tables(tables: AttributeTables, collection: Collection, members: BitMap) -> AttributeTables:
    """The tables a partition holding `members` (catalog ordinals) stores: the catalog's vocabulary
    and value bitmaps (QU_FIELDS from the catalog's `collection`), the text bitmaps restricted to
    the partition and renumbered in its order (every word kept, empty where it has none)."""
    ordinals = np.asarray(members.to_array(), dtype=np.int64)
    own = {f: dict(values) for f, values in tables.own.items() if f != "text"}
    for f in QU_FIELDS:
        if f in collection.bitmaps:
            own[f] = dict(collection.bitmaps[f])
    own["text"] = {word: BitMap(np.searchsorted(ordinals, (bits & members).to_array()).astype(np.uint32))
                   for word, bits in tables.own["text"].items()}
    return AttributeTables(tables.vocab, own)


def write_index(entities: Sequence[Entity], collection: Collection, root: str | os.PathLike[str]) -> None:
    """Write the attribute component for `entities` (the collection's catalog) under `root`."""
    write_tables(attribute_tables(entities, collection), root, entities=len(entities))


def write_tables(tables: AttributeTables, root: str | os.PathLike[str], *, entities: int,
                 members: BitMap | None = None, max_popularity: float = 0.0) -> None:
    """Write the attribute component; members and max_popularity: a partition's (module docstring)."""
    blob = bytearray()
    directory: dict[str, dict[str, list[int]]] = {}
    for f in sorted(tables.own):
        for name in sorted(tables.own[f]):
            data = tables.own[f][name].serialize()
            directory.setdefault(f, {})[name] = [len(blob), len(data)]
            blob += data
    params: dict[str, Any] = {"entities": entities, "fields": sorted(tables.vocab)}
    if members is not None:
        params["max_popularity"] = max_popularity
    with ComponentWriter(root, COMPONENT, params) as w:
        w.write_json("vocab.json", tables.vocab)
        w.write_json("bitmaps.json", directory)
        w.write_bytes("bitmaps.roaring", bytes(blob))
        if members is not None:
            w.write_bytes("members.roaring", members.serialize())


ENTRY = StrategyEntry(build=AttributeStrategy.build, load=AttributeStrategy.load)
