"""The event log's file: its SQLite schema, the migration from version 1, the checks made on
opening it, and the encoding of the strategy lists (core.eventlog is the API).

Schema version 5 (in `PRAGMA user_version`; version 4 added the catalog log's two tables,
catalog_writes and catalog_versions: core.catalog_store; version 5 its column batch_end):
- decisions: decision_id TEXT PK, ts REAL (s since the epoch; indexed: retention walks decisions
  oldest first), query_text, context (JSON object of strings), features (BLOB, float64
  little-endian), strategies (JSON list), quotas (JSON list of ints, 0 = not called), allocation,
  propensity, marginals (JSON list), policy, lists (BLOB, below), final (JSON list of the entity
  ids served, best first), latency_ms REAL (the slowest called strategy's latency, ms),
  policy_version INTEGER (feedback events the deciding policy had applied; 0 before version 3).
- events: position INTEGER PK AUTOINCREMENT (the recording order), event_id TEXT UNIQUE (a
  repeated id is ignored), decision_id (FK), entity_id, type, value, ts, reward. AUTOINCREMENT
  because a position is never reused: plain rowids restart at max(rowid) + 1, so once retention
  deleted the newest events a new event would take a position that a policy snapshot or an outbox
  cursor already stored, and would never be replayed or forwarded.
- cursors: name TEXT PK, position INTEGER: the last event position a consumer has processed.
- meta: name TEXT PK, value REAL: the log's own bookkeeping (retention's progress).

lists: zlib (level 1) of the JSON object strategy -> {"ids": [...], "f4": "..."}, "f4" the base64
of the scores' little-endian float32 bytes (exact, NaN and infinities included). Rows written
before "f4" (session 24) carry "scores" instead, a JSON list of the shortest decimals that read
back as the same float32s; both are read. An empty BLOB means retention dropped the lists (the
decision is compacted). A TEXT value is a version 1 row (plain JSON), read as such.
Measured on realistic lists (4 strategies of 50-200 "spotify:track:<22 base62>" ids each, drawn
from a pool of 500 per query, float32 scores, 10 served; 500 decisions, seed 0): the lists take
29,901 bytes a decision in version 1, 10,190 with decimal scores and 9,018 with "f4", which also
encodes in half the CPU time (241 against 507 us a decision, most of it formatting the decimals).
The whole file took 31.6 KB a decision in version 1 and 12.0 KB with decimal scores; a compacted
decision, 0.7 KB. zlib level 6 would save 4% more for twice the CPU on the broker's writer thread.

New files get `auto_vacuum=INCREMENTAL`, so that retention (core.eventlog_retention) gives freed
pages back to the file system. Version 1 files keep auto_vacuum NONE (changing it takes a VACUUM,
which rewrites the whole file): pages freed by retention stay in the file and new rows reuse them,
so the file stops growing but does not shrink. To shrink one, stop the broker and run
`sqlite3 events.sqlite 'PRAGMA auto_vacuum=INCREMENTAL; VACUUM;'`.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import StateError
from core.merge import StrategyList

SCHEMA_VERSION = 5
# A writer waits this long for a lock another connection holds (a tool's checkpoint) before failing.
BUSY_TIMEOUT_MS = 5000
# After a checkpoint SQLite truncates the WAL to this size; without a limit the WAL keeps the largest
# size it ever had (a long reader lets it grow, since nothing can be checkpointed past it).
WAL_LIMIT_BYTES = 8 << 20
# zlib level of the lists: level 6 makes them 4% smaller for twice the CPU (module docstring).
LISTS_ZLIB_LEVEL = 1
COMPACTED = b""  # the `lists` of a decision whose lists retention dropped
WHAT_TO_DO = "move it aside: the broker starts a new log; the policy snapshot keeps what was learned"

_V1_COLUMNS = {
    "decisions": ("decision_id", "ts", "query_text", "context", "features", "strategies", "quotas", "allocation",
                  "propensity", "marginals", "policy", "lists", "final"),
    "events": ("event_id", "decision_id", "entity_id", "type", "value", "ts", "reward"),
}
COLUMNS = {
    "decisions": (*_V1_COLUMNS["decisions"], "latency_ms", "policy_version"),
    "events": ("position", *_V1_COLUMNS["events"]),
    "cursors": ("name", "position"),
    "meta": ("name", "value"),
    "catalog_writes": ("position", "entity_id", "version", "payload", "written_at", "batch_end"),
    "catalog_versions": ("entity_id", "version"),
}
_EVENTS = """
CREATE TABLE {name} (
  position INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE,
  decision_id TEXT NOT NULL REFERENCES decisions(decision_id), entity_id TEXT NOT NULL, type INTEGER NOT NULL,
  value REAL NOT NULL, ts REAL NOT NULL, reward REAL NOT NULL);
