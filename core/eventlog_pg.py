"""The event log on PostgreSQL (psycopg 3): one log shared by any number of brokers.

Same contract as core.eventlog's SQLite log (core.eventstore): each method is one transaction;
`synchronous_commit` is set on for the session, so a commit returns after the WAL is flushed on
the server and an acknowledged event survives a crash of the broker or of the server.

Positions. An event's position comes from a one-row counter (`event_counter`) that the inserting
transaction locks (`SELECT ... FOR UPDATE`) and advances before it commits. The row lock is held to
the end of the transaction, so event-inserting transactions run one after another and commit in
position order: a tailer that has read every event up to p and reads `position > p` never misses
an event committed later with a smaller position, which a SEQUENCE (numbers taken at insert time,
committed in any order) would allow. The cost is that event inserts do not run in parallel across
brokers: one short transaction each (~1 ms), far above the feedback rate of a search service.
The same lock makes the duplicate check exact: a repeated event_id counts once across brokers
(also a UNIQUE constraint), and `record_judged` reads a decision's earlier events with no event
of that decision able to commit in between. Decisions do not take the lock (group commit as on
SQLite).

Retention (`compact`) applies the age rules (`keep_lists_s`, `max_age_s`) as on SQLite; the size of
a server's database is the server's business (autovacuum reuses freed space), so `max_bytes` is
not enforced here and the bytes reported are pg_database_size.

Connections: one per PgEventLog, used under a lock (the broker calls it from one thread); a
connection lost (server restart, network) raises UnavailableError and the next call reconnects.
Readers (training, OPE) open their own. Policy snapshots are kept in the `snapshots` table
(core.eventstore.SnapshotStore), the newest KEEP_SNAPSHOTS of them.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import replace
from typing import Any

import psycopg

from core import catalog_store
from core.catalog_log import CatalogRecord, CatalogWrite
from core.errors import NotFoundError, UnavailableError
from core.eventlog_pg_schema import CREATE, SCHEMA_LOCK, connect
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
from core.eventlog_retention import DEFAULT_COMPACT_ROWS, MAX_COMPACT_ROWS, CompactReport, RetentionConfig
from core.eventlog_schema import COMPACTED
from core.ranking_train import TrainingGroup

__all__ = ["KEEP_SNAPSHOTS", "PgEventLog", "PgLease"]

KEEP_SNAPSHOTS = 3  # the newest snapshots kept: a damaged newest one still leaves an older one
_DEC = ", ".join(DECISION_COLUMNS)
_EV = ", ".join(EVENT_COLUMNS)
_N_DECISION = len(DECISION_COLUMNS)
_INSERT_DECISION = f"INSERT INTO decisions ({_DEC}) VALUES ({', '.join(['%s'] * _N_DECISION)})"
_INSERT_EVENT = f"INSERT INTO events ({_EV}) VALUES ({', '.join(['%s'] * len(EVENT_COLUMNS))})"


class PgEventLog:
    """The event log in the PostgreSQL database at `url` (a libpq URL): tables created if missing.
    UnavailableError if the server cannot be reached."""

    kind = "postgresql"  # core.eventstore.StoreKind

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        with self._session() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))  # two brokers starting at once
            conn.execute(CREATE)

    @contextmanager
    def _session(self) -> Iterator[psycopg.Connection[Any]]:
        """The connection, (re)opened if needed, under the lock; a lost server -> UnavailableError."""
        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = connect(self.url)
                yield self._conn
            except psycopg.OperationalError as e:
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                raise UnavailableError(f"the event store (PostgreSQL) is unreachable: {e}") from e

    # -- writes ---------------------------------------------------------------------------------

    def record_decision(self, record: DecisionRecord) -> None:
        """Store one decision durably; ValueError if its decision_id was recorded before."""
        try:
            with self._session() as conn:
                conn.execute(_INSERT_DECISION, decision_values(record))
        except psycopg.errors.UniqueViolation:
            raise ValueError(f"`decision_id` {record.decision_id!r} was already recorded") from None

    def record_decisions(self, records: Sequence[DecisionRecord]) -> None:
        """Store several decisions in one transaction (one WAL flush): the broker's group commit.
        A decision_id stored before is passed over, unlike SQLite's ValueError: the broker re-sends
        a batch whose commit it could not confirm (the connection lost during COMMIT), and that
        batch may have been stored (decision ids are random UUIDs: no two decisions share one)."""
        if not records:
            return
        with self._session() as conn, conn.transaction(), conn.cursor() as cur:
            cur.executemany(_INSERT_DECISION + " ON CONFLICT (decision_id) DO NOTHING",
                            [decision_values(r) for r in records])

    def record_event(self, event: EventRecord) -> bool:
        """Store one event durably; False if its event_id was seen before (by any broker)."""
        return self.record_events([event])[0] > 0

    def record_events(self, events: Sequence[EventRecord]) -> list[int]:
        """Store several events in one transaction; per event its position, 0 for a repeated event_id.
        NotFoundError, and nothing written, if a decision_id is unknown."""
        with self._session() as conn, conn.transaction():
            position = _lock_counter(conn)
            out = []
            for event in events:
                if _seen(conn, event):
                    out.append(0)
                    continue
                position += 1
                conn.execute(_INSERT_EVENT, (position, *event_values(event)))
                out.append(position)
            conn.execute("UPDATE event_counter SET position = %s WHERE id = 1", (position,))
        return out

    def record_judged(self, event: EventRecord, reward_of: Callable[[list[EventRecord]], float]) -> int:
        """core.eventlog.EventLog.record_judged: the decision's earlier events are read under the
        counter lock, so no event of any broker commits in between."""
        with self._session() as conn, conn.transaction():
            position = _lock_counter(conn)
            if _seen(conn, event):
                return 0
            rows = conn.execute(f"SELECT {_EV} FROM events WHERE decision_id = %s ORDER BY position",
                                (event.decision_id,)).fetchall()
            reward = reward_of([event_from_row(r) for r in rows])
            position += 1
            conn.execute(_INSERT_EVENT, (position, *event_values(replace(event, reward=reward))))
            conn.execute("UPDATE event_counter SET position = %s WHERE id = 1", (position,))
        return position

    def append_catalog(self, writes: Sequence[CatalogWrite]) -> list[int]:
        """core.catalog_log.CatalogLog.append_catalog: one transaction holding the catalog_counter
        row FOR UPDATE (positions in commit order across brokers, as events); per write its
        position, 0 when stale. Durable on return (synchronous_commit on)."""
        catalog_store.check_batch(writes)
        with self._session() as conn, conn.transaction(), conn.cursor() as cur:
            row = conn.execute("SELECT position FROM catalog_counter WHERE id = 1 FOR UPDATE").fetchone()
            assert row is not None  # CREATE inserts the row
            out, last = catalog_store.append(cur, "%s", writes, int(row[0]))
            conn.execute("UPDATE catalog_counter SET position = %s WHERE id = 1", (last,))
        return out

    def catalog_after(self, position: int, limit: int) -> list[CatalogRecord]:
        """Up to `limit` catalog records after `position`, in position order, then the rest of the
        last one's batch (core.catalog_store.after)."""
        with self._session() as conn:
            return catalog_store.after(conn.execute, "%s", position, limit)

    def last_catalog_position(self) -> int:
        """The newest catalog position (0: an empty catalog log)."""
        with self._session() as conn:
            row = conn.execute("SELECT position FROM catalog_counter WHERE id = 1").fetchone()
        return 0 if row is None else int(row[0])

    def set_cursor(self, name: str, position: int) -> None:
        """Store `position` (>= 0) under `name`, durably before returning."""
        check_cursor(name, position)
        with self._session() as conn:
            conn.execute("INSERT INTO cursors (name, position) VALUES (%s, %s) ON CONFLICT (name) DO UPDATE "
                         "SET position = excluded.position", (name, int(position)))

    def save_snapshot(self, position: int, applied_events: int, data: bytes) -> None:
        """Keep a policy snapshot taken at `position` (core.eventstore.SnapshotStore); the newest
        KEEP_SNAPSHOTS are kept. A snapshot already stored at that position (another broker's, of
        the same policy) is left as it is."""
        with self._session() as conn, conn.transaction():
            conn.execute("INSERT INTO snapshots (position, applied_events, ts, data) VALUES (%s, %s, %s, %s) "
                         "ON CONFLICT (position) DO NOTHING", (position, applied_events, time.time(), data))
            conn.execute("DELETE FROM snapshots WHERE position NOT IN (SELECT position FROM snapshots ORDER BY "
                         "position DESC LIMIT %s)", (KEEP_SNAPSHOTS,))

    # -- reads ----------------------------------------------------------------------------------

    def latest_snapshot(self) -> tuple[int, int, bytes] | None:
        """(position, applied_events, data) of the newest snapshot; None without one."""
        with self._session() as conn:
            row = conn.execute("SELECT position, applied_events, data FROM snapshots ORDER BY position DESC "
                               "LIMIT 1").fetchone()
        return None if row is None else (int(row[0]), int(row[1]), bytes(row[2]))

    def decision(self, decision_id: str) -> DecisionRecord:
        """The recorded decision (whichever broker made it); NotFoundError if unknown."""
        with self._session() as conn:
            row = conn.execute(f"SELECT {_DEC} FROM decisions WHERE decision_id = %s", (decision_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"decision_id {decision_id!r} is unknown")
        return decision_from_row(row)

    def events(self, decision_id: str, before: int | None = None) -> list[EventRecord]:
        """The events of one decision in position order; with `before`, those at a smaller position."""
        bound = 2**63 - 1 if before is None else before
        with self._session() as conn:
            rows = conn.execute(f"SELECT {_EV} FROM events WHERE decision_id = %s AND position < %s ORDER BY "
                                "position", (decision_id, bound)).fetchall()
        return [event_from_row(r) for r in rows]

    def last_event_rowid(self) -> int:
        """The newest event position ever given (0: none)."""
        with self._session() as conn:
            row = conn.execute("SELECT position FROM event_counter WHERE id = 1").fetchone()
        return 0 if row is None else int(row[0])

    def events_after(self, rowid: int, limit: int | None = None) -> list[tuple[int, EventRecord]]:
        """(position, event) of the events after position `rowid` in position order, at most `limit`."""
        with self._session() as conn:
            rows = conn.execute(f"SELECT {_EV} FROM events WHERE position > %s ORDER BY position LIMIT %s",
                                (rowid, _limit(limit))).fetchall()
        return [(int(r[0]), event_from_row(r)) for r in rows]

    def feedback_after(self, position: int, limit: int) -> list[tuple[int, EventRecord, str, dict[str, str]]]:
        """(position, event, its decision's query_text and context) of at most `limit` events after `position`."""
        with self._session() as conn:
            rows = conn.execute(f"SELECT {', '.join('e.' + c for c in EVENT_COLUMNS)}, d.query_text, d.context "
                                "FROM events e JOIN decisions d USING (decision_id) WHERE e.position > %s "
                                "ORDER BY e.position LIMIT %s", (position, _limit(limit, required=True))).fetchall()
        return [(int(r[0]), event_from_row(r), r[8], json.loads(r[9])) for r in rows]

    def cursor(self, name: str) -> int:
        """The position stored under `name` (0 when unset)."""
        with self._session() as conn:
            row = conn.execute("SELECT position FROM cursors WHERE name = %s", (name,)).fetchone()
        return 0 if row is None else int(row[0])

    def counts(self) -> tuple[int, int]:
        """(decisions, events) recorded."""
        with self._session() as conn:
            row = conn.execute("SELECT (SELECT count(*) FROM decisions), (SELECT count(*) FROM events)").fetchone()
        assert row is not None  # an aggregate always has a row
        return int(row[0]), int(row[1])

    def training_groups(self) -> Iterator[TrainingGroup]:
        """core.eventlog.EventLog.training_groups, streamed from a server-side cursor on its own connection."""
        conn = connect(self.url)
        try:
            with conn.transaction(), conn.cursor(name="ltrr_training") as cur:
                cur.execute(f"SELECT {', '.join('d.' + c for c in DECISION_COLUMNS)}, e.entity_id, e.type, e.value "
                            "FROM decisions d JOIN events e USING (decision_id) WHERE octet_length(d.lists) > 0 "
                            "ORDER BY d.ts, d.decision_id, e.position")
                yield from training_groups_of(cur)
        finally:
            conn.close()

    def bandit_feedback(self, strategies: Sequence[str] | None = None, policy: str | None = None) -> BanditLog:
        """core.eventlog.EventLog.bandit_feedback, on its own connection."""
        with connect(self.url) as conn:
            rows = conn.execute("SELECT d.decision_id, d.strategies, d.features, d.allocation, d.propensity, "
                                "d.quotas, d.policy, max(e.reward) FROM decisions d LEFT JOIN events e "
                                "USING (decision_id) GROUP BY d.decision_id ORDER BY d.ts, d.decision_id").fetchall()
        return bandit_log([(*r[:2], bytes(r[2]), *r[3:]) for r in rows], strategies, policy)

    # -- retention, leases, life -----------------------------------------------------------------

    def compact(self, now: float, retention: RetentionConfig, *,
                max_rows: int = DEFAULT_COMPACT_ROWS) -> CompactReport:
        """The age rules of `retention` at `now` (module docstring), at most `max_rows` decisions each."""
        if not math.isfinite(now):
            raise ValueError(f"`now` must be finite, but got {now}")
        if not 1 <= max_rows <= MAX_COMPACT_ROWS:
            raise ValueError(f"`max_rows` must be in [1, {MAX_COMPACT_ROWS}], but got {max_rows}")
        with self._session() as conn:
            size = "SELECT pg_database_size(current_database())"
            before = int(conn.execute(size).fetchone()[0])  # type: ignore[index]
            with conn.transaction():
                old = [r[0] for r in conn.execute("SELECT decision_id FROM decisions WHERE ts < %s ORDER BY ts "
                                                  "LIMIT %s", (now - retention.max_age_s, max_rows))]
                positions = [r[0] for r in conn.execute("DELETE FROM events WHERE decision_id = ANY(%s) "
                                                        "RETURNING position", (old,))]
                conn.execute("DELETE FROM decisions WHERE decision_id = ANY(%s)", (old,))
                dropped = conn.execute(
                    "UPDATE decisions SET lists = %s, final = '[]' WHERE decision_id IN (SELECT d.decision_id FROM "
                    "decisions d WHERE d.ts < %s AND octet_length(d.lists) > 0 AND NOT EXISTS (SELECT 1 FROM events "
                    "e WHERE e.decision_id = d.decision_id) ORDER BY d.ts LIMIT %s)",
                    (COMPACTED, now - retention.keep_lists_s, max_rows)).rowcount
            after = int(conn.execute(size).fetchone()[0])  # type: ignore[index]
        return CompactReport(compacted=dropped, deleted_decisions=len(old), deleted_events=len(positions),
                             last_deleted_event=max(positions, default=0), bytes_before=before, bytes_after=after,
                             more=len(old) == max_rows or dropped == max_rows)

    def lease(self, name: str) -> PgLease:
        """The lease `name` among every user of this database (PgLease)."""
        return PgLease(self.url, name)

    def close(self) -> None:
        """Close the connection (committed data is already durable). Idempotent."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
            self._conn = None

    def __enter__(self) -> PgEventLog:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class PgLease:
    """A lease held as a session-level advisory lock (pg_try_advisory_lock) on a dedicated
    connection: released when the holder releases it or its session dies (process killed, network
    lost), after which another user's `hold` takes it."""

    def __init__(self, url: str, name: str) -> None:
        self.url, self.name = url, name
        self.key = int.from_bytes(hashlib.sha256(f"ltrr-lease:{name}".encode()).digest()[:8], "big", signed=True)
        self._conn: psycopg.Connection[Any] | None = None
        self.held = False

    def hold(self) -> bool:
        """Take the lease if free, or check the session holding it is alive; True while held."""
        try:
            if self._conn is None or self._conn.closed:
                self.held = False
                self._conn = connect(self.url)
            if self.held:
                self._conn.execute("SELECT 1")
            else:
                row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
                self.held = bool(row and row[0])
        except psycopg.OperationalError:
            self.release()
        return self.held

    def release(self) -> None:
        """Give the lease up, at once: the lock is unlocked before the session closes (a closed
        session's locks go only when its server process has noticed, a moment later, so another
        user's `hold` right after could still be refused). Idempotent."""
        if self.held and self._conn is not None and not self._conn.closed:
            with suppress(psycopg.OperationalError):  # the session is gone, and its locks with it
                self._conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
        self.held = False
        if self._conn is not None:
            self._conn.close()
        self._conn = None


def _lock_counter(conn: psycopg.Connection[Any]) -> int:
    """Lock the position counter for this transaction (module docstring); the newest position given."""
    row = conn.execute("SELECT position FROM event_counter WHERE id = 1 FOR UPDATE").fetchone()
    assert row is not None  # CREATE inserts the row
    return int(row[0])


def _seen(conn: psycopg.Connection[Any], event: EventRecord) -> bool:
    """NotFoundError for an unknown decision; True if the event_id is stored (by any broker)."""
    if conn.execute("SELECT 1 FROM decisions WHERE decision_id = %s", (event.decision_id,)).fetchone() is None:
        raise NotFoundError(f"decision_id {event.decision_id!r} is unknown")
    return conn.execute("SELECT 1 FROM events WHERE event_id = %s", (event.event_id,)).fetchone() is not None


def _limit(limit: int | None, *, required: bool = False) -> int | None:
    """PostgreSQL's LIMIT for `limit` (NULL: none)."""
    if limit is None and not required:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"`limit` must be an int >= 1{'' if required else ' or None'}, but got {limit!r}")
    return limit
