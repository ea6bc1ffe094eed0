"""The memory strategy: what worked before for this query (Q2E statistics), learning from feedback.

On disk, built by `ltrr index` (component "memory", see core.storage): the predicted pairs of
core.memory.predict as CSR arrays:
- queries.json: the predicted query keys, sorted; row r is queries[r];
- offsets.npy: int64, shape (Q + 1,); row r's pairs are [offsets[r], offsets[r + 1]);
- ordinals.npy: int32, shape (P,); scores.npy: float32, shape (P,): entity and predicted score.
Run-time state (feedback), in `state_dir` (default `<index>/memory-state`), kept by core.memory.wal:
- log records {"seq": int, "at": stamp of the batch (seconds, see core.memory.dedup), "events": rows
  as `_apply` takes them}; records written before version 2 have no "at" (the load time is used),
  rows written before contextual keys have no 7th element (learned under the plain key only);
- snapshot {"version": 2, "seq": last record included, "events": [[event id, stamp], ...] oldest
  first, "pairs": {query key: [[entity id, *PairStats.to_list()], ...]}}; version 1 stored "events"
  as a list of ids, which still loads (every id gets the load time as its stamp). The query keys
  include the contextual keys (core.memory.context.contextual_key), pruned like the plain ones.

Learn: an event is learned under its query's key and, when its context has a bucket
(MemoryConfig.context_keys, core.memory.context), under the contextual key too.
Retrieve: the observed pairs of the query's contextual key first (what this kind of user wanted),
scored 1 + their posterior mean (so in (1, 2), keeping the list's scores non-increasing), then
the other pairs of the query's key, predicted and observed, scored by the posterior mean of
core.memory.store (in (0, 1)); ties go to the lower ordinal. A contextual pair's prior mean is
the entity's predicted score for the plain key (prior_mean when not predicted). A query without
a bucket, or whose contextual key learned nothing yet, gets exactly the plain key's list.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from pyroaring import BitMap

from core.analysis import text_key
from core.catalog import Entity
from core.collection import Collection
from core.errors import NotFoundError
from core.memory.context import SEPARATOR, context_bucket, contextual_key
from core.memory.dedup import SeenEvents
from core.memory.predict import DEFAULT_MAX_PER_QUERY, predict
from core.memory.store import PairStats, ScoringConfig, prune_pairs, reward
from core.memory.wal import WriteAheadLog, read_snapshot, write_snapshot
from core.query import Query
from core.storage import ComponentReader, ComponentWriter
from core.types import EventType, FeedbackEvent, Hits, StrategyEntry, StrategyKind

COMPONENT = "memory"
DEFAULT_STATE_DIR = "memory-state"
DEFAULT_SNAPSHOT_EVERY = 10_000
DEFAULT_SNAPSHOT_INTERVAL_S = 300.0
DEFAULT_DEDUP_WINDOW_S = 3600.0
DEFAULT_MIN_EVIDENCE = 1e-3
DEFAULT_CONTEXT_KEYS = ("affinity",)
SNAPSHOT_VERSION = 2


@dataclass(frozen=True, kw_only=True)
class MemoryConfig:
    """Run-time settings. state_dir: where the log and snapshots live; snapshot_every: snapshot once
    this many events were logged since the last one (>= 1); snapshot_interval_s: ... or once this
    many seconds have passed with at least one new event (0 = never by time).

    dedup_window_s (> 0, finite): how long an event id is remembered, from when it was first learned
    (the strategy's clock), to count a repeat of it once; a repeat arriving later is accepted again.
    Default 1 hour: the broker removes repeated client events itself (its event log's primary key)
    and forwards to this shard through an outbox that redelivers only the events the shard has not
    acknowledged, so the repeats that reach the shard are redeliveries of a batch whose
    acknowledgement was lost, minutes after the original. The window bounds the dedup state to
    the ids of one hour of feedback (memory and every snapshot); raise it if the broker can stay
    down longer than that between a delivery and recording its acknowledgement.
    min_evidence (>= 0, finite; 0 = never): at each snapshot, drop the observed pairs whose decayed
    evidence (alpha + beta) * decay is below this many pseudo-trials (core.memory.store.prune_pairs).
    Default 1e-3: a dropped pair's score moves back to its prior mean by less than
    1e-3 / (prior_strength + 1e-3) (5e-4 with the default strength 2), below anything a ranking
    distinguishes; with the 30-day half-life a single event's pair lasts ~10 half-lives (~300 days)
    untouched before it goes. Nothing is pruned without decay (half_life_days = 0).
    context_keys: the context names whose bucket (core.memory.context) keys the contextual pairs;
    empty = off (the plain key only). From options: comma-separated names, "" = off. Default
    ("affinity",): the user's strongest affinity, e.g. "affinity.genre=rock". It is the one signal
    the request context carries about what a user likes (hour and device say when and where, not
    what), one bucket per genre keeps the contextual keys at most (number of genres) per query,
    so each fills with evidence quickly; adding names multiplies the buckets and splits the
    evidence of a query between them."""

    state_dir: Path
    snapshot_every: int = DEFAULT_SNAPSHOT_EVERY
    snapshot_interval_s: float = DEFAULT_SNAPSHOT_INTERVAL_S
    dedup_window_s: float = DEFAULT_DEDUP_WINDOW_S
    min_evidence: float = DEFAULT_MIN_EVIDENCE
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    context_keys: tuple[str, ...] = DEFAULT_CONTEXT_KEYS

    def __post_init__(self) -> None:
        for name in self.context_keys:
            if not name or name != name.strip() or "|" in name or "=" in name:
                raise ValueError(f"`context_keys` must hold non-empty names without surrounding white space, "
                                 f"'|' or '=', but got {self.context_keys!r}")
        if self.snapshot_every < 1:
            raise ValueError(f"`snapshot_every` must be >= 1, but got {self.snapshot_every}")
        if not (math.isfinite(self.snapshot_interval_s) and self.snapshot_interval_s >= 0):
            raise ValueError(f"`snapshot_interval_s` must be finite and >= 0, but got {self.snapshot_interval_s}")
        if not (math.isfinite(self.dedup_window_s) and self.dedup_window_s > 0):
            raise ValueError(f"`dedup_window_s` must be finite and > 0, but got {self.dedup_window_s}")
        if not (math.isfinite(self.min_evidence) and self.min_evidence >= 0):
            raise ValueError(f"`min_evidence` must be finite and >= 0, but got {self.min_evidence}")

    @classmethod
    def from_options(cls, options: Mapping[str, Any], root: str | os.PathLike[str]) -> MemoryConfig:
        """From CLI-style options: state_dir, snapshot_every, snapshot_interval_s, dedup_window_s,
        min_evidence, prior_strength, prior_mean, half_life_days, context_keys (comma-separated)."""
        scoring = ScoringConfig(**{k: float(options[k]) for k in ("prior_strength", "prior_mean", "half_life_days")
                                   if k in options})
        return cls(state_dir=Path(options.get("state_dir") or Path(root) / DEFAULT_STATE_DIR),
                   snapshot_every=int(options.get("snapshot_every", DEFAULT_SNAPSHOT_EVERY)),
                   snapshot_interval_s=float(options.get("snapshot_interval_s", DEFAULT_SNAPSHOT_INTERVAL_S)),
                   dedup_window_s=float(options.get("dedup_window_s", DEFAULT_DEDUP_WINDOW_S)),
                   min_evidence=float(options.get("min_evidence", DEFAULT_MIN_EVIDENCE)),
                   scoring=scoring, context_keys=_names(options.get("context_keys", DEFAULT_CONTEXT_KEYS)))


def _names(value: str | Sequence[str]) -> tuple[str, ...]:
    """context_keys from an option: "a,b" or a sequence of names; "" = none."""
    names = value.split(",") if isinstance(value, str) else value
    return tuple(n.strip() for n in names if n.strip())


class PredictedPairs(Protocol):
    """The predicted pairs a MemoryStrategy reads: stored (Predicted) or live (core.memory.live)."""

    def pairs(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(ordinals int32, predicted scores float32) of `key`, best first; empty when none."""
        ...

    def counts(self) -> tuple[int, int]:
        """(query keys, pairs)."""
        ...


@dataclass(frozen=True)
class Predicted:
    """The predicted pairs (CSR, see the module docstring); rows: query key -> row."""

    rows: dict[str, int]
    offsets: np.ndarray
    ordinals: np.ndarray
    scores: np.ndarray

    def pairs(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        r = self.rows.get(key)
        if r is None:
            return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32)
        a, b = int(self.offsets[r]), int(self.offsets[r + 1])
        return self.ordinals[a:b], self.scores[a:b]

    def counts(self) -> tuple[int, int]:
        return len(self.rows), int(self.ordinals.size)


class MemoryStrategy:
    """A loaded memory index with its feedback state; implements Strategy, SupportsLearn, SupportsClose.

    Calls are serialised by a lock. `clock` gives "now" in seconds since the Unix epoch; it stamps
    event ids for dedup (`seen`, core.memory.dedup) and decays evidence. observed: query key ->
    entity ordinal -> stats; pruned_pairs: observed pairs dropped by snapshots since the start.
    """

    kind = StrategyKind.MEMORY
    vector_dim = 0

    def __init__(self, config: MemoryConfig, collection: Collection, predicted: PredictedPairs,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.collection = collection
        self.predicted = predicted
        self.clock = clock
        self.observed: dict[str, dict[int, PairStats]] = {}
        self.seen = SeenEvents(config.dedup_window_s)
        self.seq = 0
        self.pending = 0
        self.dropped = 0
        self.pruned_pairs = 0
        self.lock = threading.Lock()
        config.state_dir.mkdir(parents=True, exist_ok=True)
        self.wal = WriteAheadLog(config.state_dir)
        self._recover()
        self.last_snapshot = time.monotonic()

    # -- state ---------------------------------------------------------------------------------

    def _recover(self) -> None:
        """Load the snapshot, then replay the log records it does not include, each at its stamp
        (so the dedup state is the one the writing process had)."""
        snapshot = read_snapshot(self.config.state_dir)
        loaded_at = self.clock()
        if snapshot is not None:
            self.seq = int(snapshot["seq"])
            if snapshot["version"] == 1:
                self.seen.restore((event_id, loaded_at) for event_id in snapshot["events"])
            else:
                self.seen.restore(snapshot["events"])
            ordinal = self.collection.ordinal
            for key, rows in snapshot["pairs"].items():
                pairs = self.observed.setdefault(key, {})
                for entity_id, *stats in rows:
                    if entity_id in ordinal:
                        pairs[ordinal[entity_id]] = PairStats.from_list(stats)
                    else:
                        self.dropped += 1
        for record in self.wal.replay():
            if record["seq"] > self.seq:
                self.seen.advance(float(record.get("at", loaded_at)))
                self._apply(record["events"])
                self.seq = record["seq"]
                self.pending += len(record["events"])

    def _apply(self, rows: Sequence[list[Any]]) -> None:
        """rows: [event_id, query key, entity id, event type, value, timestamp, contextual key] as
        logged (the contextual key, "" for none, is absent from rows logged before it existed)."""
        ordinal = self.collection.ordinal
        for event_id, key, entity_id, type_, value, at, *rest in rows:
            self.seen.add(event_id)
            o = ordinal.get(entity_id)
            if o is None:
                self.dropped += 1
                continue
            r, w = reward(EventType(type_), value)
            for k in (key, *rest[:1]):
                if k:
                    self.observed.setdefault(k, {}).setdefault(o, PairStats()).add(r, w, at, self.config.scoring)

    def snapshot(self) -> None:
        """Forget expired event ids and prune negligible pairs (MemoryConfig), then write the whole
        state atomically and empty the log."""
        now = self.clock()
        self.seen.advance(now)
        self.pruned_pairs += prune_pairs(self.observed, now, self.config.scoring, self.config.min_evidence)
        ids = self.collection.ids
        pairs = {key: [[ids[o], *s.to_list()] for o, s in sorted(stats.items())]
                 for key, stats in self.observed.items()}
        write_snapshot(self.config.state_dir, {"version": SNAPSHOT_VERSION, "seq": self.seq,
                                               "events": self.seen.to_rows(), "pairs": pairs})
        self.wal.reset()
        self.pending = 0
        self.last_snapshot = time.monotonic()

    def _snapshot_due(self) -> bool:
        if self.pending >= self.config.snapshot_every:
            return True
        interval = self.config.snapshot_interval_s
        return self.pending > 0 and interval > 0 and time.monotonic() - self.last_snapshot >= interval

    # -- SupportsLearn / SupportsClose ------------------------------------------------------------

    def learn(self, events: Sequence[FeedbackEvent]) -> tuple[int, int]:
        """Log the batch's new events (fsync'd) and apply them; returns (accepted, duplicates).
        An unknown entity id raises NotFoundError and nothing of the batch is recorded."""
        ordinal = self.collection.ordinal
        for i, e in enumerate(events):
            if e.entity_id not in ordinal:
                raise NotFoundError(f"events[{i}].entity_id: entity {e.entity_id!r} is not in the index")
        with self.lock:
            now = self.clock()
            at = self.seen.advance(now)
            rows: list[list[Any]] = []
            batch: set[str] = set()
            for e in events:
                if e.event_id in self.seen or e.event_id in batch:
                    continue
                batch.add(e.event_id)
                key = text_key(e.query_text)
                rows.append([e.event_id, key, e.entity_id, int(e.type), float(e.value), e.timestamp or now,
                             contextual_key(key, context_bucket(e.context, self.config.context_keys))])
            if rows:
                self.wal.append({"seq": self.seq + 1, "at": at, "events": rows})
                self.seq += 1
                self._apply(rows)
                self.pending += len(rows)
                if self._snapshot_due():
                    self.snapshot()
            return len(rows), len(events) - len(rows)

    def close(self) -> None:
        with self.lock:
            if self.pending:
                self.snapshot()
            self.wal.close()

    # -- Strategy -----------------------------------------------------------------------------------

    def scores_for(self, text: str, context: Mapping[str, str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ordinals int64, scores float64) of every pair of the query's key and, with a context
        that has a bucket, of its contextual key (scored 1 + posterior mean, module docstring);
        in no order."""
        key = text_key(text)
        ordinals, predicted = self.predicted.pairs(key)
        observed = self.observed.get(key, {})
        prior = dict(zip(ordinals.tolist(), predicted.tolist(), strict=True))
        scoring, now = self.config.scoring, self.clock()
        out = {o: p for o, p in prior.items() if o not in observed}
        for o, stats in observed.items():
            out[o] = stats.score(prior.get(o), now, scoring)
        ctx = contextual_key(key, context_bucket(context or {}, self.config.context_keys))
        for o, stats in self.observed.get(ctx, {}).items() if ctx else ():
            out[o] = 1.0 + stats.score(prior.get(o), now, scoring)
        return np.fromiter(out.keys(), dtype=np.int64, count=len(out)), \
            np.fromiter(out.values(), dtype=np.float64, count=len(out))

    def retrieve(self, query: Query, quota: int, allowed: BitMap | None) -> Hits:
        with self.lock:
            ordinals, scores = self.scores_for(query.text, query.context)
        live = self.collection.mask(allowed) if allowed is not None else None
        keep = np.ones(ordinals.size, dtype=bool) if live is None else live[ordinals].astype(bool)
        if allowed is None and self.collection.deleted:
            keep &= ~np.isin(ordinals, self.collection.deleted.to_array())
        ordinals, scores = ordinals[keep], scores[keep].astype(np.float32)
        # By the float32 score the wire carries, then the ordinal (as every strategy breaks ties).
        order = np.lexsort((ordinals, -scores))[:quota]
        return Hits(ordinals[order], scores[order], int(ordinals.size))

    def warm_up(self) -> None:
        self.scores_for("warm up")
        text_key("Warm Up")

    def describe(self) -> dict[str, str]:
        c = self.config
        queries, pairs = self.predicted.counts()
        return {"state_dir": str(c.state_dir), "snapshot_every": str(c.snapshot_every),
                "snapshot_interval_s": str(c.snapshot_interval_s), "dedup_window_s": str(c.dedup_window_s),
                "min_evidence": str(c.min_evidence), "context_keys": ",".join(c.context_keys),
                "prior_strength": str(c.scoring.prior_strength),
                "prior_mean": str(c.scoring.prior_mean), "half_life_days": str(c.scoring.half_life_days),
                "predicted_queries": str(queries), "predicted_pairs": str(pairs),
                "observed_queries": str(len(self.observed)),
                "contextual_queries": str(sum(SEPARATOR in k for k in self.observed)),
                "observed_pairs": str(sum(len(pairs) for pairs in self.observed.values())),
                "pruned_pairs": str(self.pruned_pairs), "events": str(len(self.seen)),
                "dropped_on_load": str(self.dropped)}

    # -- build and storage ----------------------------------------------------------------------

    @classmethod
    def build(cls, entities: Sequence[Entity], collection: Collection, root: str | os.PathLike[str],
              options: Mapping[str, Any]) -> None:
        """options: max_per_query (predicted entities kept per query, default 1000)."""
        pairs = predict(entities, collection.popularity, int(options.get("max_per_query", DEFAULT_MAX_PER_QUERY)))
        write_predicted(root, pairs, len(entities))

    @classmethod
    def load(cls, root: str | os.PathLike[str], collection: Collection,
             options: Mapping[str, Any] | None = None, *, clock: Callable[[], float] = time.time) -> MemoryStrategy:
        """options: MemoryConfig.from_options; clock: see the class docstring (also used by recovery)."""
        r = ComponentReader(root, COMPONENT)
        keys = r.read_json("queries.json")
        predicted = Predicted({k: i for i, k in enumerate(keys)}, r.read_array("offsets.npy", mmap=False),
                              r.read_array("ordinals.npy", mmap=False), r.read_array("scores.npy", mmap=False))
        return cls(MemoryConfig.from_options(options or {}, root), collection, predicted, clock)


def write_predicted(root: str | os.PathLike[str], pairs: Mapping[str, Sequence[tuple[int, float]]],
                    entities: int) -> None:
    """Write the memory component holding the predicted `pairs` (core.memory.predict.predict; a
    query partition passes the keys it owns) of a collection of `entities` entities."""
    keys = sorted(pairs)
    offsets = np.zeros(len(keys) + 1, dtype=np.int64)
    np.cumsum([len(pairs[k]) for k in keys], out=offsets[1:])
    ordinals = np.array([o for k in keys for o, _ in pairs[k]], dtype=np.int32)
    scores = np.array([s for k in keys for _, s in pairs[k]], dtype=np.float32)
    with ComponentWriter(root, COMPONENT, {"entities": entities, "queries": len(keys)}) as w:
        w.write_json("queries.json", keys)
        w.write_array("offsets.npy", offsets)
        w.write_array("ordinals.npy", ordinals)
        w.write_array("scores.npy", scores)


ENTRY = StrategyEntry(build=MemoryStrategy.build, load=MemoryStrategy.load)
