"""The catalog log's SQL, shared by both event stores (core.eventlog: SQLite; core.eventlog_pg:
PostgreSQL). core.catalog_log is the contract; this module only reads and writes its two tables:

- catalog_writes: position (PK, >= 1), entity_id, version, payload (the entity as canonical JSON;
  NULL for a delete), written_at (s since the epoch). Never deleted: the log is every serving
  process's write-ahead log.
- catalog_versions: entity_id (PK), version: the newest version written for the id (deletes
  included), so the stale check is one index lookup however long the log grows.

The caller runs `append` inside one transaction that holds the store's write lock (SQLite's
BEGIN IMMEDIATE; PostgreSQL's catalog_counter row FOR UPDATE), so positions follow commit order
and are given without gaps from the newest position read in that transaction.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from core.catalog_log import MAX_WRITES_PER_BATCH, CatalogRecord, CatalogWrite

Execute = Callable[[str, tuple[Any, ...]], Any]  # a cursor-returning execute (sqlite3 or psycopg)


def _sql(text: str, placeholder: str) -> str:
    return text.replace("?", placeholder)


def append(execute: Execute, placeholder: str, writes: Sequence[CatalogWrite], last: int) -> tuple[list[int], int]:
    """Write the non-stale writes of the batch at positions last+1, last+2, ...; (per write its
    position or 0 when stale, the newest position). A write is stale when its version is not above
    the newest version of its id, written before or earlier in this batch."""
    newest: dict[str, int] = {}
    out: list[int] = []
    now = time.time()
    for write in writes:
        have = newest.get(write.entity_id)
        if have is None:
            row = execute(_sql("SELECT version FROM catalog_versions WHERE entity_id = ?", placeholder),
                          (write.entity_id,)).fetchone()
            have = newest[write.entity_id] = 0 if row is None else int(row[0])
        if write.version <= have:
            out.append(0)
            continue
        last += 1
        execute(_sql("INSERT INTO catalog_writes (position, entity_id, version, payload, written_at) "
                     "VALUES (?, ?, ?, ?, ?)", placeholder),
                (last, write.entity_id, write.version, write.payload(), now))
        execute(_sql("INSERT INTO catalog_versions (entity_id, version) VALUES (?, ?) ON CONFLICT (entity_id) "
                     "DO UPDATE SET version = excluded.version", placeholder), (write.entity_id, write.version))
        newest[write.entity_id] = write.version
        out.append(last)
    return out, last


def after(execute: Execute, placeholder: str, position: int, limit: int) -> list[CatalogRecord]:
    """Up to `limit` records after `position`, in position order."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"`limit` must be an int >= 1, but got {limit!r}")
    if isinstance(position, bool) or not isinstance(position, int) or position < 0:
        raise ValueError(f"`position` must be an int >= 0, but got {position!r}")
    rows = execute(_sql("SELECT position, entity_id, version, payload FROM catalog_writes WHERE position > ? "
                        "ORDER BY position LIMIT ?", placeholder), (position, limit)).fetchall()
    return [CatalogRecord(int(r[0]), CatalogWrite.from_stored(r[1], int(r[2]), r[3])) for r in rows]


def check_batch(writes: Sequence[CatalogWrite]) -> None:
    """ValueError for a batch the log refuses before opening a transaction."""
    if not 1 <= len(writes) <= MAX_WRITES_PER_BATCH:
        raise ValueError(f"`writes` must hold 1..{MAX_WRITES_PER_BATCH} writes, but got {len(writes)}")
    for i, write in enumerate(writes):
        if not isinstance(write, CatalogWrite):
            raise ValueError(f"`writes[{i}]` must be a CatalogWrite, but got {type(write).__name__}")
