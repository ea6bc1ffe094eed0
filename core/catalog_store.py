"""The catalog log's SQL, shared by both event stores (core.eventlog: SQLite; core.eventlog_pg:
PostgreSQL). core.catalog_log is the contract; this module only reads and writes its two tables:

- catalog_writes: position (PK, >= 1), entity_id, version, payload (the entity as canonical JSON;
  NULL for a delete), written_at (s since the epoch), batch_end (the position of the last record
  of the batch this one was written with; NULL in records written before the column existed).
  Never deleted: the log is every serving process's write-ahead log.
- catalog_versions: entity_id (PK), version: the newest version written for the id (deletes
  included), so the stale check is one index lookup however long the log grows.

The caller runs `append` inside one transaction that holds the store's write lock (SQLite's
BEGIN IMMEDIATE; PostgreSQL's catalog_counter row FOR UPDATE), so positions follow commit order
and are given without gaps from the newest position read in that transaction.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from core.catalog_log import MAX_WRITES_PER_BATCH, CatalogRecord, CatalogWrite

Execute = Callable[[str, tuple[Any, ...]], Any]  # a cursor-returning execute (sqlite3 or psycopg)
LOOKUP_CHUNK = 500  # ids per version look-up


def _sql(text: str, placeholder: str) -> str:
    return text.replace("?", placeholder)


def plan(writes: Sequence[CatalogWrite], newest: Mapping[str, int], last: int, now: float
         ) -> tuple[list[int], list[tuple[Any, ...]], dict[str, int]]:
    """The batch placed after position `last`, given the newest stored version of its ids (absent:
    none). (per write its position or 0 when stale, the catalog_writes rows to insert, each with
    the batch's last position as its batch_end, the new newest version of each id written). A
    write is stale when its version is not above the newest of its id, stored or earlier in this
    batch."""
    versions = dict(newest)
    positions: list[int] = []
    rows: list[tuple[Any, ...]] = []
    changed: dict[str, int] = {}
    for write in writes:
        if write.version <= versions.get(write.entity_id, 0):
            positions.append(0)
            continue
        last += 1
        rows.append((last, write.entity_id, write.version, write.payload(), now))
        versions[write.entity_id] = changed[write.entity_id] = write.version
        positions.append(last)
    return positions, [(*row, last) for row in rows], changed


def append(cursor: Any, placeholder: str, writes: Sequence[CatalogWrite], last: int) -> tuple[list[int], int]:
    """Write the non-stale writes of the batch at positions last+1, last+2, ... with `cursor` (a
    DB-API cursor of the caller's transaction: executemany sends the rows in one go); (per write
    its position or 0 when stale, the newest position)."""
    ids = sorted({w.entity_id for w in writes})
    newest: dict[str, int] = {}
    for i in range(0, len(ids), LOOKUP_CHUNK):  # SQLite caps the number of bound parameters
        chunk = ids[i:i + LOOKUP_CHUNK]
        cursor.execute(_sql(f"SELECT entity_id, version FROM catalog_versions WHERE entity_id IN "
                            f"({', '.join('?' * len(chunk))})", placeholder), chunk)
        newest.update((str(r[0]), int(r[1])) for r in cursor.fetchall())
    positions, rows, changed = plan(writes, newest, last, time.time())
    if rows:
        cursor.executemany(_sql("INSERT INTO catalog_writes (position, entity_id, version, payload, written_at, "
                                "batch_end) VALUES (?, ?, ?, ?, ?, ?)", placeholder), rows)
        cursor.executemany(_sql("INSERT INTO catalog_versions (entity_id, version) VALUES (?, ?) ON CONFLICT "
                                "(entity_id) DO UPDATE SET version = excluded.version", placeholder),
                           list(changed.items()))
    return positions, max([last, *(p for p in positions if p)])


def after(execute: Execute, placeholder: str, position: int, limit: int) -> list[CatalogRecord]:
    """Up to `limit` records after `position`, in position order, and then the rest of the last
    one's batch (at most MAX_WRITES_PER_BATCH - 1 more): a reader that applies what it read never
    shows part of a batch."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"`limit` must be an int >= 1, but got {limit!r}")
    if isinstance(position, bool) or not isinstance(position, int) or position < 0:
        raise ValueError(f"`position` must be an int >= 0, but got {position!r}")
    select = "SELECT position, entity_id, version, payload, batch_end FROM catalog_writes WHERE position > ? "
    rows = execute(_sql(select + "ORDER BY position LIMIT ?", placeholder), (position, limit)).fetchall()
    if rows and rows[-1][4] is not None and rows[-1][4] > rows[-1][0]:  # the page ends inside a batch
        rows += execute(_sql(select + "AND position <= ? ORDER BY position", placeholder),
                        (rows[-1][0], rows[-1][4])).fetchall()
    return [CatalogRecord(int(r[0]), CatalogWrite.from_stored(r[1], int(r[2]), r[3])) for r in rows]


def check_batch(writes: Sequence[CatalogWrite]) -> None:
    """ValueError for a batch the log refuses before opening a transaction."""
    if not 1 <= len(writes) <= MAX_WRITES_PER_BATCH:
        raise ValueError(f"`writes` must hold 1..{MAX_WRITES_PER_BATCH} writes, but got {len(writes)}")
    for i, write in enumerate(writes):
        if not isinstance(write, CatalogWrite):
            raise ValueError(f"`writes[{i}]` must be a CatalogWrite, but got {type(write).__name__}")
