"""Live shards over one partition of a partitioned index directory (core.partitioning).

A live shard over partition p of P applies every catalog record and keeps searchable only what p owns:
- document partitions (part-<p>: lexical, semantic): the entities e with
  core.partitions.document_partition(e.id, P) == p. Semantic keeps only their writes (core.live_shard
  WriterShard `owns`). Lexical adds EVERY upsert to its delta, so its statistics (N, df, field
  lengths: core.lexical.live) count every copy written to any partition on top of the base's
  whole-catalog statistics, exactly as an unpartitioned live index does, and deletes at once
  the copies it does not own (core.live_lexical.owned_writes); a term of the whole catalog that
  no entity of the partition's base holds gets its df from the sibling partitions' bases
  (`outside_df`). So an entity scores the same in its partition as in one unpartitioned live
  shard at the same log position, and core.partitions.merge_partitions stays exact.
- query partitions (memory-<p>): the collection is the whole catalog (as offline); the
  cold-start predicted queries kept are those whose key has query_partition(key, P) == p.
- attribute over part-<p>: the query-understanding vocabulary follows every write (the whole
  catalog's, as the offline partition stores it), and retrieval returns only the partition's
  entities with the scores the whole index gives them (the catalog's largest popularity in the
  prior), as the offline partition does. It is held as a whole live index (core.attribute.live,
  built from the catalog file) whose searches are restricted to the owned ordinals
  (`OwnedAttribute`): memory is the whole catalog's, not 1/P of it.
A lexical partition merges as an unpartitioned live shard does (core.live_lexical: a base per
merge in its live directory, CURRENT, replay after the base's position), but keeps the statistics
it scored with (PartitionLexicalShard); the terms its new base lacks keep their df in the base's
OUTSIDE_FILE.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pyroaring import BitMap

from core.attribute.index import AttributeStrategy
from core.attribute.live import LiveAttribute
from core.catalog import Entity
from core.collection import Collection
from core.errors import IndexFormatError
from core.indexing import open_strategy
from core.lexical.build import Postings
from core.lexical.index import LexicalIndex
from core.lexical.live_merge import every_posting
from core.lexical.segments import View
from core.lexical.stats import CorpusStats
from core.live import Change, LiveCollection
from core.live_base import LiveShardConfig, catalog_entities, whole_catalog
from core.live_lexical import LiveLexicalShard, OutsideDf, open_lexical, open_lexical_shard, write_base
from core.partitioning import DOCUMENT_DIR, QUERY_DIR, partition_info, read_partitions
from core.partitions import document_partition, query_partition
from core.query import Query
from core.types import Hits

OUTSIDE_FILE = "outside_df.json"  # in a merged partition base: [[group, term, df], ...]

__all__ = ["OwnedAttribute", "OwnedWriter", "Ownership", "PartitionLexicalShard", "open_partition_attribute",
           "open_partition_lexical", "outside_df", "partition_of"]


@dataclass(frozen=True)
class Ownership:
    """Partition `partition` of `partitions`: which entities (document partitions) and which query
    keys (query partitions) it owns."""

    partition: int
    partitions: int

    def owns_entity(self, entity_id: str) -> bool:
        return document_partition(entity_id, self.partitions) == self.partition

    def owns_key(self, key: str) -> bool:
        return query_partition(key, self.partitions) == self.partition


def partition_of(index: str) -> Ownership | None:
    """The partition an index directory serves: part-<p> by its "partition" component, memory-<p>
    by its name under a partitions.json; None for a whole index."""
    info = partition_info(index)
    if info is not None:
        return Ownership(info.partition, info.partitions)
    layout = read_partitions(Path(index).resolve().parent)
    if layout is None:
        return None
    found = re.fullmatch(QUERY_DIR.format(r"(\d+)"), Path(index).resolve().name)
    if found is None or int(found.group(1)) >= layout.partitions:
        raise IndexFormatError(Path(index), f"is not a {DOCUMENT_DIR.format('<p>')} or {QUERY_DIR.format('<p>')} "
                               "directory of its partitioned index")
    return Ownership(int(found.group(1)), layout.partitions)


def outside_df(index: str, base: LexicalIndex, owner: Ownership) -> dict[tuple[int, str], int]:
    """(group, term) -> the whole catalog's df of every term the sibling partitions' bases hold
    and `base` (partition owner.partition's) does not (each partition stores the whole catalog's df)."""
    out: dict[tuple[int, str], int] = {}
    parent = Path(index).resolve().parent
    for q in range(owner.partitions):
        if q == owner.partition:
            continue
        sibling = open_lexical(parent / DOCUMENT_DIR.format(q), {})
        if sibling.df is None:
            raise IndexFormatError(parent / DOCUMENT_DIR.format(q), "is a partition without whole-catalog df")
        for g, vocab in enumerate(sibling.vocab):
            mine = base.vocab[g]
            for term, tid in vocab.items():
                if term not in mine:
                    out[(g, term)] = int(sibling.df[tid])
    return out


class OwnedAttribute(AttributeStrategy):
    """A whole live attribute index that retrieves only the entities of one document partition
    (`owned`: their ordinals, live or dead, replaced on every write by OwnedWriter)."""

    owned: BitMap

    def retrieve(self, query: Query, quota: int, allowed: BitMap | None) -> Hits:
        mine = self.owned - self.collection.deleted if allowed is None else allowed & self.owned
        return super().retrieve(query, quota, mine)


class OwnedWriter:
    """core.attribute.live.LiveAttribute, then the ordinals of newly written owned entities added
    to the strategy's `owned` (a new bitmap: a search holds the one it read)."""

    def __init__(self, strategy: OwnedAttribute, owner: Ownership) -> None:
        self.strategy = strategy
        self.owner = owner
        self.live = LiveAttribute(strategy)

    def apply(self, changes: Sequence[Change]) -> None:
        self.live.apply(changes)
        new = [c.ordinal for c in changes if c.new is not None and self.owner.owns_entity(c.new.id)]
        if new:
            self.strategy.owned = self.strategy.owned | BitMap(new)


