"""Live writes for the memory strategy: cold-start predicted queries for new and changed entities.

LivePredicted replaces the stored predicted pairs of a MemoryStrategy with pairs kept per entity
and scored at read time, so a write changes only its own entity's keys: each live entity keeps
core.memory.predict.key_scores (query key -> kind score) and a key's pairs are scored with the
popularity share of the largest live popularity now, then cut to `max_per_query`, best first.
That is the offline predictor's arithmetic on the live catalog, so the pairs equal those of a
fresh build of it exactly (when `max_per_query` is the one it was built with; the component does
not record it). Pairs of a key are cached until a write touches the key or changes the largest
popularity. Start-up recomputes the pairs of the whole catalog (the predictor's cost, about 1.7 s
for the 28k-track demo catalog) instead of reading the stored ones, whose kind scores are lost.

Feedback learned by the strategy is untouched: an entity replaced in place keeps its ordinal and
so its observed pairs; a deleted entity is filtered out at retrieval by the shared collection.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from core.live import Change, LiveCollection
from core.memory.index import MemoryStrategy
from core.memory.predict import DEFAULT_MAX_PER_QUERY, key_scores


class LivePredicted:
    """Predicted pairs of a LiveCollection's live entities; implements PredictedPairs.
    by_key: query key -> ordinal -> kind score; by_ordinal: ordinal -> its keys."""

    def __init__(self, collection: LiveCollection, max_per_query: int = DEFAULT_MAX_PER_QUERY,
                 owns_key: Callable[[str], bool] | None = None) -> None:
        if max_per_query < 1:
            raise ValueError(f"`max_per_query` must be >= 1, but got {max_per_query}")
        self.collection = collection
        self.owns_key = owns_key  # a query partition's (core.partitions.query_partition): its keys only
        self.max_per_query = max_per_query
        self.by_key: dict[str, dict[int, float]] = {}
        self.by_ordinal: dict[int, tuple[str, ...]] = {}
        self.cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.top = collection.max_popularity()
        for o, e in enumerate(collection.entities):
            if e is not None:
                self._add(o, key_scores(e))

    def _add(self, ordinal: int, scores: dict[str, float]) -> None:
        if self.owns_key is not None:
            scores = {key: kind for key, kind in scores.items() if self.owns_key(key)}
        for key, kind in scores.items():
            self.by_key.setdefault(key, {})[ordinal] = kind
        self.by_ordinal[ordinal] = tuple(scores)

    def _remove(self, ordinal: int) -> tuple[str, ...]:
        keys = self.by_ordinal.pop(ordinal, ())
        for key in keys:
            pairs = self.by_key[key]
            del pairs[ordinal]
            if not pairs:
                del self.by_key[key]
        return keys

    def apply(self, changes: Sequence[Change]) -> None:
        """Drop the old content's keys, add the new content's; the collection applied them already."""
        touched: set[str] = set()
        for c in changes:
            touched.update(self._remove(c.ordinal))
            if c.new is not None:
                scores = key_scores(c.new)
                self._add(c.ordinal, scores)
                touched.update(scores)
        top = self.collection.max_popularity()
        if top != self.top:
            self.top = top
            self.cache.clear()
        else:
            for key in touched:
                self.cache.pop(key, None)

    def pairs(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        cached = self.cache.get(key)
        if cached is None:
            cached = self.cache[key] = self._score(key)
        return cached

    def _score(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """core.memory.predict.predict's pairs of `key`, vectorised: kind * (0.5 + 0.5 * pop / top),
        best first (ties: lower ordinal), float64 until the cut, then float32 as stored."""
        pairs = self.by_key.get(key)
        if not pairs:
            return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32)
        ordinals = np.fromiter(pairs.keys(), dtype=np.int64, count=len(pairs))
        kinds = np.fromiter(pairs.values(), dtype=np.float64, count=len(pairs))
        pop = self.collection.popularity[ordinals].astype(np.float64)
        share = 0.5 + 0.5 * pop / self.top if self.top > 0 else np.full(len(pairs), 0.5)
        scores = kinds * share
        order = np.lexsort((ordinals, -scores))[:self.max_per_query]
        return ordinals[order].astype(np.int32), scores[order].astype(np.float32)

    def counts(self) -> tuple[int, int]:
        return len(self.by_key), sum(min(len(p), self.max_per_query) for p in self.by_key.values())


class LiveMemory:
    """Applies Changes to a MemoryStrategy whose collection is the LiveCollection that made them."""

    def __init__(self, strategy: MemoryStrategy, max_per_query: int = DEFAULT_MAX_PER_QUERY,
                 owns_key: Callable[[str], bool] | None = None) -> None:
        if not isinstance(strategy.collection, LiveCollection):
            raise TypeError("the strategy's collection must be a LiveCollection")
        self.strategy = strategy
        self.predicted = LivePredicted(strategy.collection, max_per_query, owns_key)
        with strategy.lock:
            strategy.predicted = self.predicted

    def apply(self, changes: Sequence[Change]) -> None:
        with self.strategy.lock:  # retrieval reads the pairs under the same lock
            self.predicted.apply(changes)
