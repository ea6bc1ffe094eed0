"""A live shard: one strategy of an index that applies the catalog log (core.catalog_log) while it serves.

The log is the shard's write-ahead log: a shard starts from a base (the offline index directory,
position 0, the lexical strategy's newest merged base, core.live_lexical, or the semantic
strategy's newest checkpoint, core.live_checkpoint) and applies every
record after the base's position, in position order; a restart does the same again, so nothing
acknowledged is lost and nothing is applied twice into a base.

- Visibility: a batch of records is applied under `lock`, and every search runs under
  `reading()` (the same lock: the shard's searches run one at a time on one worker thread, so
  the lock is uncontended between writes), so a search sees a batch entirely or not at all, and
  the strategy object `strategy` it reads (collection, index, vocabulary) is one consistent state.
  The semantic writer embeds a batch and inserts its new entities' vectors, not yet searchable,
  before the lock (LiveSemantic.prepare, core.semantic.ann's staged keys); the rest (lexical
  analysis, vocabulary updates, replaced vectors, publishing the staged ones) runs inside it, so a
  search waits for at most one read (the tail applies `DEFAULT_CATALOG_BATCH` records at once,
  and the rest of the batch the read ends in: core.catalog_store.after; one thread, batches of 10
  new demo tracks hold it p50 1.15 ms lexical, 0.59 semantic, 3.35 attribute, 0.60 memory). A
  batch also holds `applying`, which a checkpoint's snapshot takes instead of `lock`: it waits for
  no search and no search waits for it.
- Ordinals: semantic, attribute and memory share core.live.LiveCollection in place (an upsert
  keeps its ordinal: the memory strategy's learned pairs stay with the entity); the lexical shard
  uses append mode (core.live_lexical), the ordinal space of core.lexical.live.
- Attribute and memory rebuild their live state from the catalog the index was built from
  (`catalog`) and replay the whole log at start. The lexical shard needs the catalog only until
  its first merge (a merged base stores its own entities); the semantic shard (with a live_dir)
  only until its first checkpoint (core.live_checkpoint: the whole live state at a position,
  written on the merge thread when more than `merge_entities` writes were applied since the last),
  so a restart re-encodes only the upserts after it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import cast

from core.attribute.index import AttributeStrategy
from core.attribute.live import LiveAttribute
from core.catalog_log import CatalogRecord
from core.errors import InvalidArgumentError
from core.indexing import open_strategy
from core.live import Delete, LiveCollection, SupportsWrite, Upsert, Write, apply_writes
from core.live_base import (
    DEFAULT_CATALOG_BATCH,
    DEFAULT_MERGE_ENTITIES,
    LiveShard,
    LiveShardConfig,
    catalog_entities,
)
from core.live_checkpoint import CHECKPOINTED, Checkpoints, SupportsCheckpoint
from core.live_dir import source_index_id
from core.live_lexical import open_lexical_shard
from core.live_partition import Ownership, open_partition_attribute, open_partition_lexical, partition_of
from core.memory.index import MemoryStrategy
from core.memory.live import LiveMemory
from core.memory.predict import DEFAULT_MAX_PER_QUERY
from core.semantic.index import SemanticStrategy
from core.semantic.live import LiveSemantic
from core.types import Strategy, StrategyKind

__all__ = ["DEFAULT_CATALOG_BATCH", "DEFAULT_MERGE_ENTITIES", "LiveShard", "LiveShardConfig", "WriterShard",
           "catch_up", "open_live_shard"]


class WriterShard(LiveShard):
    """Semantic, attribute or memory: the loaded strategy on a LiveCollection (in place) with its
    live writer (core.semantic.live, core.attribute.live, core.memory.live). With `checkpoints`
    (semantic), merge() writes the whole live state as the shard's new base (core.live_checkpoint)
    once more than `merge_entities` writes (upserts and deletes) were applied since the last one."""

    def __init__(self, strategy: Strategy, collection: LiveCollection, writer: SupportsWrite,
                 owns: Callable[[str], bool] | None = None, *, checkpoints: Checkpoints | None = None,
                 base_position: int = 0, merge_entities: int = 0) -> None:
        super().__init__(base_position)
        self.owns = owns  # a document partition's (core.live_partition): the writes of its entities only
        self._strategy = strategy
        self.collection = collection
        self.writer = writer
        self.checkpoints = checkpoints
        self.merge_entities = merge_entities
        self.upserts = 0  # since the base
        self.writes = 0  # upserts and deletes since the base
        self.rejected = 0  # writes the writer refused (check), never applied
        self.last_snapshot_s = 0.0  # the last checkpoint's snapshot time (batches wait for it, searches do not)

    @property
    def pending_entities(self) -> int:
        return self.upserts

    @property
    def prepares(self) -> bool:
        return hasattr(self.writer, "prepare")  # the semantic writer embeds before the lock

    def _prepare(self, writes: Sequence[Write]) -> None:
        prepare = getattr(self.writer, "prepare", None)
        if prepare is not None:
            prepare(writes)

    def _apply(self, writes: Sequence[Write]) -> None:
        apply_writes(self.collection, [self.writer], writes)
        self.upserts += sum(isinstance(w, Upsert) for w in writes)
        self.writes += len(writes)

    def _merge_limit(self) -> int:
        return self.merge_entities if self.checkpoints is not None else 0

    def _merge_backlog(self) -> int:
        return self.writes

    def _merge(self) -> bool:
        """Write a checkpoint at the applied position (core.live_checkpoint); False without checkpoints."""
        if self.checkpoints is None:
            return False
        with self.applying:  # no batch meanwhile; searches go on (they only read what it copies)
            if self._unmergeable():
                return False
            started = time.perf_counter()
            snapshot = self.checkpoints.take(cast(SupportsCheckpoint, self.strategy), self.collection,
                                             self.applied_position)
            upserts, writes = self.upserts, self.writes
            self.last_snapshot_s = time.perf_counter() - started
        self.checkpoints.write(snapshot)
        with self.applying:
            self.base_position = snapshot.position
            self.upserts -= upserts
            self.writes -= writes
            self.merges += 1
        return True

    def _accepted(self, writes: list[Write]) -> list[Write]:
        """The writes the writer accepts (the broker validated them; a writer with a `check`, the
        semantic one, refuses a vector of the wrong shape): a refused write is counted and skipped,
        never left to stop the log."""
        if self.owns is not None:
            owns = self.owns
            writes = [w for w in writes if owns(w.entity_id if isinstance(w, Delete) else w.entity.id)]
        check = getattr(self.writer, "check", None)
        if check is None:
            return list(writes)
        kept = []
        for w in writes:
            try:
                check([w])
                kept.append(w)
            except InvalidArgumentError:
                self.rejected += 1
        return kept

    def describe(self) -> dict[str, str]:
        return {**super().describe(), "catalog.rejected": str(self.rejected),
                "catalog.snapshot_ms": f"{self.last_snapshot_s * 1000:.1f}"}


def _writer_shard(config: LiveShardConfig, owner: Ownership | None) -> WriterShard:
    if owner is not None and config.strategy == StrategyKind.ATTRIBUTE:
        return WriterShard(*open_partition_attribute(config, owner))
    kind = StrategyKind(config.strategy)
    checkpoints = Checkpoints(config.live_dir, source_index_id(config.index)) if (
        config.live_dir and kind in CHECKPOINTED) else None
    found = None if checkpoints is None else checkpoints.open(kind, config.options)
    if found is None:
        strategy = open_strategy(config.index, config.strategy, config.options)
        owns = _owns(owner, strategy)
        collection = LiveCollection(catalog_entities(config, strategy.collection.ids, owns), strategy.collection)
        strategy.collection = collection
        position = 0
    else:
        strategy, collection, position = found
        owns = _owns(owner, strategy)
    # the component does not record the build's max_per_query: the run-time option names it
    writer = live_writer(strategy, max_per_query=int(config.options.get("max_per_query", DEFAULT_MAX_PER_QUERY)),
                         owns_key=None if owner is None else owner.owns_key)
    return WriterShard(strategy, collection, writer, owns, checkpoints=checkpoints, base_position=position,
                       merge_entities=config.merge_entities)


def _owns(owner: Ownership | None, strategy: Strategy) -> Callable[[str], bool] | None:
    """A document partition's collection holds its entities; a memory partition's the whole catalog."""
    return owner.owns_entity if owner is not None and not isinstance(strategy, MemoryStrategy) else None


def live_writer(strategy: Strategy, *, max_per_query: int = DEFAULT_MAX_PER_QUERY,
                owns_key: Callable[[str], bool] | None = None) -> SupportsWrite:
    """The live writer of a semantic, attribute or memory strategy whose collection is already its
    LiveCollection (lexical shards: core.live_lexical); owns_key: a memory partition's query keys."""
    if isinstance(strategy, SemanticStrategy):
        return LiveSemantic(strategy)
    if isinstance(strategy, AttributeStrategy):
        return LiveAttribute(strategy)
    if isinstance(strategy, MemoryStrategy):
        return LiveMemory(strategy, max_per_query, owns_key)
    raise ValueError(f"no live writer for the {strategy.kind.value} strategy")


def open_live_shard(config: LiveShardConfig) -> LiveShard:
    """The live shard of config.strategy at its base (not yet caught up with the log: the caller
    applies catalog_after(applied_position) until it is empty, then serves); over a partition of a
    partitioned index, core.live_partition's."""
    owner = partition_of(config.index)
    if config.strategy == StrategyKind.LEXICAL:
        return open_lexical_shard(config) if owner is None else open_partition_lexical(config, owner)
    return _writer_shard(config, owner)


def catch_up(shard: LiveShard, read: Callable[[int, int], Sequence[CatalogRecord]],
             batch: int = DEFAULT_CATALOG_BATCH) -> int:
    """Apply read(applied_position, batch) until it returns nothing; returns the records applied."""
    total = 0
    while records := read(shard.applied_position, batch):
        total += shard.apply(records)
    return total
