"""The event store: one interface over the decision/feedback log, two backends chosen by a URL.

- `sqlite:///path/events.sqlite` or a plain path: core.eventlog.EventLog, one file, one broker,
  no server (the default: the state directory's events.sqlite).
- `postgresql://user@host:port/db` (or `postgres://`): core.eventlog_pg.PgEventLog, any number
  of brokers sharing one log; any broker accepts feedback on any decision.

Both keep the same contract (core.eventlog's docstring): a decision is stored before feedback on
it; a returned record_event is durable (SQLite: WAL fsync; PostgreSQL: synchronous_commit on);
an event's position increases in commit order and is never reused, so a reader at position p
that reads `events_after(p)` misses nothing committed later; a repeated event_id counts once.

A Lease guards work that one process of many must do alone (the memory outbox): SQLite's is
always held (one broker); PostgreSQL's is an advisory lock held by a dedicated session, lost when
that session dies.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

from core.catalog_log import CatalogRecord, CatalogWrite
from core.eventlog import AlwaysHeld, BanditLog, CompactReport, DecisionRecord, EventLog, EventRecord, RetentionConfig
from core.ranking_train import TrainingGroup

__all__ = ["AlwaysHeld", "EventStore", "Lease", "SnapshotStore", "StoreKind", "StoreUrl", "open_store",
           "parse_store_url"]


class StoreKind(enum.StrEnum):
    """The event store's backend; values are BrokerDescribeResponse.store's."""

    SQLITE = "sqlite"
    POSTGRESQL = "postgresql"


@dataclass(frozen=True, kw_only=True)
class StoreUrl:
    """A parsed store URL. target: the SQLite file's path, or the PostgreSQL conninfo URL."""

    kind: StoreKind
    target: str

    @property
    def shared(self) -> bool:
        """Can several brokers use this store at once?"""
        return self.kind is StoreKind.POSTGRESQL


def parse_store_url(url: str | os.PathLike[str]) -> StoreUrl:
    """`sqlite:///abs/path`, `sqlite://rel/path`, a plain path, or `postgresql://...`/`postgres://...`
    -> StoreUrl. ValueError for an empty URL or another scheme."""
    text = os.fspath(url)
    if not text:
        raise ValueError("`url` must be a path, sqlite:///path or postgresql://..., but got ''")
    scheme = urlsplit(text).scheme if "://" in text else ""
    if scheme in ("postgresql", "postgres"):
        return StoreUrl(kind=StoreKind.POSTGRESQL, target=text)
    if scheme == "sqlite":
        path = text[len("sqlite://"):]
        if not path:
            raise ValueError(f"`url` must name a file after sqlite://, but got {text!r}")
        return StoreUrl(kind=StoreKind.SQLITE, target=path)
    if scheme:
        raise ValueError(f"`url` must be a path, sqlite:///path or postgresql://..., but got scheme {scheme!r}")
    return StoreUrl(kind=StoreKind.SQLITE, target=text)


@runtime_checkable
class Lease(Protocol):
    """The right to do one job alone among the store's users."""

    def hold(self) -> bool:
        """Take the lease if free, or check it is still held; True while held. Blocking I/O: run it
        off the event loop."""

    def release(self) -> None:
        """Give the lease up (idempotent)."""


class EventStore(Protocol):
    """What the broker, its outbox, retention, training and OPE use of the log, and the catalog log
    (core.eventlog and core.catalog_log document each method; both backends implement all of them)."""

    kind: str  # a StoreKind value

    def record_decisions(self, records: Sequence[DecisionRecord]) -> None: ...

    def record_decision(self, record: DecisionRecord) -> None: ...

    def record_events(self, events: Sequence[EventRecord]) -> list[int]: ...

    def record_event(self, event: EventRecord) -> bool: ...

    def record_judged(self, event: EventRecord, reward_of: Callable[[list[EventRecord]], float]) -> int: ...

    def decision(self, decision_id: str) -> DecisionRecord: ...

    def events(self, decision_id: str, before: int | None = None) -> list[EventRecord]: ...

    def last_event_rowid(self) -> int: ...

    def events_after(self, rowid: int, limit: int | None = None) -> list[tuple[int, EventRecord]]: ...

    def feedback_after(self, position: int, limit: int) -> list[tuple[int, EventRecord, str, dict[str, str]]]: ...

    def cursor(self, name: str) -> int: ...

    def set_cursor(self, name: str, position: int) -> None: ...

    def compact(self, now: float, retention: RetentionConfig, *, max_rows: int = ...) -> CompactReport: ...

    def counts(self) -> tuple[int, int]: ...

    def training_groups(self) -> Iterator[TrainingGroup]: ...

    def bandit_feedback(self, strategies: Sequence[str] | None = None, policy: str | None = None) -> BanditLog: ...

    def lease(self, name: str) -> Lease: ...

    # the catalog log (core.catalog_log.CatalogLog)

    def append_catalog(self, writes: Sequence[CatalogWrite]) -> list[int]: ...

    def catalog_after(self, position: int, limit: int) -> list[CatalogRecord]: ...

    def last_catalog_position(self) -> int: ...

    def close(self) -> None: ...


@runtime_checkable
class SnapshotStore(Protocol):
    """A store that also keeps policy snapshots (PostgreSQL: brokers are stateless and share them).
    A store without this ability leaves snapshots to a file in the broker's state directory."""

    def save_snapshot(self, position: int, applied_events: int, data: bytes) -> None:
        """Store the snapshot of a policy that has applied every event up to `position`."""

    def latest_snapshot(self) -> tuple[int, int, bytes] | None:
        """(position, applied_events, data) of the newest snapshot; None without one."""


def open_store(url: str | os.PathLike[str]) -> EventStore:
    """Open (create if missing) the store at `url` (parse_store_url). StateError for a damaged
    SQLite file; UnavailableError when the PostgreSQL server cannot be reached."""
    parsed = parse_store_url(url)
    if parsed.kind is StoreKind.POSTGRESQL:
        from core.eventlog_pg import PgEventLog  # psycopg only for those who use it

        return PgEventLog(parsed.target)
    return EventLog(Path(parsed.target))
