"""The durable event log: every search decision and every feedback event, in one SQLite file.

SQLite in WAL mode with `synchronous=FULL`: a commit returns only after the write-ahead log is
fsync'd, so an event that `record_event` has returned for survives a SIGKILL (or power loss) of
the broker, and the broker acknowledges feedback only after that return. Readers (training,
off-policy evaluation) open their own read-only connection and see a consistent snapshot without
blocking the writer.

A decision holds what the broker decided and served (DecisionRecord); an event is one feedback
on it (EventRecord) and has a position: its place in recording order, increasing and never
reused, even after retention deleted events. A policy snapshot stores the position it has learned
up to and replays `events_after` it; a consumer (the broker's forwarding to the memory shard)
keeps its position in a cursor (`set_cursor`) and reads `feedback_after` it, so that after any
outage it resumes where it stopped. The file format, its version 1 -> 2 migration and the checks
made on opening are in core.eventlog_schema; retention (`compact`) in core.eventlog_retention.

Threading: one EventLog serves one writer; its methods take an internal lock, so calls from
several threads are serialised (the broker runs them on one worker thread). Iterators open
their own connection and may run beside the writer.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import NotFoundError
from core.eventlog_retention import DEFAULT_COMPACT_ROWS, CompactReport, RetentionConfig, compact, disk_bytes
from core.eventlog_schema import COLUMNS, COMPACTED, connect, decode_lists, encode_lists, transaction
from core.merge import Merged, StrategyList, merge
from core.ranking_train import TrainingGroup, graded_labels
from core.types import EventType

__all__ = ["BanditLog", "CompactReport", "DecisionRecord", "EventLog", "EventRecord", "RetentionConfig"]

_DECISION_COLUMNS = ", ".join(COLUMNS["decisions"])
_N_DECISION = len(COLUMNS["decisions"])
_EVENT_COLUMNS = "position, event_id, decision_id, entity_id, type, value, ts, reward"


@dataclass(frozen=True, kw_only=True)
class DecisionRecord:
    """One search as the broker decided and served it (core.eventlog_schema describes the fields).

    ts: s since the epoch. features: float64 (d,). quotas, marginals: one per strategy. lists: the
    answered strategies' lists (a strategy called but absent timed out or failed). final: entity ids
    served, best first. latency_ms: the slowest called strategy's latency (ms), which the reward
    charges. compacted: retention dropped `lists` and `final` (both empty): the ranks are unknown.
    """

    decision_id: str
    ts: float
    query_text: str
    context: Mapping[str, str]
    features: np.ndarray
    strategies: tuple[str, ...]
    quotas: tuple[int, ...]
    allocation: int
    propensity: float
    marginals: tuple[float, ...]
    policy: str
    lists: tuple[StrategyList, ...]
    final: tuple[str, ...]
    latency_ms: float = 0.0
    compacted: bool = False

    def __post_init__(self) -> None:
        if not self.decision_id:
            raise ValueError("`decision_id` must be non-empty")
        if not math.isfinite(self.ts):
            raise ValueError(f"`ts` must be finite, but got {self.ts}")
        if not (math.isfinite(self.latency_ms) and self.latency_ms >= 0):
            raise ValueError(f"`latency_ms` must be finite and >= 0, but got {self.latency_ms}")
        if self.compacted and (self.lists or self.final):
            raise ValueError("a `compacted` decision must have empty `lists` and `final`")
        x = np.ascontiguousarray(self.features, dtype=np.float64)
        if x.ndim != 1 or not np.isfinite(x).all():
            raise ValueError(f"`features` must be a finite 1-d vector, but got shape {x.shape}")
        object.__setattr__(self, "features", x)
        n = len(self.strategies)
        if len(self.quotas) != n or len(self.marginals) != n:
            raise ValueError(f"`quotas` and `marginals` must have {n} entries (one per strategy), but got "
                             f"{len(self.quotas)} and {len(self.marginals)}")
        if self.allocation < 0:
            raise ValueError(f"`allocation` must be >= 0, but got {self.allocation}")
        if not (0.0 < self.propensity <= 1.0):
            raise ValueError(f"`propensity` must be in (0, 1], but got {self.propensity}")
        names = [lst.strategy for lst in self.lists]
        if len(set(names)) != len(names) or not set(names) <= set(self.strategies):
            raise ValueError(f"`lists` must come from distinct strategies among {self.strategies}, but got {names}")

    @property
    def answered(self) -> tuple[bool, ...]:
        """Per strategy: did it answer in time (it has a list)?"""
        names = {lst.strategy for lst in self.lists}
        return tuple(s in names for s in self.strategies)

    @property
    def returned(self) -> tuple[int | None, ...]:
        """Per strategy: how many candidates it returned within its quota (None: no answer in time)."""
        counts = {lst.strategy: len(lst.entity_ids) for lst in self.lists}
        return tuple(min(counts[s], q) if s in counts else None
                     for s, q in zip(self.strategies, self.quotas, strict=True))

    @property
    def fetched(self) -> int:
        """The candidates returned in all (within the quotas)."""
        return sum(n for n in self.returned if n is not None)

    def merged(self) -> Merged:
        """The candidates as the broker merged them (core.merge.merge of `lists`)."""
        return merge(self.lists, self.strategies)


@dataclass(frozen=True, kw_only=True)
class EventRecord:
    """One feedback event. value: strength in [0, 1] (0 = not given); ts: s since the epoch;
    reward: what the policy was given for it (core.reward.search_reward; 0 for an event that did
    not teach: core.pipeline). entity_id: empty only for a REFORMULATE naming nothing."""

    event_id: str
    decision_id: str
    entity_id: str
    type: EventType
    value: float = 0.0
    ts: float = 0.0
    reward: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "type", EventType(self.type))
        for name in ("event_id", "decision_id"):
            if not getattr(self, name):
                raise ValueError(f"`{name}` must be non-empty")
        if not self.entity_id and self.type is not EventType.REFORMULATE:
            raise ValueError(f"`entity_id` must be non-empty for a {self.type.name} event (only a REFORMULATE "
                             "may name nothing)")
        for name in ("value", "ts", "reward"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"`{name}` must be finite, but got {getattr(self, name)}")


@dataclass(frozen=True, kw_only=True)
class BanditLog:
    """Logged bandit feedback for off-policy evaluation, one round per decision, in time order.

    contexts float64 (n, d); action int64 (n,): allocation index; reward float64 (n,): the highest
    logged reward of the decision's events, 0 without events; pscore float64 (n,): propensity;
    quotas int64 (n, S).
    """

    strategies: tuple[str, ...]
    decision_ids: tuple[str, ...]
    contexts: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    pscore: np.ndarray
    quotas: np.ndarray = field(repr=False)


def decision_values(record: DecisionRecord) -> tuple[Any, ...]:
    """The decisions table row of `record`, encoded as it is stored (benchmarks time this)."""
    return (record.decision_id, record.ts, record.query_text, json.dumps(dict(record.context)),
            record.features.astype("<f8").tobytes(), json.dumps(list(record.strategies)),
            json.dumps([int(q) for q in record.quotas]), int(record.allocation), float(record.propensity),
            json.dumps([float(m) for m in record.marginals]), record.policy,
            COMPACTED if record.compacted else encode_lists(record.lists), json.dumps(list(record.final)),
            float(record.latency_ms))


def _decision_from_row(row: Sequence[Any]) -> DecisionRecord:
    lists = decode_lists(row[11])
    return DecisionRecord(
        decision_id=row[0], ts=row[1], query_text=row[2], context=json.loads(row[3]),
        features=np.frombuffer(row[4], dtype="<f8").copy(), strategies=tuple(json.loads(row[5])),
        quotas=tuple(json.loads(row[6])), allocation=row[7], propensity=row[8],
        marginals=tuple(json.loads(row[9])), policy=row[10], lists=lists or (), final=tuple(json.loads(row[12])),
        latency_ms=row[13], compacted=lists is None)


def _event_from_row(r: Sequence[Any]) -> EventRecord:
    """The event of a row of _EVENT_COLUMNS (r[0] is the position)."""
    return EventRecord(event_id=r[1], decision_id=r[2], entity_id=r[3], type=EventType(r[4]), value=r[5],
                       ts=r[6], reward=r[7])


class EventLog:
    """The SQLite event log at `path`: created if missing, upgraded in place from schema version 1.
    StateError (naming the file) if it is not a database, is damaged or has an unknown schema.
    Use as a context manager or call close()."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn = connect(self.path)

    def record_decision(self, record: DecisionRecord) -> None:
        """Store one decision durably; ValueError if its decision_id was recorded before."""
        values = decision_values(record)
        with self._lock:
            try:
                self._conn.execute(f"INSERT INTO decisions ({_DECISION_COLUMNS}) VALUES "
                                   f"({', '.join('?' * _N_DECISION)})", values)
            except sqlite3.IntegrityError:
                raise ValueError(f"`decision_id` {record.decision_id!r} was already recorded") from None

    def record_decisions(self, records: Sequence[DecisionRecord]) -> None:
        """Store several decisions in one transaction (one fsync): the broker's batched writer."""
        if not records:
            return
        values = [decision_values(record) for record in records]
        with self._lock:
            try:
                with transaction(self._conn):
                    self._conn.executemany(f"INSERT INTO decisions ({_DECISION_COLUMNS}) VALUES "
                                           f"({', '.join('?' * _N_DECISION)})", values)
            except sqlite3.IntegrityError:
                raise ValueError("a decision_id in the batch was already recorded") from None

    def record_event(self, event: EventRecord) -> bool:
        """Store one event durably before returning. False if its event_id was seen before (nothing
        is written); NotFoundError if its decision_id is unknown."""
        return self.record_events([event])[0] > 0

    def record_events(self, events: Sequence[EventRecord]) -> list[int]:
        """Store several events in one transaction (one fsync). Per event its position, 0 if its
        event_id was seen before (also earlier in the batch). NotFoundError, and nothing written,
        if a decision_id is unknown."""
        positions = []
        with self._lock, transaction(self._conn):
            for event in events:
                if self._conn.execute("SELECT 1 FROM decisions WHERE decision_id = ?",
                                      (event.decision_id,)).fetchone() is None:
                    raise NotFoundError(f"decision_id {event.decision_id!r} is unknown")
                # Looked up first, not INSERT OR IGNORE: an ignored insert still uses up a position.
                if self._conn.execute("SELECT 1 FROM events WHERE event_id = ?", (event.event_id,)).fetchone():
                    positions.append(0)
                    continue
                cur = self._conn.execute(
                    "INSERT INTO events (event_id, decision_id, entity_id, type, value, ts, reward) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)", (event.event_id, event.decision_id, event.entity_id,
                                                     int(event.type), event.value, event.ts, event.reward))
                positions.append(int(cur.lastrowid or 0))
        return positions

    def decision(self, decision_id: str) -> DecisionRecord:
        """The recorded decision; NotFoundError if unknown (never recorded, or deleted by retention)."""
        with self._lock:
            row = self._conn.execute(f"SELECT {_DECISION_COLUMNS} FROM decisions WHERE decision_id = ?",
                                     (decision_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"decision_id {decision_id!r} is unknown")
        return _decision_from_row(row)

    def events(self, decision_id: str, before: int | None = None) -> list[EventRecord]:
        """The events of one decision, in the order they were recorded; with `before`, only those
        recorded at an earlier position (what the decision had heard when that event came)."""
        bound = 2**63 - 1 if before is None else before  # SQLite's largest integer: every position
        with self._lock:
            rows = self._conn.execute(f"SELECT {_EVENT_COLUMNS} FROM events WHERE decision_id = ? AND position < ? "
                                      "ORDER BY position", (decision_id, bound)).fetchall()
        return [_event_from_row(r) for r in rows]

    def last_event_rowid(self) -> int:
        """The newest event position ever given (0 when none was): right after record_event, that
        event's. Retention may have deleted that event since; positions are never reused."""
        with self._lock:
            row = self._conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        return 0 if row is None else int(row[0])

    def events_after(self, rowid: int, limit: int | None = None) -> list[tuple[int, EventRecord]]:
        """(position, event) of the events recorded after position `rowid`, in recording order, at
        most `limit` of them (None: all): what a policy snapshot taken at `rowid` has not learned yet."""
        with self._lock:
            rows = self._conn.execute(f"SELECT {_EVENT_COLUMNS} FROM events WHERE position > ? ORDER BY position "
                                      "LIMIT ?", (rowid, _limit(limit))).fetchall()
        return [(int(r[0]), _event_from_row(r)) for r in rows]

    def feedback_after(self, position: int, limit: int) -> list[tuple[int, EventRecord, str, dict[str, str]]]:
        """(position, event, its decision's query_text, its decision's context) of at most `limit`
        events after `position`, in position order: what a consumer at cursor `position` forwards next."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {', '.join('e.' + c for c in _EVENT_COLUMNS.split(', '))}, d.query_text, d.context "
                "FROM events e JOIN decisions d USING (decision_id) WHERE e.position > ? ORDER BY e.position LIMIT ?",
                (position, _limit(limit, required=True))).fetchall()
        return [(int(r[0]), _event_from_row(r), r[8], json.loads(r[9])) for r in rows]

    def cursor(self, name: str) -> int:
        """The position stored under `name` (0 when unset)."""
        with self._lock:
            row = self._conn.execute("SELECT position FROM cursors WHERE name = ?", (name,)).fetchone()
        return 0 if row is None else int(row[0])

    def set_cursor(self, name: str, position: int) -> None:
        """Store `position` (an event position, >= 0) under `name`, durably before returning."""
        if not name:
            raise ValueError("`name` must be non-empty")
        if isinstance(position, bool) or not isinstance(position, int | np.integer) or position < 0:
            raise ValueError(f"`position` must be an int >= 0, but got {position!r}")
        with self._lock:
            self._conn.execute("INSERT INTO cursors (name, position) VALUES (?, ?) ON CONFLICT(name) DO UPDATE "
                               "SET position = excluded.position", (name, int(position)))

    def compact(self, now: float, retention: RetentionConfig, *,
                max_rows: int = DEFAULT_COMPACT_ROWS) -> CompactReport:
        """Apply `retention` at time `now` (s since the epoch), touching at most `max_rows` decisions
        per rule (core.eventlog_retention.compact): call it every N writes; again soon if `more`."""
        with self._lock:
            return compact(self._conn, self.path, now, retention, max_rows=max_rows)

    def disk_bytes(self) -> int:
        """Bytes of the file plus its WAL."""
        return disk_bytes(self.path)

    def counts(self) -> tuple[int, int]:
        """(decisions, events) recorded."""
        with self._lock:
            n_dec = self._conn.execute("SELECT count(*) FROM decisions").fetchone()[0]
            n_ev = self._conn.execute("SELECT count(*) FROM events").fetchone()[0]
        return int(n_dec), int(n_ev)

    def _reader(self) -> sqlite3.Connection:
        return sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)

    def training_groups(self) -> Iterator[TrainingGroup]:
        """One TrainingGroup per decision with at least one event, in time order: its merged
        candidates and graded labels (core.ranking_train.graded_labels) from its events. Decisions
        whose lists retention dropped (feedback later than keep_lists_s) have no candidates: skipped."""
        conn = self._reader()
        try:
            rows = conn.execute(f"SELECT {', '.join('d.' + c for c in COLUMNS['decisions'])}, "
                                "e.entity_id, e.type, e.value FROM decisions d JOIN events e USING (decision_id) "
                                "WHERE length(d.lists) > 0 ORDER BY d.ts, d.decision_id, e.position")
            for _, group in itertools.groupby(rows, key=lambda r: r[0]):
                batch = list(group)
                record = _decision_from_row(batch[0][:_N_DECISION])
                merged = record.merged()
                labels = graded_labels(merged, (r[_N_DECISION:_N_DECISION + 3] for r in batch))
                yield TrainingGroup(query_text=record.query_text, merged=merged, labels=labels)
        finally:
            conn.close()

    def bandit_feedback(self, strategies: Sequence[str] | None = None, policy: str | None = None) -> BanditLog:
        """Every decision (of `policy` and over `strategies`, when given) as a round of logged bandit
        feedback for core.ope. ValueError if the rounds mix strategy sets or feature sizes (filter
        by `strategies`), or if there are none."""
        conn = self._reader()
        try:
            rows = conn.execute("SELECT d.decision_id, d.strategies, d.features, d.allocation, d.propensity, "
                                "d.quotas, d.policy, max(e.reward) FROM decisions d LEFT JOIN events e "
                                "USING (decision_id) GROUP BY d.decision_id ORDER BY d.ts, d.decision_id").fetchall()
        finally:
            conn.close()
        want = None if strategies is None else list(strategies)
        rows = [r for r in rows if (want is None or json.loads(r[1]) == want) and (policy is None or r[6] == policy)]
        if not rows:
            raise ValueError(f"no logged decisions for strategies {want} and policy {policy!r}")
        kinds = {(r[1], len(r[2])) for r in rows}
        if len(kinds) > 1:
            raise ValueError(f"logged decisions mix strategy sets or feature sizes {sorted(kinds)}; pass `strategies`")
        return BanditLog(
            strategies=tuple(json.loads(rows[0][1])), decision_ids=tuple(r[0] for r in rows),
            contexts=np.vstack([np.frombuffer(r[2], dtype="<f8") for r in rows]),
            action=np.array([r[3] for r in rows], dtype=np.int64),
            reward=np.array([0.0 if r[7] is None else r[7] for r in rows], dtype=np.float64),
            pscore=np.array([r[4] for r in rows], dtype=np.float64),
            quotas=np.array([json.loads(r[5]) for r in rows], dtype=np.int64))

    def close(self) -> None:
        """Close the connection (committed data is already durable). Idempotent."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _limit(limit: int | None, *, required: bool = False) -> int:
    """SQLite's LIMIT for `limit` (-1: none)."""
    if limit is None and not required:
        return -1
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"`limit` must be an int >= 1{'' if required else ' or None'}, but got {limit!r}")
    return limit
