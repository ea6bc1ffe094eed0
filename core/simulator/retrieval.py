"""The strategies of one index directory, run in process, with the caching long runs need.

A strategy's answer to a query text is deterministic for lexical, semantic and attribute (their
indexes do not change during a run), so answers are cached by (strategy, text). For lexical and
attribute (exact top-k with a deterministic tie order) a top-q list is the prefix of the top-Q list
for q <= Q, so each text is retrieved once at `max_quota` and sliced for smaller quotas. Semantic
search is approximate (HNSW: a search for k = q explores less than one for k = 200, and on the demo
catalog about half of the top-q lists differ from the top-200 list's prefix, with 94% overlap), so
it is cached per (text, quota) instead: the simulation sees exactly what a shard would return.
The memory strategy changes as it learns, so it is asked afresh every time, with the search's
context (it learns per query and context, core.memory.context); the cached strategies ignore the
context, as their shards do. Query understanding
(the attribute strategy's `understand`) is cached by text too. A run whose catalog changes
(core.simulator.releases writes new tracks into every strategy) bumps `version` after each write:
answers are cached per version, so none from before a write is served after it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from functools import partial
from pathlib import Path
from typing import TypeVar

import numpy as np

from core.indexing import open_strategy
from core.merge import StrategyList
from core.query import Query
from core.types import Interpretation, Strategy, StrategyKind, SupportsLearn, SupportsUnderstand

DEFAULT_INTERPRETATIONS = 8  # what the broker asks the attribute shard's Understand for
PREFIX_KINDS = frozenset({StrategyKind.LEXICAL, StrategyKind.ATTRIBUTE})  # top-q = prefix of top-Q
CACHED_KINDS = PREFIX_KINDS | {StrategyKind.SEMANTIC}
T = TypeVar("T")


def level_table(kind: StrategyKind, levels: Sequence[int] | np.ndarray, top: Callable[[int], Sequence[T]],
                targets: AbstractSet[T]) -> tuple[np.ndarray, np.ndarray]:
    """(hits bool (L,), returned int64 (L,)): is one of `targets` (the wanted recording's copies,
    core.collapse) in the strategy's top-levels[l] list, and how many candidates that list holds
    (False and 0 at level 0). top(q): the strategy's top-q
    list. A kind whose top-q is a prefix of its top-Q (or that is not cached: asked once at the
    largest level) needs one list; semantic search is asked at every level (module docstring)."""
    lv = np.asarray(levels, dtype=np.int64)
    if kind in PREFIX_KINDS or kind not in CACHED_KINDS:
        items = list(top(int(lv.max())))
        rank = next((i + 1 for i, item in enumerate(items) if item in targets), 0)
        return (rank > 0) & (lv >= rank), np.where(lv > 0, np.minimum(lv, len(items)), 0)
    lists = [list(top(int(q))) if q > 0 else [] for q in lv.tolist()]
    return (np.array([not targets.isdisjoint(items) for items in lists], dtype=bool),
            np.array([len(items) for items in lists], dtype=np.int64))


def level_tables(tops: Sequence[tuple[StrategyKind, Callable[[int], Sequence[T]]]],
                 levels: Sequence[int] | np.ndarray, targets: AbstractSet[T]) -> tuple[np.ndarray, np.ndarray]:
    """(hits bool (S, L), returned int64 (S, L)): level_table of every strategy, given as (kind,
    top) pairs in column order."""
    tables = [level_table(kind, levels, top, targets) for kind, top in tops]
    return np.array([h for h, _ in tables]), np.array([n for _, n in tables])


class InProcessStrategies:
    """strategies: names in column order (the policy's and Merged's); memory_state: where the
    memory strategy keeps its feedback (a fresh directory per run: learning must not leak between
    runs); clock: "now" for the memory strategy's time decay (simulated time keeps runs
    deterministic)."""

    def __init__(self, root: str | os.PathLike[str], strategies: Sequence[str], max_quota: int, *,
                 memory_state: str | os.PathLike[str] | None = None,
                 clock: Callable[[], float] = time.time,
                 shared: InProcessStrategies | None = None) -> None:
        if max_quota < 1:
            raise ValueError(f"`max_quota` must be >= 1, but got {max_quota}")
        self.names = tuple(strategies)
        self.max_quota = max_quota
        self.loaded: dict[str, Strategy] = {}
        for name in self.names:
            if name == StrategyKind.MEMORY.value:
                if memory_state is None:
                    raise ValueError("`memory_state` is required when the memory strategy is used")
                options = {"state_dir": str(Path(memory_state)), "snapshot_every": 1_000_000,
                           "snapshot_interval_s": 0}
                self.loaded[name] = open_strategy(root, name, options)
                self.loaded[name].clock = clock  # type: ignore[attr-defined]
            elif shared is not None and name in shared.loaded:
                self.loaded[name] = shared.loaded[name]
            else:
                self.loaded[name] = open_strategy(root, name)
        first = next(iter(self.loaded.values()))
        self.ids: list[str] = list(first.collection.ids)
        self.ordinal = first.collection.ordinal
        self.version = 0  # of the catalog: bumped by whoever writes to the strategies (module docstring)
        self.cache: dict[tuple[str, str, int, int], tuple[np.ndarray, np.ndarray]] = shared.cache if shared else {}
        self.qu_cache: dict[tuple[str, int], tuple[Interpretation, ...]] = shared.qu_cache if shared else {}

    def understand(self, text: str) -> tuple[Interpretation, ...]:
        """The attribute strategy's readings of `text` (empty without one)."""
        attr = self.loaded.get(StrategyKind.ATTRIBUTE.value)
        if not isinstance(attr, SupportsUnderstand):
            return ()
        key = (text, self.version)
        if key not in self.qu_cache:
            self.qu_cache[key] = attr.understand(Query(text=text), DEFAULT_INTERPRETATIONS)
        return self.qu_cache[key]

    def top(self, name: str, text: str, quota: int, context: Mapping[str, str] | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
        """(ordinals int64, scores float32) of strategy `name`'s top `quota` for `text` asked with
        `context` (the request context; only the uncached strategies, memory, read it)."""
        strategy = self.loaded[name]
        if strategy.kind not in CACHED_KINDS:
            hits = strategy.retrieve(Query(text=text, context=context or {}), quota, None)
            return hits.ordinals, hits.scores
        fetch = self.max_quota if strategy.kind in PREFIX_KINDS else quota
        key = (name, text, fetch, self.version)
        if key not in self.cache:
            hits = strategy.retrieve(Query(text=text), fetch, None)
            self.cache[key] = (hits.ordinals, hits.scores)
        ordinals, scores = self.cache[key]
        return ordinals[:quota], scores[:quota]

    def top_ordinals(self, name: str, text: str, quota: int, context: Mapping[str, str] | None = None
                     ) -> list[int]:
        """The ordinals of strategy `name`'s top `quota` for `text` (and `context`), best first."""
        return self.top(name, text, quota, context)[0].tolist()

    def lists(self, text: str, quotas: Sequence[int], context: Mapping[str, str] | None = None
              ) -> list[StrategyList]:
        """One StrategyList per called strategy (quota > 0), in column order; `context`: the
        search's request context."""
        out = []
        for name, q in zip(self.names, quotas, strict=True):
            if q > 0:
                ordinals, scores = self.top(name, text, q, context)
                out.append(StrategyList(name, [self.ids[o] for o in ordinals.tolist()], scores))
        return out

    def level_tables(self, text: str, targets: AbstractSet[int], levels: Sequence[int],
                     context: Mapping[str, str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(hits bool (S, L), returned int64 (S, L)): is one of the ordinals `targets` in strategy
        s's top-levels[l] list for `text` and `context`, and how many candidates that list holds
        (level_table)."""
        return level_tables([(self.loaded[name].kind, partial(self.top_ordinals, name, text, context=context))
                             for name in self.names], levels, targets)

    def learner(self) -> SupportsLearn | None:
        memory = self.loaded.get(StrategyKind.MEMORY.value)
        return memory if isinstance(memory, SupportsLearn) else None

    def close(self) -> None:
        memory = self.loaded.get(StrategyKind.MEMORY.value)
        if memory is not None and hasattr(memory, "close"):
            memory.close()