"""
_COMMON = """
CREATE INDEX events_by_decision ON events(decision_id);
CREATE INDEX decisions_by_ts ON decisions(ts);
CREATE TABLE cursors (name TEXT PRIMARY KEY, position INTEGER NOT NULL);
CREATE TABLE meta (name TEXT PRIMARY KEY, value REAL NOT NULL);
"""
# Version 3 -> 5 (and part of every new file): the catalog log (core.catalog_store).
_CATALOG = """
CREATE TABLE catalog_writes (
  position INTEGER PRIMARY KEY, entity_id TEXT NOT NULL, version INTEGER NOT NULL, payload TEXT,
  written_at REAL NOT NULL, batch_end INTEGER);
CREATE TABLE catalog_versions (entity_id TEXT PRIMARY KEY, version INTEGER NOT NULL);
"""
_CREATE = """
CREATE TABLE decisions (
  decision_id TEXT PRIMARY KEY, ts REAL NOT NULL, query_text TEXT NOT NULL, context TEXT NOT NULL,
  features BLOB NOT NULL, strategies TEXT NOT NULL, quotas TEXT NOT NULL, allocation INTEGER NOT NULL,
  propensity REAL NOT NULL, marginals TEXT NOT NULL, policy TEXT NOT NULL, lists BLOB NOT NULL,
  final TEXT NOT NULL, latency_ms REAL NOT NULL DEFAULT 0, policy_version INTEGER NOT NULL DEFAULT 0);
""" + _EVENTS.format(name="events") + _COMMON + _CATALOG
# Version 1 -> 2: old decisions get latency 0 (unknown); events are copied with their rowids as
# positions, which also starts the AUTOINCREMENT sequence after the largest.
_MIGRATE_V1 = """
ALTER TABLE decisions ADD COLUMN latency_ms REAL NOT NULL DEFAULT 0;
""" + _EVENTS.format(name="events_v2") + """
INSERT INTO events_v2 (position, event_id, decision_id, entity_id, type, value, ts, reward)
  SELECT rowid, event_id, decision_id, entity_id, type, value, ts, reward FROM events ORDER BY rowid;
