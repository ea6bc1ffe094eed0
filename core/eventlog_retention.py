"""Retention of the event log: bounded by age and by bytes, enforced in small steps.

What each part of the log is for, and so how long it is kept:
- A decision's lists (the strategies' candidates and the served list, most of its bytes) serve
  only training (EventLog.training_groups), which uses decisions that got feedback, and the rewards
  of feedback (the ranks of the acted-on entity). After `keep_lists_s` a decision without any event
  loses them. Feedback that arrives later still joins (the decision row stays); its ranks are
  unknown, i.e. absent (DecisionRecord.compacted tells).
- Off-policy evaluation (EventLog.bandit_feedback) needs features, allocation, propensity and
  reward of every decision: kept until `max_age_s`, then the decision and its events are deleted.
- Whatever the ages, the file stays under `max_bytes`: the oldest decisions go first.

compact() does a bounded amount of work per call, so the broker can run it on its writer thread
every N writes without a long stall. It measures the file with its WAL: it first tries a TRUNCATE
checkpoint without waiting (a reader that still uses the WAL makes it give up; that WAL is then
not counted, as deleting decisions cannot shrink it, and is truncated by a later call). Freed pages
go back to the file system (`PRAGMA incremental_vacuum`, then a checkpoint that truncates the file)
in files created with auto_vacuum=INCREMENTAL; in version 1 files they stay free inside the file
and new rows reuse them (core.eventlog_schema). Between two calls the WAL and the file grow by the
writes in between (SQLite checkpoints the WAL at about 4 MiB): keep `max_bytes` below the disk by
that much (the defaults leave 3 GiB of the broker's 5 GiB volume, k8s/broker.yaml).

Deleted events may not have reached a consumer yet: CompactReport.last_deleted_event against a
cursor (EventLog.cursor) tells whether retention overtook it (an outage longer than the bounds).
"""

from __future__ import annotations

import math
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from core.eventlog_schema import BUSY_TIMEOUT_MS, COLUMNS, COMPACTED, transaction

# A day of feedback window: plays and favourites come within minutes or hours of the search; a
# later event still joins, only without ranks.
DEFAULT_KEEP_LISTS_S = 86_400.0
# A month of decisions is enough for off-policy evaluation and retraining; older ones were made
# by an older policy on an older catalog.
DEFAULT_MAX_AGE_S = 30 * 86_400.0
# The broker's volume holds 5 GiB (k8s/broker.yaml): this leaves room for the WAL, the policy
# snapshot and the ranker model.
DEFAULT_MAX_BYTES = 2 << 30
# Below this the schema pages and one batch's WAL would take most of the bound.
MIN_MAX_BYTES = 1 << 20
# Decisions each rule touches per compact() call: a few ms of SQLite work, so the broker's writer
# thread can call it every ~1000 writes and keep up with its write rate.
DEFAULT_COMPACT_ROWS = 1000
# Also bounds the SQL parameters of one statement (SQLite allows 32766).
MAX_COMPACT_ROWS = 10_000
# Decisions deleted between two measurements of the file while it is over max_bytes.
SIZE_STEP_ROWS = 50
_KEPT = tuple(c for c in COLUMNS["decisions"] if c not in ("lists", "final"))  # what compaction keeps
_WATERMARK = "lists_examined_before"  # meta: every decision older than this has been examined


@dataclass(frozen=True, kw_only=True)
class RetentionConfig:
    """keep_lists_s: s after which a decision without events loses its lists; max_age_s: s after
    which a decision and its events are deleted (math.inf: never, for both); max_bytes: bound on
    the file plus its WAL (see the module docstring for each default)."""

    keep_lists_s: float = DEFAULT_KEEP_LISTS_S
    max_age_s: float = DEFAULT_MAX_AGE_S
    max_bytes: int = DEFAULT_MAX_BYTES

    def __post_init__(self) -> None:
        for name in ("keep_lists_s", "max_age_s"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"`{name}` must be > 0 s (math.inf: never), but got {value}")
        if isinstance(self.max_bytes, bool) or not isinstance(self.max_bytes, int) or self.max_bytes < MIN_MAX_BYTES:
            raise ValueError(f"`max_bytes` must be an int >= {MIN_MAX_BYTES} (1 MiB), but got {self.max_bytes!r}")


@dataclass(frozen=True, kw_only=True)
class CompactReport:
    """What one compact() call did. compacted: decisions whose lists were dropped; last_deleted_event:
    the highest event position deleted (0: none); bytes_*: file plus WAL before its changes (after
    checkpointing the writes since the last call) and after them; more: a rule used all of its
    max_rows, so there may be more to do (call again soon)."""

    compacted: int
    deleted_decisions: int
    deleted_events: int
    last_deleted_event: int
    bytes_before: int
    bytes_after: int
    more: bool


@dataclass
class _Work:
    compacted: int = 0
    deleted_decisions: int = 0
    deleted_events: int = 0
    last_deleted_event: int = 0
    more: bool = False


def disk_bytes(path: Path) -> int:
    """Bytes of the database file plus its WAL (the -shm index, 32 KiB, is left out)."""
    wal = Path(f"{path}-wal")
    return os.path.getsize(path) + (os.path.getsize(wal) if wal.exists() else 0)


def checkpoint(conn: sqlite3.Connection) -> bool:
    """Copy the WAL into the database and truncate it, without waiting for readers; False if a
    reader still uses the WAL (nothing waits; a later call finishes the job)."""
    conn.execute("PRAGMA busy_timeout=0")
    try:
        busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
    finally:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return busy == 0


