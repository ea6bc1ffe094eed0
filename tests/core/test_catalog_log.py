"""The catalog log on both event stores (SQLite file, PostgreSQL server): versions per id (stale,
idempotent, deletes win over older upserts), one transaction per batch, commit-ordered positions,
paging that never splits a batch, and the SQLite migrations from schemas 3 and 4."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

from core import catalog_store
from core.catalog import Entity
from core.catalog_log import MAX_WRITES_PER_BATCH, CatalogWrite
from core.eventlog import EventLog
from core.eventlog_pg import PgEventLog
from core.eventlog_schema import SCHEMA_VERSION
from core.eventstore import EventStore
from tests.core.test_eventlog import decision


def up(entity_id: str, version: int, title: str = "t") -> CatalogWrite:
    return CatalogWrite(entity_id, version, Entity(id=entity_id, type="track", fields={"title": title},
                                                   attributes={"genre": ("pop",), "energy": 0.5}, popularity=3.0))


def delete(entity_id: str, version: int) -> CatalogWrite:
    return CatalogWrite(entity_id, version)


def test_writes_round_trip_in_position_order(store: EventStore) -> None:
    assert store.last_catalog_position() == 0 and store.catalog_after(0, 10) == []
    writes = [up("a", 1, "first"), up("b", 5), delete("c", 2)]
    assert store.append_catalog(writes) == [1, 2, 3]
    records = store.catalog_after(0, 10)
    assert [r.position for r in records] == [1, 2, 3]
    assert [r.write for r in records] == writes  # the entity (fields, attributes, popularity) comes back equal
    assert store.last_catalog_position() == 3


def test_a_stale_or_repeated_write_is_not_written(store: EventStore) -> None:
    assert store.append_catalog([up("a", 10, "new")]) == [1]
    assert store.append_catalog([up("a", 10, "new")]) == [0]  # the same write again: idempotent
    assert store.append_catalog([up("a", 9, "older")]) == [0]
    assert store.append_catalog([up("a", 11, "newer")]) == [2]
    assert [r.write.entity.fields["title"] for r in store.catalog_after(0, 10) if r.write.entity] == ["new", "newer"]


def test_the_order_inside_a_batch_counts(store: EventStore) -> None:
    # a later item with a lower version than an earlier one of the same id is stale
    assert store.append_catalog([up("a", 5), up("a", 3), up("a", 7), up("b", 1)]) == [1, 0, 2, 3]


def test_a_delete_keeps_an_older_upsert_out(store: EventStore) -> None:
    assert store.append_catalog([up("a", 1), delete("a", 5)]) == [1, 2]
    assert store.append_catalog([up("a", 4, "late")]) == [0]  # delivered late: the entity stays deleted
    assert store.catalog_after(1, 10)[0].write.deletes
    assert store.append_catalog([up("a", 6, "again")]) == [3]  # a newer upsert brings it back


def test_a_failing_batch_writes_nothing(store: EventStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch's rows fail part-way through the insert (a repeated position: the first rows are in
    the table when it fails): the transaction is rolled back whole, versions included."""
    store.append_catalog([up("a", 1)])
    real = catalog_store.plan

    def plan(*args: Any) -> tuple[list[int], list[tuple[Any, ...]], dict[str, int]]:
        positions, rows, changed = real(*args)
        return positions, [*rows, rows[0]], changed

    monkeypatch.setattr(catalog_store, "plan", plan)
    with pytest.raises((sqlite3.IntegrityError, psycopg.errors.UniqueViolation)):
        store.append_catalog([up("b", 1), up("a", 2), up("c", 1)])
    monkeypatch.undo()
    assert store.last_catalog_position() == 1 and len(store.catalog_after(0, 10)) == 1
    # nor were the versions of the rolled-back items kept: they apply now
    assert store.append_catalog([up("b", 1), up("a", 2)]) == [2, 3]


@pytest.mark.parametrize("n", [0, MAX_WRITES_PER_BATCH + 1])
def test_batch_size_is_bounded(store: EventStore, n: int) -> None:
    with pytest.raises(ValueError, match="`writes` must hold"):
        store.append_catalog([up(f"e{i}", 1) for i in range(n)])


