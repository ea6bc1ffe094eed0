"""Query history: what the feedback on earlier searches of the same query says about it.

Search engines have long used a query's own past as a feature (its frequency, its click-through
and abandonment rates). The policy gets three such numbers per query, from the feedback the
broker has learned from:

- volume: log1p(n) / log1p(VOLUME_SATURATION), capped at 1, n = feedback events for the query;
- miss rate: the share of those events whose acted-on entity was not among the candidates (the
  retrieval failures of that query, whatever plan was used then);
- diversity: distinct acted-on entities / n (one wanted track, or many answers to one query).

All three are 0 for a query never seen. Queries are keyed like the memory strategy keys them
(core.analysis.text_key), so "Late Night Music " and "late night music" share a history.
The table keeps the `max_queries` most recently updated queries, and at most `max_entities`
distinct entities per query (beyond that, diversity is counted against the kept ones).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.analysis import text_key

HISTORY_FEATURES = ("history_volume", "history_miss_rate", "history_diversity")
VOLUME_SATURATION = 100
DEFAULT_MAX_QUERIES = 200_000
DEFAULT_MAX_ENTITIES = 64


@dataclass(frozen=True, slots=True)
class _Stats:
    """Immutable: a frozen snapshot (`QueryHistory.freeze`) shares them and never sees a change."""

    n: int = 0
    misses: int = 0
    entities: frozenset[str] = frozenset()


class QueryHistory:
    """Per-query feedback statistics (module docstring); not thread-safe (the broker updates it
    from its event loop only)."""

    def __init__(self, *, max_queries: int = DEFAULT_MAX_QUERIES, max_entities: int = DEFAULT_MAX_ENTITIES) -> None:
        if max_queries < 1 or max_entities < 1:
            raise ValueError(f"`max_queries` and `max_entities` must be >= 1, but got {max_queries} and {max_entities}")
        self.max_queries, self.max_entities = max_queries, max_entities
        self._stats: OrderedDict[str, _Stats] = OrderedDict()
        # While a snapshot serialises `_stats` on another thread, changes go here and `_stats` stays
        # as it was (copying 200k queries on the event loop would take ~130 ms).
        self._overlay: dict[str, _Stats] | None = None

    def __len__(self) -> int:
        extra = 0 if self._overlay is None else sum(k not in self._stats for k in self._overlay)
        return len(self._stats) + extra

    def _get(self, key: str) -> _Stats | None:
        if self._overlay is not None and key in self._overlay:
            return self._overlay[key]
        return self._stats.get(key)

    def observe(self, text: str, entity_id: str, *, retrieved: bool) -> None:
        """One feedback event on a search of `text`; retrieved: the acted-on entity was a candidate."""
        key = text_key(text)
        stats = self._get(key) or _Stats()
        entities = stats.entities if len(stats.entities) >= self.max_entities else stats.entities | {entity_id}
        new = _Stats(stats.n + 1, stats.misses + (0 if retrieved else 1), entities)
        if self._overlay is not None:
            self._overlay[key] = new
            return
        self._stats.pop(key, None)
        self._stats[key] = new
        if len(self._stats) > self.max_queries:
            self._stats.popitem(last=False)

    def freeze(self) -> Mapping[str, Any]:
        """Start a snapshot: the statistics as of now, which stay unchanged (later events are kept
        aside) until `thaw`; serialise them with `to_json(frozen)` on any thread."""
        if self._overlay is not None:
            raise RuntimeError("a snapshot of the query history is already in progress")
        self._overlay = {}
        return self._stats

    def thaw(self) -> None:
        """End a snapshot: fold the events kept aside in, as if `observe` had applied them."""
        overlay, self._overlay = self._overlay or {}, None
        for key, stats in overlay.items():
            self._stats.pop(key, None)
            self._stats[key] = stats
        while len(self._stats) > self.max_queries:
            self._stats.popitem(last=False)

    def features(self, text: str) -> np.ndarray:
        """float64 (len(HISTORY_FEATURES),), in HISTORY_FEATURES order."""
        stats = self._get(text_key(text))
        if stats is None or stats.n == 0:
            return np.zeros(len(HISTORY_FEATURES))
        volume = min(1.0, math.log1p(stats.n) / math.log1p(VOLUME_SATURATION))
        return np.array([volume, stats.misses / stats.n, len(stats.entities) / min(stats.n, self.max_entities)])

    def to_json(self, frozen: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """A JSON-able copy (for the policy snapshot), oldest query first: of `frozen` (what
        `freeze` returned) or, without it, of the current statistics."""
        if frozen is None:
            frozen = self._stats if self._overlay is None else {**self._stats, **self._overlay}
        return {"max_queries": self.max_queries, "max_entities": self.max_entities,
                "queries": [[k, s.n, s.misses, sorted(s.entities)] for k, s in frozen.items()]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> QueryHistory:
        """The inverse of `to_json`; ValueError on malformed data."""
        try:
            history = cls(max_queries=int(data["max_queries"]), max_entities=int(data["max_entities"]))
            for key, n, misses, entities in data["queries"]:
                history._stats[str(key)] = _Stats(int(n), int(misses), frozenset(str(e) for e in entities))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"malformed query history: {e}") from None
        return history
