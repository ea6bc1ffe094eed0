"""The parts every live shard shares (core.live_shard has the whole story): its configuration and
the LiveShard base class, which applies catalog records as batches under the lock searches read under."""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.catalog import Entity, load_catalog
from core.catalog_log import CatalogRecord
from core.errors import CatalogError
from core.live import Write
from core.types import Strategy, StrategyKind

DEFAULT_CATALOG_BATCH = 1000  # records read and applied at once (catalog_after's limit)
DEFAULT_MERGE_ENTITIES = 5_000  # lexical delta documents (dead copies included) / semantic writes that start a merge
# The nice value a shard adds to the thread that merges (services.shard_live; 0 = the searches'
# priority, and the encoding thread too; otherwise that one runs under SCHED_IDLE). At 10 the merge
# thread gets about a tenth of a core against a busy search thread (Linux CFS weights 110 : 1024)
# and all of an idle core.
DEFAULT_BACKGROUND_NICE = 10


@dataclass(frozen=True, kw_only=True)
class LiveShardConfig:
    """strategy: registered strategy name; index: the offline index directory; catalog: the
    catalog file it was built from ("" only for a lexical shard with a merged base already);
    live_dir: where the lexical shard writes merged bases and the semantic shard checkpoints (one
    per replica; "" for a semantic shard: none, every start replays the whole log); options: the
    strategy's run-time settings; merge_entities: lexical delta size, or semantic writes since the
    last checkpoint, that start a merge (a checkpoint) (0 = only on request)."""

    strategy: str
    index: str
    catalog: str = ""
    live_dir: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)
    merge_entities: int = DEFAULT_MERGE_ENTITIES

    def __post_init__(self) -> None:
        if self.merge_entities < 0:
            raise ValueError(f"`merge_entities` must be >= 0 (0 = on request only), but got {self.merge_entities}")
        if self.strategy == StrategyKind.LEXICAL and not self.live_dir:
            raise ValueError("`live_dir` must be a directory for a live lexical shard, but got ''")


Background = Callable[[Callable[[], None]], None]


def run_here(work: Callable[[], None]) -> None:
    """A Background that runs the work on the calling thread."""
    work()