DROP TABLE events;
ALTER TABLE events_v2 RENAME TO events;
""" + _COMMON
# Version 2 -> 3: old decisions get policy version 0 (unknown).
_MIGRATE_V2 = """
ALTER TABLE decisions ADD COLUMN policy_version INTEGER NOT NULL DEFAULT 0;
"""
# Version 4 -> 5: the catalog records written before have no batch end (NULL: each read on its own).
_MIGRATE_V4 = """
ALTER TABLE catalog_writes ADD COLUMN batch_end INTEGER;
"""


def damaged(path: Path, what: str) -> StateError:
    """The error for an event log file this ltrr cannot use: names the file, what is wrong, what to do."""
    return StateError(path, f"{what}; {WHAT_TO_DO}")


def connect(path: Path) -> sqlite3.Connection:
    """The writer's connection to the event log at `path`: created (version 5) if missing, migrated
    in place from version 1, 2, 3 or 4 (one transaction), checked otherwise. StateError naming the file if it
    is not a SQLite database, is damaged, or has an unknown schema."""
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.OperationalError as e:
        raise StateError(path, f"cannot open it ({e}): its directory must exist and be writable") from e
    try:
        _open(conn, path)
    except sqlite3.DatabaseError as e:
        conn.close()
        if e.sqlite_errorname in ("SQLITE_NOTADB", "SQLITE_CORRUPT"):
            raise damaged(path, f"it is not a SQLite database or it is damaged ({e})") from e
        raise
    except BaseException:
        conn.close()
        raise
    return conn


def _open(conn: sqlite3.Connection, path: Path) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
              if not r[0].startswith("sqlite_")}
    if version == 0 and tables == set(_V1_COLUMNS):
        version = 1  # version 1 created its tables before setting user_version: a crash in between
    # Refused before anything is written to it (WAL mode included).
    if version == 0 and tables:
        raise damaged(path, f"it is not an ltrr event log (it has tables {sorted(tables)})")
    if version not in (0, 1, 2, 3, 4, SCHEMA_VERSION):
        raise StateError(path, f"its schema version {version} is unknown (this ltrr reads 1 to {SCHEMA_VERSION}): "
                               f"open it with the ltrr that wrote it, or {WHAT_TO_DO}")
    if version == 1:
        _check_tables(conn, path, _V1_COLUMNS, 1)
    if version == 0:
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")  # only takes effect before the first table
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode != "wal":
        raise StateError(path, f"SQLite refused WAL mode (got {mode!r}); keep the state directory on a local disk")
    for pragma in ("synchronous=FULL", "foreign_keys=ON", f"busy_timeout={BUSY_TIMEOUT_MS}",
                   f"journal_size_limit={WAL_LIMIT_BYTES}"):
        conn.execute(f"PRAGMA {pragma}")
    if version == 0:
        _script(conn, _CREATE)
    elif version == 1:
        _script(conn, _MIGRATE_V1 + _MIGRATE_V2 + _CATALOG)
    elif version == 2:
        _script(conn, _MIGRATE_V2 + _CATALOG)
    elif version == 3:
        _script(conn, _CATALOG)
    elif version == 4:
        _script(conn, _MIGRATE_V4)
    _check_tables(conn, path, COLUMNS, SCHEMA_VERSION)


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error. SQLite rolls a transaction back by
    itself on some errors (SQLITE_FULL, SQLITE_IOERR), so ROLLBACK runs only while one is still
    open: an unconditional ROLLBACK would raise "no transaction is active" and hide the real error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _script(conn: sqlite3.Connection, ddl: str) -> None:
    """Run `ddl` and set the schema version in one transaction (all or nothing)."""
    try:
        conn.executescript(f"BEGIN IMMEDIATE; {ddl} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _check_tables(conn: sqlite3.Connection, path: Path, want: dict[str, tuple[str, ...]], version: int) -> None:
    for table, columns in want.items():
        got = tuple(r[1] for r in conn.execute(f"PRAGMA table_info({table})"))
        if not got:
            raise damaged(path, f"its schema (version {version}) lacks the table {table!r}")
        if got != columns:
            raise damaged(path, f"its schema (version {version}) has table {table!r} with columns {list(got)}, "
                                f"expected {list(columns)}")


def encode_lists(lists: Sequence[StrategyList]) -> bytes:
    """The `lists` column of version 2: zlib of the JSON object (see the module docstring), each
    list's scores as base64 of their little-endian float32 bytes ("f4")."""
    body = ",".join(f'{json.dumps(lst.strategy)}:{{"ids":{json.dumps(list(lst.entity_ids))},'
                    f'"f4":"{base64.b64encode(np.asarray(lst.scores, dtype="<f4").tobytes()).decode("ascii")}"}}'
                    for lst in lists)
    return zlib.compress(f"{{{body}}}".encode(), LISTS_ZLIB_LEVEL)


def _scores(value: dict[str, Any]) -> np.ndarray:
    """float32 scores of one decoded list: "f4" (base64 float32) or, in rows written before it,
    "scores" (a JSON list of numbers)."""
    if "f4" in value:
        return np.frombuffer(base64.b64decode(value["f4"]), dtype="<f4").astype(np.float32)
    return np.array(value["scores"], dtype=np.float32)


def decode_lists(value: str | bytes) -> tuple[StrategyList, ...] | None:
    """The lists of a `lists` column value (TEXT: version 1 JSON; BLOB: version 2); None if
    retention dropped them."""
    if isinstance(value, bytes):
        if value == COMPACTED:
            return None
        value = zlib.decompress(value)
    return tuple(StrategyList(s, v["ids"], _scores(v)) for s, v in json.loads(value).items())