def compact(conn: sqlite3.Connection, path: Path, now: float, retention: RetentionConfig, *,
            max_rows: int = DEFAULT_COMPACT_ROWS) -> CompactReport:
    """Apply `retention` at time `now` (s since the epoch) to the log open on `conn` (the writer's
    connection, no transaction open): delete decisions older than max_age_s, drop the lists of
    those older than keep_lists_s without events, delete the oldest while over max_bytes; each rule
    touches at most `max_rows` decisions, oldest first. One transaction, then vacuum and checkpoint."""
    if not math.isfinite(now):
        raise ValueError(f"`now` must be finite, but got {now}")
    if not 1 <= max_rows <= MAX_COMPACT_ROWS:
        raise ValueError(f"`max_rows` must be in [1, {MAX_COMPACT_ROWS}], but got {max_rows}")
    pinned = not checkpoint(conn)
    before = disk_bytes(path)
    wal = 0 if pinned else before - os.path.getsize(path)  # 0 too unless a write came in between
    work = _Work()
    with transaction(conn):
        _delete_older(conn, now - retention.max_age_s, max_rows, work)
        _drop_lists(conn, now - retention.keep_lists_s, max_rows, work)
        _delete_over(conn, retention.max_bytes - wal, max_rows, work)
    if conn.execute("PRAGMA freelist_count").fetchone()[0]:
        conn.executescript("PRAGMA incremental_vacuum")  # executescript steps it to the end; no-op without auto_vacuum
    checkpoint(conn)
    return CompactReport(compacted=work.compacted, deleted_decisions=work.deleted_decisions,
                         deleted_events=work.deleted_events, last_deleted_event=work.last_deleted_event,
                         bytes_before=before, bytes_after=disk_bytes(path), more=work.more)


def _oldest(conn: sqlite3.Connection, before: float, n: int) -> list[str]:
    return [r[0] for r in conn.execute("SELECT decision_id FROM decisions WHERE ts < ? ORDER BY ts LIMIT ?",
                                       (before, n))]


def _delete(conn: sqlite3.Connection, ids: list[str], work: _Work) -> None:
    """Delete these decisions with their events (events first: they reference the decisions)."""
    marks = ", ".join("?" * len(ids))
    positions = [r[0] for r in conn.execute(f"DELETE FROM events WHERE decision_id IN ({marks}) RETURNING position",
                                            ids)]
    conn.execute(f"DELETE FROM decisions WHERE decision_id IN ({marks})", ids)
    work.deleted_decisions += len(ids)
    work.deleted_events += len(positions)
    work.last_deleted_event = max([work.last_deleted_event, *positions])


def _delete_older(conn: sqlite3.Connection, before: float, max_rows: int, work: _Work) -> None:
    ids = _oldest(conn, before, max_rows)
    if ids:
        _delete(conn, ids, work)
    work.more |= len(ids) == max_rows


def _live_bytes(conn: sqlite3.Connection) -> int:
    """Bytes of the pages in use, as seen inside the open transaction (free pages excluded)."""
    pages = conn.execute("PRAGMA page_count").fetchone()[0] - conn.execute("PRAGMA freelist_count").fetchone()[0]
    return int(pages) * int(conn.execute("PRAGMA page_size").fetchone()[0])


def _delete_over(conn: sqlite3.Connection, limit: int, max_rows: int, work: _Work) -> None:
    left = max_rows
    while _live_bytes(conn) > limit:
        if left == 0:
            work.more = True
            return
        ids = _oldest(conn, math.inf, min(SIZE_STEP_ROWS, left))
        if not ids:
            return
        _delete(conn, ids, work)
        left -= len(ids)


def _drop_lists(conn: sqlite3.Connection, before: float, max_rows: int, work: _Work) -> None:
    """Compact decisions older than `before` without events, walking them by time from where the
    previous call stopped (the watermark in `meta`), so each call looks at new rows only. A decision
    recorded with a timestamp already behind the watermark (a clock stepped back by more than
    keep_lists_s) keeps its lists until max_age_s."""
    row = conn.execute("SELECT value FROM meta WHERE name = ?", (_WATERMARK,)).fetchone()
    start = -math.inf if row is None else float(row[0])
    if start >= before:
        return
    rows = conn.execute(f"SELECT d.ts, length(d.lists) > 0 AND NOT EXISTS (SELECT 1 FROM events e WHERE "
                        f"e.decision_id = d.decision_id), {', '.join('d.' + c for c in _KEPT)} FROM decisions d "
                        "WHERE d.ts >= ? AND d.ts < ? ORDER BY d.ts LIMIT ?", (start, before, max_rows)).fetchall()
    drop = [r[2:] for r in rows if r[1]]
    if drop:
        # Deleted and inserted again rather than updated: an updated row stays on its page, which its
        # lists had filled, and the pages of compacted rows would stay 80% empty (3 KB a decision
        # instead of 0.7 KB); inserted again, they pack at the end of the table. No event refers to them.
        conn.execute(f"DELETE FROM decisions WHERE decision_id IN ({', '.join('?' * len(drop))})",
                     [r[0] for r in drop])
        conn.executemany(f"INSERT INTO decisions ({', '.join(_KEPT)}, lists, final) VALUES "
                         f"({', '.join('?' * (len(_KEPT) + 2))})", [(*r, COMPACTED, "[]") for r in drop])
    work.compacted += len(drop)
    if len(rows) < max_rows:
        mark = before
    else:  # the rows at the last timestamp are looked at again next time (harmless); a full chunk
        # of one timestamp is stepped over, so that a tie cannot stop the walk
        work.more = True
        mark = rows[-1][0] if rows[-1][0] > start else math.nextafter(rows[-1][0], math.inf)
    conn.execute("INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                 (_WATERMARK, mark))
