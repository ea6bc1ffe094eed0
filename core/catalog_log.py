"""The live catalog's write log: what every serving process applies, in position order.

The catalog log lives in the event store (core.eventstore: SQLite for one broker, PostgreSQL for
many), beside the feedback events, with its own positions. A batch is appended in one transaction
(all or nothing), and positions increase in commit order, so a reader that has applied position p
never later meets a record at or below p. Every process that serves the catalog (each shard
replica, each broker) reads `catalog_after(its applied position)` and applies the records in
order; the same log gives every process the same catalog.

Versions are compared per id: a write applies only when its version is above the newest version
written for its id (deletes included, so a late, older upsert never brings a deleted entity back),
else it is stale and not written. The offline build is version 0; a version is >= 1.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from core.catalog import Entity, entity_from_json
from core.errors import CatalogError
from core.live import Delete, Upsert, Write

MAX_WRITES_PER_BATCH = 1000
MAX_VERSION = 2**63 - 1  # fits a signed 64-bit column (SQLite INTEGER, PostgreSQL BIGINT)


@dataclass(frozen=True, slots=True)
class CatalogWrite:
    """One write: entity is the new content (an upsert) or None (a delete of entity_id)."""

    entity_id: str
    version: int
    entity: Entity | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.version <= MAX_VERSION:
            raise CatalogError(f"`version` must be in [1, {MAX_VERSION}], but got {self.version}")
        if self.entity is not None and self.entity.id != self.entity_id:
            raise CatalogError(f"`entity_id` must be the entity's id {self.entity.id!r}, but got {self.entity_id!r}")

    @property
    def deletes(self) -> bool:
        return self.entity is None

    def as_write(self) -> Write:
        """The core.live write every strategy's live writer applies."""
        return Delete(self.entity_id) if self.entity is None else Upsert(self.entity)

    def payload(self) -> str | None:
        """The entity as canonical JSON (the store's column), None for a delete."""
        return None if self.entity is None else json.dumps(self.entity.to_json(), separators=(",", ":"))

    @classmethod
    def from_stored(cls, entity_id: str, version: int, payload: str | None) -> CatalogWrite:
        entity = None if payload is None else entity_from_json(json.loads(payload), f"catalog log {entity_id!r}")
        return cls(entity_id, version, entity)


@dataclass(frozen=True, slots=True)
class CatalogRecord:
    """A write as the log holds it: position (>= 1, increasing in commit order) and the write."""

    position: int
    write: CatalogWrite


class CatalogLog(Protocol):
    """The catalog log of an event store (core.eventlog.EventLog, core.eventlog_pg.PostgresEventLog)."""

    def append_catalog(self, writes: Sequence[CatalogWrite]) -> list[int]:
        """Append the batch in one transaction; per write, its position, or 0 when it is stale
        (its version is not above the newest written for its id, earlier writes of the batch
        included). Durable when it returns."""
        ...

    def catalog_after(self, position: int, limit: int) -> list[CatalogRecord]:
        """Up to `limit` records with positions above `position`, in position order, then the rest of
        the last one's batch (core.catalog_store.after), so a batch is never read in two parts."""
        ...

    def last_catalog_position(self) -> int:
        """The newest position (0: an empty log)."""
        ...