def test_catalog_after_pages_without_splitting_a_batch(store: EventStore) -> None:
    """A page that ends inside a batch goes on to the batch's end: a shard applies what it read at
    once, so a search never sees part of a batch."""
    for size in (2, 3, 2, 1):  # positions 1-2, 3-5, 6-7, 8
        store.append_catalog([up(f"e{store.last_catalog_position() + i}", 1) for i in range(size)])
    pages, position = [], 0
    while records := store.catalog_after(position, 3):
        pages.append([r.position for r in records])
        position = records[-1].position
    assert pages == [[1, 2, 3, 4, 5], [6, 7, 8]]
    assert [r.position for r in store.catalog_after(0, 2)] == [1, 2]  # ends at a batch's end: as asked
    assert [r.position for r in store.catalog_after(3, 1)] == [4, 5]  # starts inside one: its rest
    with pytest.raises(ValueError, match="`limit` must be"):
        store.catalog_after(0, 0)


def test_a_batch_ends_at_its_last_written_record(store: EventStore) -> None:
    store.append_catalog([up("a", 5)])
    assert store.append_catalog([up("b", 1), up("c", 1), up("a", 4)]) == [2, 3, 0]  # the last one is stale
    assert [r.position for r in store.catalog_after(0, 2)] == [1, 2, 3]
    store.append_catalog([up("d", 1)])
    assert [r.position for r in store.catalog_after(1, 2)] == [2, 3]  # not into the next batch


def test_the_catalog_log_has_its_own_positions(store: EventStore) -> None:
    store.record_decision(decision("d1"))
    store.append_catalog([up("a", 1)])
    assert store.last_event_rowid() == 0 and store.last_catalog_position() == 1


def test_a_version_3_file_gains_the_catalog_log(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite"
    with EventLog(path) as log:
        log.record_decision(decision("old"))
    conn = sqlite3.connect(path)  # back to version 3, as the previous ltrr left it
    conn.executescript("DROP TABLE catalog_writes; DROP TABLE catalog_versions; PRAGMA user_version=3;")
    conn.close()
    with EventLog(path) as log:
        assert log._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert log.decision("old").decision_id == "old" and log.last_catalog_position() == 0
        assert log.append_catalog([up("a", 1)]) == [1]
    with EventLog(path) as log:  # opening it again changes nothing
        assert log.catalog_after(0, 10)[0].write == up("a", 1)


def test_a_version_4_file_gains_batch_ends(tmp_path: Path) -> None:
    """Records written before batch_end existed are read as they were (page by page); those written
    after, whole batches."""
    path = tmp_path / "events.sqlite"
    with EventLog(path) as log:
        log.append_catalog([up("a", 1), up("b", 1), up("c", 1)])
    conn = sqlite3.connect(path)  # back to version 4, as the previous ltrr left it
    conn.executescript("ALTER TABLE catalog_writes DROP COLUMN batch_end; PRAGMA user_version=4;")
    conn.close()
    with EventLog(path) as log:
        assert log._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert [r.position for r in log.catalog_after(0, 2)] == [1, 2]
        assert log.append_catalog([up("d", 1), up("e", 1)]) == [4, 5]
        assert [r.position for r in log.catalog_after(0, 4)] == [1, 2, 3, 4, 5]
        assert [r.write.entity_id for r in log.catalog_after(2, 10)] == ["c", "d", "e"]


def test_postgresql_positions_follow_commit_order_across_writers(pg_url: str) -> None:
    """Four writers append at once while a reader tails: the reader sees every applied write once,
    in increasing positions (the counter row is locked to the end of each transaction)."""
    n_each, done = 40, threading.Event()
    seen: list[int] = []
    got: list[int] = []

    def write(w: int) -> None:
        with PgEventLog(pg_url) as store:
            for i in range(n_each):
                got.extend(store.append_catalog([up(f"w{w}-{i}", 1), up(f"w{w}-{i}", 2)]))

    def tail() -> None:
        with PgEventLog(pg_url) as store:
            position = 0
            while True:
                last_round = done.is_set()
                records = store.catalog_after(position, 1000)
                seen.extend(r.position for r in records)
                position = records[-1].position if records else position
                if last_round:
                    return

    PgEventLog(pg_url).close()  # the tables, before the threads race to create them
    writers = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    reader = threading.Thread(target=tail)
    reader.start()
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    done.set()
    reader.join()
    assert seen == list(range(1, 2 * 4 * n_each + 1)) and sorted(got) == seen


def test_a_postgresql_store_made_before_batch_ends_gains_them(pg_url: str) -> None:
    with PgEventLog(pg_url) as store:
        store.append_catalog([up("a", 1), up("b", 1)])
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE catalog_writes DROP COLUMN batch_end")
    with PgEventLog(pg_url) as store:
        assert [r.position for r in store.catalog_after(0, 1)] == [1]  # written before: read as asked
        store.append_catalog([up("c", 1), up("d", 1)])
        assert [r.position for r in store.catalog_after(2, 1)] == [3, 4]
