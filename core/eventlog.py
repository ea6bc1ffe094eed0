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
outage it resumes where it stopped. The catalog log (core.catalog_log: append_catalog,
catalog_after) lives in the same file, in its own tables (core.catalog_store). The file format,
its migrations (versions 1, 2 and 3 -> 4), the checks made on opening are in core.eventlog_schema;
retention (`compact`) in core.eventlog_retention.

Threading: one EventLog serves one writer; its methods take an internal lock, so calls from
several threads are serialised (the broker runs them on one worker thread). Iterators open
their own connection and may run beside the writer.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from core import catalog_store
from core.catalog_log import CatalogRecord, CatalogWrite
from core.errors import NotFoundError
from core.eventlog_records import (
    DECISION_COLUMNS,
    EVENT_COLUMNS,
    BanditLog,
    DecisionRecord,
    EventRecord,
    bandit_log,
    check_cursor,
    decision_from_row,
    decision_values,
    event_from_row,
    event_values,
    training_groups_of,
)
from core.eventlog_retention import DEFAULT_COMPACT_ROWS, CompactReport, RetentionConfig, compact, disk_bytes
from core.eventlog_schema import connect, transaction
from core.ranking_train import TrainingGroup

__all__ = ["AlwaysHeld", "BanditLog", "CompactReport", "DecisionRecord", "EventLog", "EventRecord", "RetentionConfig",
           "decision_from_row", "decision_values", "event_from_row"]

_DECISION_COLUMNS = ", ".join(DECISION_COLUMNS)
_N_DECISION = len(DECISION_COLUMNS)
_EVENT_COLUMNS = ", ".join(EVENT_COLUMNS)


class AlwaysHeld:
    """The lease (core.eventstore.Lease) of a store with one user: always held."""

    def hold(self) -> bool:
        return True

    def release(self) -> None:
        pass


class EventLog:
    """The SQLite event log at `path`: created if missing, upgraded in place from schema version 1.
    StateError (naming the file) if it is not a database, is damaged or has an unknown schema.
    Use as a context manager or call close()."""

    kind = "sqlite"  # core.eventstore.StoreKind

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
        with self._lock, transaction(self._conn):
            return [self._insert_event(event) for event in events]

    def record_judged(self, event: EventRecord, reward_of: Callable[[list[EventRecord]], float]) -> int:
        """Store `event` with reward `reward_of(earlier)`, earlier: its decision's events stored
        before it, read in the same transaction (so no event of the decision comes in between).
        Its position; 0 (reward_of not called) if its event_id was seen before; NotFoundError if
        its decision_id is unknown."""
        with self._lock, transaction(self._conn):
            if self._seen(event):
                return 0
            rows = self._conn.execute(f"SELECT {_EVENT_COLUMNS} FROM events WHERE decision_id = ? ORDER BY position",
                                      (event.decision_id,)).fetchall()
            return self._insert(replace(event, reward=reward_of([event_from_row(r) for r in rows])))

    def _seen(self, event: EventRecord) -> bool:
        """NotFoundError for an unknown decision; True if the event_id is stored (inside a transaction)."""
        if self._conn.execute("SELECT 1 FROM decisions WHERE decision_id = ?", (event.decision_id,)).fetchone() is None:
            raise NotFoundError(f"decision_id {event.decision_id!r} is unknown")
        # Looked up first, not INSERT OR IGNORE: an ignored insert still uses up a position.
        return self._conn.execute("SELECT 1 FROM events WHERE event_id = ?", (event.event_id,)).fetchone() is not None

    def _insert_event(self, event: EventRecord) -> int:
        return 0 if self._seen(event) else self._insert(event)

    def _insert(self, event: EventRecord) -> int:
        cur = self._conn.execute("INSERT INTO events (event_id, decision_id, entity_id, type, value, ts, reward) "
                                 "VALUES (?, ?, ?, ?, ?, ?, ?)", event_values(event))
        return int(cur.lastrowid or 0)

    def append_catalog(self, writes: Sequence[CatalogWrite]) -> list[int]:
        """core.catalog_log.CatalogLog.append_catalog: one transaction (BEGIN IMMEDIATE: positions
        in commit order), durable on return; per write its position, 0 when stale."""
        catalog_store.check_batch(writes)
        with self._lock, transaction(self._conn):
            last = int(self._conn.execute("SELECT coalesce(max(position), 0) FROM catalog_writes").fetchone()[0])
            return catalog_store.append(self._conn.cursor(), "?", writes, last)[0]

    def catalog_after(self, position: int, limit: int) -> list[CatalogRecord]:
        """Up to `limit` catalog records after `position`, in position order, then the rest of the
        last one's batch (core.catalog_store.after)."""
        with self._lock:
            return catalog_store.after(self._conn.execute, "?", position, limit)

    def last_catalog_position(self) -> int:
        """The newest catalog position (0: an empty catalog log)."""
        with self._lock:
            return int(self._conn.execute("SELECT coalesce(max(position), 0) FROM catalog_writes").fetchone()[0])

    def lease(self, name: str) -> AlwaysHeld:
        """One broker uses a SQLite log: every lease is always held."""
        return AlwaysHeld()

    def decision(self, decision_id: str) -> DecisionRecord:
        """The recorded decision; NotFoundError if unknown (never recorded, or deleted by retention)."""
        with self._lock:
            row = self._conn.execute(f"SELECT {_DECISION_COLUMNS} FROM decisions WHERE decision_id = ?",
                                     (decision_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"decision_id {decision_id!r} is unknown")
        return decision_from_row(row)

    def events(self, decision_id: str, before: int | None = None) -> list[EventRecord]:
        """The events of one decision, in the order they were recorded; with `before`, only those
        recorded at an earlier position (what the decision had heard when that event came)."""
        bound = 2**63 - 1 if before is None else before  # SQLite's largest integer: every position
        with self._lock:
            rows = self._conn.execute(f"SELECT {_EVENT_COLUMNS} FROM events WHERE decision_id = ? AND position < ? "
                                      "ORDER BY position", (decision_id, bound)).fetchall()
        return [event_from_row(r) for r in rows]

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
        return [(int(r[0]), event_from_row(r)) for r in rows]

    def feedback_after(self, position: int, limit: int) -> list[tuple[int, EventRecord, str, dict[str, str]]]:
        """(position, event, its decision's query_text, its decision's context) of at most `limit`
        events after `position`, in position order: what a consumer at cursor `position` forwards next."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {', '.join('e.' + c for c in EVENT_COLUMNS)}, d.query_text, d.context "
                "FROM events e JOIN decisions d USING (decision_id) WHERE e.position > ? ORDER BY e.position LIMIT ?",
                (position, _limit(limit, required=True))).fetchall()
        return [(int(r[0]), event_from_row(r), r[8], json.loads(r[9])) for r in rows]

    def cursor(self, name: str) -> int:
        """The position stored under `name` (0 when unset)."""
        with self._lock:
            row = self._conn.execute("SELECT position FROM cursors WHERE name = ?", (name,)).fetchone()
        return 0 if row is None else int(row[0])

    def set_cursor(self, name: str, position: int) -> None:
        """Store `position` (an event position, >= 0) under `name`, durably before returning."""
        check_cursor(name, position)
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
            rows = conn.execute(f"SELECT {', '.join('d.' + c for c in DECISION_COLUMNS)}, "
                                "e.entity_id, e.type, e.value FROM decisions d JOIN events e USING (decision_id) "
                                "WHERE length(d.lists) > 0 ORDER BY d.ts, d.decision_id, e.position")
            yield from training_groups_of(rows)
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
        return bandit_log(rows, strategies, policy)

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
