"""The durable event log: every search decision and every feedback event, in one SQLite file.

SQLite in WAL mode with `synchronous=FULL`: a commit returns only after the write-ahead log is
fsync'd, so an event that `record_event` has returned for survives a SIGKILL (or power loss) of
the broker, and the broker acknowledges feedback only after that return. Readers (training,
off-policy evaluation) open their own read-only connection and see a consistent snapshot without
blocking the writer.

Tables (schema version 1, in `PRAGMA user_version`):
- decisions: decision_id TEXT PK, ts REAL (s since the epoch), query_text, context (JSON object of
  strings), features (BLOB, float64 little-endian, the policy's context vector), strategies (JSON
  list: the policy's columns), quotas (JSON list of ints, 0 = not called), allocation (index in
  the policy's allocation space), propensity (P of that allocation), marginals (JSON list),
  policy (name), lists (JSON object: strategy -> {"ids": [...], "scores": [...]}, one entry per
  strategy that answered in time: a strategy called but absent timed out or failed), final
  (JSON list of the entity ids served, best first).
- events: event_id TEXT PK (a repeated id is ignored: `INSERT OR IGNORE`), decision_id (FK),
  entity_id, type (core.types.EventType value), value, ts, reward (the policy's reward).

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
from core.merge import Merged, StrategyList, merge
from core.ranking import TrainingGroup, graded_labels
from core.types import EventType

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
  decision_id TEXT PRIMARY KEY, ts REAL NOT NULL, query_text TEXT NOT NULL, context TEXT NOT NULL,
  features BLOB NOT NULL, strategies TEXT NOT NULL, quotas TEXT NOT NULL, allocation INTEGER NOT NULL,
  propensity REAL NOT NULL, marginals TEXT NOT NULL, policy TEXT NOT NULL, lists TEXT NOT NULL,
  final TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
  event_id TEXT PRIMARY KEY, decision_id TEXT NOT NULL REFERENCES decisions(decision_id),
  entity_id TEXT NOT NULL, type INTEGER NOT NULL, value REAL NOT NULL, ts REAL NOT NULL,
  reward REAL NOT NULL);
CREATE INDEX IF NOT EXISTS events_by_decision ON events(decision_id);
"""
_DECISION_COLUMNS = ("decision_id, ts, query_text, context, features, strategies, quotas, allocation, "
                     "propensity, marginals, policy, lists, final")


@dataclass(frozen=True, kw_only=True)
class DecisionRecord:
    """One search as the broker decided and served it (see the module docstring for the fields).

    features: float64 (d,). quotas, marginals: one per strategy. lists: the answered strategies'
    lists, each a subset of `strategies`. final: entity ids served, best first.
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

    def __post_init__(self) -> None:
        if not self.decision_id:
            raise ValueError("`decision_id` must be non-empty")
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
    reward: what the policy was given for it (core.reward.search_reward)."""

    event_id: str
    decision_id: str
    entity_id: str
    type: EventType
    value: float = 0.0
    ts: float = 0.0
    reward: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "type", EventType(self.type))
        for name in ("event_id", "decision_id", "entity_id"):
            if not getattr(self, name):
                raise ValueError(f"`{name}` must be non-empty")
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


def _lists_json(lists: Sequence[StrategyList]) -> str:
    return json.dumps({lst.strategy: {"ids": list(lst.entity_ids), "scores": np.asarray(lst.scores).tolist()}
                       for lst in lists})


def _decision_values(record: DecisionRecord) -> tuple[Any, ...]:
    return (record.decision_id, record.ts, record.query_text, json.dumps(dict(record.context)),
            record.features.astype("<f8").tobytes(), json.dumps(list(record.strategies)),
            json.dumps([int(q) for q in record.quotas]), int(record.allocation), float(record.propensity),
            json.dumps([float(m) for m in record.marginals]), record.policy, _lists_json(record.lists),
            json.dumps(list(record.final)))


def _decision_from_row(row: Sequence[Any]) -> DecisionRecord:
    lists = tuple(StrategyList(s, v["ids"], np.array(v["scores"], dtype=np.float32))
                  for s, v in json.loads(row[11]).items())
    return DecisionRecord(
        decision_id=row[0], ts=row[1], query_text=row[2], context=json.loads(row[3]),
        features=np.frombuffer(row[4], dtype="<f8").copy(), strategies=tuple(json.loads(row[5])),
        quotas=tuple(json.loads(row[6])), allocation=row[7], propensity=row[8],
        marginals=tuple(json.loads(row[9])), policy=row[10], lists=lists, final=tuple(json.loads(row[12])))