class LiveShard:
    """A strategy applying the catalog log; see the module docstring. Subclasses set `_strategy`
    and implement `_apply(writes)` (called under `lock`)."""

    def __init__(self, base_position: int) -> None:
        self.lock = threading.Lock()  # a search or a batch
        # held for a whole batch: what must see no batch half applied without stopping searches
        # (a checkpoint's snapshot reads while searches do) takes this one instead of `lock`
        self.applying = threading.Lock()
        self._merge_lock = threading.Lock()  # one merge at a time (merge())
        self.base_position = base_position
        self.applied_position = base_position
        self.applied_records = 0
        self.merges = 0
        self.last_apply_s = 0.0
        self.last_locked_s = 0.0
        self.broken: Exception | None = None
        self._strategy: Strategy | None = None

    @property
    def strategy(self) -> Strategy:
        if self._strategy is None:
            raise RuntimeError("the live shard has no strategy yet")
        return self._strategy

    @property
    def pending_entities(self) -> int:
        """Entities written since the base (lexical: the delta's documents, dead copies included)."""
        return 0

    @contextlib.contextmanager
    def reading(self) -> Iterator[Strategy]:
        """The strategy, with no batch applied meanwhile (hold it for the whole search)."""
        with self.lock:
            yield self.strategy

    def apply(self, records: Sequence[CatalogRecord], background: Background = run_here) -> int:
        """Apply `records` (positions above applied_position, ascending) as one batch; returns how
        many were applied. Records at or below applied_position are skipped (a repeated read).
        background: runs the batch's lock-free preparation (the semantic shard's encoding) and
        returns when it is done (services.shard_live runs it on a lower-priority thread)."""
        fresh = [r for r in records if r.position > self.applied_position]
        if not fresh:
            return 0
        if any(b.position <= a.position for a, b in itertools.pairwise(fresh)):
            raise ValueError("`records` must be in increasing position order")
        started = time.perf_counter()
        if self.broken is not None:  # before preparing: the batch would never be applied
            raise RuntimeError(f"a batch failed half-applied ({self.broken}); restart the shard: it replays "
                               "the log over its base")
        writes = self._accepted([r.write.as_write() for r in fresh])
        if self.prepares:  # slow work that changes nothing searches read, before the lock
            background(lambda: self._prepare(writes))
        with self.applying, self.lock:  # `broken` is set only here, on this (the one writing) thread
            locked = time.perf_counter()
            try:
                self._apply(writes)
            except Exception as err:
                self.broken = err  # the state may hold part of the batch: never apply over it
                raise
            self.applied_position = fresh[-1].position
            self.applied_records += len(fresh)
            self.last_locked_s = time.perf_counter() - locked  # what a search may have waited
        self.last_apply_s = time.perf_counter() - started
        return len(fresh)

    def _accepted(self, writes: list[Write]) -> list[Write]:
        """The writes this shard applies (default: all of them), worked out once per batch."""
        return writes

    @property
    def prepares(self) -> bool:
        """Has the shard lock-free work to do before applying a batch (_prepare)? Default no."""
        return False

    def _prepare(self, writes: Sequence[Write]) -> None:
        """Work for `writes` that needs no lock (nothing searches read changes); default none."""

    def _apply(self, writes: Sequence[Write]) -> None:
        raise NotImplementedError

    def _merge_limit(self) -> int:
        """The backlog above which a merge is wanted (0: only on request, the default)."""
        return 0

    def _merge_backlog(self) -> int:
        """What the limit is compared with (default: pending_entities)."""
        return self.pending_entities

    def merge_wanted(self) -> bool:
        """Should the caller run merge() now (in the background)?"""
        limit = self._merge_limit()
        return 0 < limit < self._merge_backlog() and not self._merge_lock.locked()

    def merge(self) -> bool:
        """Fold the writes since the base into a new base, on the caller's thread (the shard
        server's merge thread) while batches and searches go on; False when a merge is running,
        there is nothing new, or the state is torn (a failed batch: it must never become a base)."""
        if not self._merge_lock.acquire(blocking=False):
            return False
        try:
            return self._merge()
        finally:
            self._merge_lock.release()

    def _merge(self) -> bool:
        """merge()'s work, one at a time (default: no base to write)."""
        return False

    def _unmergeable(self) -> bool:
        """Nothing new since the base, or a torn state; call it under `applying` or `lock` (a batch
        holds both)."""
        return self.applied_position == self.base_position or self.broken is not None

    def describe(self) -> dict[str, str]:
        return {"catalog.applied_position": str(self.applied_position),
                "catalog.base_position": str(self.base_position),
                "catalog.pending_entities": str(self.pending_entities), "catalog.merges": str(self.merges),
                "live_entities": str(len(self.strategy.collection) - len(self.strategy.collection.deleted))}

    def close(self) -> None:
        close = getattr(self._strategy, "close", None)
        if callable(close):
            close()


def whole_catalog(config: LiveShardConfig) -> list[Entity]:
    """Every entity of config.catalog (CatalogError naming `--catalog` when there is none)."""
    if not config.catalog:
        raise CatalogError(f"a live {config.strategy} shard needs the catalog its index was built from "
                           "(`--catalog FILE`)")
    return load_catalog(config.catalog)


def catalog_entities(config: LiveShardConfig, ids: Sequence[str], owns: Callable[[str], bool] | None = None,
                     whole: Sequence[Entity] | None = None) -> list[Entity]:
    """The catalog the index at config.index was built from, checked against its collection's `ids`
    (owns: of a document partition, the ids it holds; those entities only, in catalog order);
    whole: config.catalog's entities when the caller has read them already."""
    entities = list(whole) if whole is not None else whole_catalog(config)
    if owns is not None:
        entities = [e for e in entities if owns(e.id)]
    if len(entities) != len(ids) or any(e.id != i for e, i in zip(entities, ids, strict=True)):
        raise CatalogError(f"`catalog` must be the catalog index {config.index} was built from ({len(ids)} "
                           f"entities in its order), but got {config.catalog} ({len(entities)} entities)")
    return entities