def open_partition_attribute(config: LiveShardConfig, owner: Ownership
                             ) -> tuple[OwnedAttribute, LiveCollection, OwnedWriter]:
    """The live attribute index of the whole catalog (config.catalog, checked against the
    partition's entities) restricted to partition `owner` (module docstring)."""
    part = open_strategy(config.index, "attribute", config.options)
    if not isinstance(part, AttributeStrategy):
        raise TypeError(f"expected an AttributeStrategy, got {type(part).__name__}")
    whole = whole_catalog(config)
    catalog_entities(config, part.collection.ids, owner.owns_entity, whole)  # the catalog this partition was cut from
    collection = LiveCollection.from_entities(whole)
    strategy = OwnedAttribute(part.config, collection, part.vocab)  # LiveAttribute replaces the vocabulary
    strategy.owned = BitMap(o for o, eid in enumerate(collection.ids) if owner.owns_entity(eid))
    return strategy, collection, OwnedWriter(strategy, owner)


def view_df(view: View, outside: Mapping[tuple[int, str], int]) -> dict[tuple[int, str], int]:
    """(group, term) -> the df a partition's `view` scores with (the whole catalog's base df, or
    `outside`'s, plus every delta copy holding it), for every term it knows."""
    names, key, doc, _ = every_posting(view)
    base = view.segments.base
    delta = np.bincount(key[doc >= view.n_base], minlength=len(names))
    out = dict(outside)
    for k, name in enumerate(names):
        out[name] = (int(base.df[k]) if k < len(base.df) else outside.get(name, 0)) + int(delta[k])
    return out


class PartitionLexicalShard(LiveLexicalShard):
    """A lexical partition's live shard (module docstring). A merge folds the partition's live
    entities into a new base whose statistics are the ones it scored with (the whole catalog's
    base statistics plus every copy written to any partition, dead ones included): scores do not
    change at a merge, so partitions merging at different times still score alike. (Unlike an
    unpartitioned merge, dead copies keep counting until an offline rebuild.)"""

    def _write_base(self, view: View, catalog: Sequence[Entity], bitmaps: Mapping[str, Mapping[str, BitMap]],
                    position: int) -> tuple[Path, Collection]:
        known = view_df(view, view.segments.outside_df)

        def partition(postings: Postings) -> tuple[tuple[CorpusStats, np.ndarray], Mapping[str, bytes]]:
            kept = [(g, t) for g, terms in enumerate(postings.terms) for t in terms]
            df = np.array([known[name] for name in kept], dtype=np.int64)
            held = set(kept)
            outside = [[g, t, n] for (g, t), n in sorted(known.items()) if (g, t) not in held]
            return (view.stats, df), {OUTSIDE_FILE: json.dumps(outside, ensure_ascii=False).encode()}

        return write_base(self.live_dir, view, catalog, bitmaps, position, self.source_index_id, self.entity_lines,
                          partition)


def read_outside(root: Path) -> dict[tuple[int, str], int]:
    """The outside df a merged partition base stores (OUTSIDE_FILE)."""
    return {(int(g), str(t)): int(n) for g, t, n in json.loads((root / OUTSIDE_FILE).read_bytes())}


def partition_outside(index: str, owner: Ownership) -> OutsideDf:
    """The outside df of partition `owner` at `index`: its offline base's from the sibling
    partitions' bases (outside_df), a merged base's from the base (read_outside)."""

    def outside(root: Path, base: LexicalIndex) -> Mapping[tuple[int, str], int]:
        return outside_df(index, base, owner) if root.resolve() == Path(index).resolve() else read_outside(root)

    return outside


def open_partition_lexical(config: LiveShardConfig, owner: Ownership) -> LiveLexicalShard:
    """The live shard (a PartitionLexicalShard) of a lexical document partition at its newest
    merged base, or its offline base (position 0) when there is none."""
    return open_lexical_shard(config, owner.owns_entity, partition_outside(config.index, owner), PartitionLexicalShard)