class EventLog:
    """The SQLite event log at `path` (created with its tables if missing). Use as a context
    manager or call close()."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise ValueError(f"{self.path}: SQLite refused WAL mode (got {mode!r})")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._conn.execute("PRAGMA busy_timeout=5000")
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise ValueError(f"{self.path}: event log schema version {version} is not supported "
                                 f"(this ltrr reads version {SCHEMA_VERSION})")
            self._conn.executescript(_SCHEMA)
            self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except (sqlite3.Error, ValueError):
            self._conn.close()
            raise

    def record_decision(self, record: DecisionRecord) -> None:
        """Store one decision durably; ValueError if its decision_id was recorded before."""
        values = _decision_values(record)
        with self._lock:
            try:
                self._conn.execute(f"INSERT INTO decisions ({_DECISION_COLUMNS}) VALUES "
                                   f"({', '.join('?' * 13)})", values)
            except sqlite3.IntegrityError:
                raise ValueError(f"`decision_id` {record.decision_id!r} was already recorded") from None

    def record_decisions(self, records: Sequence[DecisionRecord]) -> None:
        """Store several decisions in one transaction (one fsync): the broker's batched writer."""
        if not records:
            return
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for record in records:
                    self._conn.execute(f"INSERT INTO decisions ({_DECISION_COLUMNS}) VALUES "
                                       f"({', '.join('?' * 13)})", _decision_values(record))
                self._conn.execute("COMMIT")
            except sqlite3.IntegrityError:
                self._conn.execute("ROLLBACK")
                raise ValueError("a decision_id in the batch was already recorded") from None
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def record_event(self, event: EventRecord) -> bool:
        """Store one event durably before returning. False if its event_id was seen before (nothing
        is written); NotFoundError if its decision_id is unknown."""
        values = (event.event_id, event.decision_id, event.entity_id, int(event.type), event.value,
                  event.ts, event.reward)
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                if self._conn.execute("SELECT 1 FROM decisions WHERE decision_id = ?",
                                      (event.decision_id,)).fetchone() is None:
                    raise NotFoundError(f"decision_id {event.decision_id!r} is unknown")
                cur = self._conn.execute("INSERT OR IGNORE INTO events (event_id, decision_id, entity_id, type, "
                                         "value, ts, reward) VALUES (?, ?, ?, ?, ?, ?, ?)", values)
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            return cur.rowcount == 1

    def decision(self, decision_id: str) -> DecisionRecord:
        """The recorded decision; NotFoundError if unknown."""
        with self._lock:
            row = self._conn.execute(f"SELECT {_DECISION_COLUMNS} FROM decisions WHERE decision_id = ?",
                                     (decision_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"decision_id {decision_id!r} is unknown")
        return _decision_from_row(row)

    def events(self, decision_id: str) -> list[EventRecord]:
        """The events of one decision, in the order they were recorded."""
        with self._lock:
            rows = self._conn.execute("SELECT event_id, decision_id, entity_id, type, value, ts, reward FROM events "
                                      "WHERE decision_id = ? ORDER BY rowid", (decision_id,)).fetchall()
        return [EventRecord(event_id=r[0], decision_id=r[1], entity_id=r[2], type=EventType(r[3]), value=r[4],
                            ts=r[5], reward=r[6]) for r in rows]

    def last_event_rowid(self) -> int:
        """Position of the newest event in recording order (0 when there is none)."""
        with self._lock:
            return int(self._conn.execute("SELECT coalesce(max(rowid), 0) FROM events").fetchone()[0])

    def events_after(self, rowid: int) -> list[tuple[int, EventRecord]]:
        """(position, event) of every event recorded after position `rowid`, in recording order:
        what a policy snapshot taken at `rowid` has not learned yet."""
        with self._lock:
            rows = self._conn.execute("SELECT rowid, event_id, decision_id, entity_id, type, value, ts, reward "
                                      "FROM events WHERE rowid > ? ORDER BY rowid", (rowid,)).fetchall()
        return [(int(r[0]), EventRecord(event_id=r[1], decision_id=r[2], entity_id=r[3], type=EventType(r[4]),
                                        value=r[5], ts=r[6], reward=r[7])) for r in rows]

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
        candidates and graded labels (core.ranking.RELEVANCE_GRADES) from its events."""
        conn = self._reader()
        try:
            rows = conn.execute(f"SELECT {', '.join('d.' + c for c in _DECISION_COLUMNS.split(', '))}, "
                                "e.entity_id, e.type FROM decisions d JOIN events e USING (decision_id) "
                                "ORDER BY d.ts, d.decision_id, e.rowid")
            for _, group in itertools.groupby(rows, key=lambda r: r[0]):
                batch = list(group)
                record = _decision_from_row(batch[0][:13])
                merged = record.merged()
                labels = graded_labels(merged, ((r[13], EventType(r[14])) for r in batch))
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
