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
Not yet: a lexical partition does not merge (its delta, holding every partition's writes, grows
until the index is rebuilt offline).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pyroaring import BitMap

from core.attribute.index import AttributeStrategy
from core.attribute.live import LiveAttribute
from core.catalog import load_catalog
from core.errors import IndexFormatError
from core.indexing import open_strategy
from core.lexical.index import LexicalIndex
from core.lexical.live import LiveLexicalIndex
from core.live import Change, LiveCollection
from core.live_base import LiveShardConfig, catalog_entities
from core.live_lexical import LexicalGeneration, LiveLexicalShard
from core.partitioning import DOCUMENT_DIR, QUERY_DIR, partition_info, read_partitions
from core.partitions import document_partition, query_partition
from core.query import Query
from core.types import Hits

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


def _lexical(root: Path, options: dict[str, object] | None = None) -> LexicalIndex:
    index = open_strategy(root, "lexical", options or {})
    if not isinstance(index, LexicalIndex):
        raise TypeError(f"expected a LexicalIndex, got {type(index).__name__}")
    return index


def outside_df(index: str, base: LexicalIndex, owner: Ownership) -> dict[tuple[int, str], int]:
    """(group, term) -> the whole catalog's df of every term the sibling partitions' bases hold
    and `base` (partition owner.partition's) does not (each partition stores the whole catalog's df)."""
    out: dict[tuple[int, str], int] = {}
    parent = Path(index).resolve().parent
    for q in range(owner.partitions):
        if q == owner.partition:
            continue
        sibling = _lexical(parent / DOCUMENT_DIR.format(q))
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
    catalog_entities(config, part.collection.ids, owner.owns_entity)  # the catalog this partition was cut from
    collection = LiveCollection.from_entities(load_catalog(config.catalog))
    strategy = OwnedAttribute(part.config, collection, part.vocab)  # LiveAttribute replaces the vocabulary
    strategy.owned = BitMap(o for o, eid in enumerate(collection.ids) if owner.owns_entity(eid))
    return strategy, collection, OwnedWriter(strategy, owner)


class PartitionLexicalShard(LiveLexicalShard):
    """A lexical partition's live shard: writes as the module docstring says; no merge yet."""

    def merge_wanted(self) -> bool:
        return False

    def merge(self) -> bool:
        return False


def open_partition_lexical(config: LiveShardConfig, owner: Ownership) -> PartitionLexicalShard:
    """The live shard of a lexical document partition at its offline base (position 0)."""
    base = _lexical(Path(config.index), dict(config.options))
    entities = catalog_entities(config, base.collection.ids, owner.owns_entity)
    index = LiveLexicalIndex(base, outside_df(config.index, base, owner))
    generation = LexicalGeneration(index, LiveCollection(entities, base.collection, in_place=False),
                                   owner.owns_entity)
    return PartitionLexicalShard(config, generation, 0)
