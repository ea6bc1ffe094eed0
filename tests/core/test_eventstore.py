"""The event store's contract on both backends (SQLite file, PostgreSQL server), URL parsing, and
what only PostgreSQL has to show: several writers, commit-ordered positions, leases, snapshots."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import psycopg
import pytest

from core.errors import NotFoundError
from core.eventlog import EventLog, EventRecord, RetentionConfig
from core.eventlog_pg import KEEP_SNAPSHOTS, PgEventLog
from core.eventlog_schema import SCHEMA_VERSION
from core.eventstore import EventStore, Lease, SnapshotStore, StoreKind, parse_store_url
from core.types import EventType
from tests.core.test_eventlog import decision, event


@pytest.mark.parametrize(("url", "kind", "target"), [
    ("/var/ltrr/events.sqlite", StoreKind.SQLITE, "/var/ltrr/events.sqlite"),
    ("state/events.sqlite", StoreKind.SQLITE, "state/events.sqlite"),
    ("sqlite:///var/ltrr/events.sqlite", StoreKind.SQLITE, "/var/ltrr/events.sqlite"),
    ("sqlite://state/events.sqlite", StoreKind.SQLITE, "state/events.sqlite"),
    ("postgresql://ltrr@db:5432/ltrr", StoreKind.POSTGRESQL, "postgresql://ltrr@db:5432/ltrr"),
    ("postgres://db/ltrr", StoreKind.POSTGRESQL, "postgres://db/ltrr"),
])
def test_store_urls(url: str, kind: StoreKind, target: str) -> None:
    parsed = parse_store_url(url)
    assert (parsed.kind, parsed.target) == (kind, target)
    assert parsed.shared == (kind is StoreKind.POSTGRESQL)


@pytest.mark.parametrize(("url", "match"), [
    ("", "must be a path"),
    ("mysql://db/ltrr", "scheme 'mysql'"),
    ("sqlite://", "must name a file"),
])
def test_bad_store_urls(url: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_store_url(url)


def test_round_trip_with_policy_version(store: EventStore) -> None:
    want = replace(decision(), policy_version=17)
    store.record_decision(want)
    got = store.decision("d1")
    assert got.policy_version == 17
    assert (got.query_text, got.context, got.quotas, got.marginals, got.final) == \
        (want.query_text, want.context, want.quotas, want.marginals, want.final)
    np.testing.assert_array_equal(got.features, want.features)
    assert [(lst.strategy, list(lst.entity_ids)) for lst in got.lists] == \
        [(lst.strategy, list(lst.entity_ids)) for lst in want.lists]
    with pytest.raises(ValueError, match="already recorded"):
        store.record_decision(want)
    with pytest.raises(NotFoundError):
        store.decision("nope")


def test_positions_increase_and_a_repeated_event_counts_once(store: EventStore) -> None:
    store.record_decisions([decision("d1"), decision("d2")])
    assert store.record_events([event("e1"), event("e2", "d2"), event("e1")]) == [1, 2, 0]
    assert not store.record_event(event("e2", "d2"))
    assert store.last_event_rowid() == 2
    assert [(p, e.event_id) for p, e in store.events_after(0)] == [(1, "e1"), (2, "e2")]
    assert [e.event_id for e in store.events("d1")] == ["e1"]
    assert store.counts() == (2, 2)
    with pytest.raises(NotFoundError):
        store.record_event(event("e3", "unknown"))
    assert store.counts() == (2, 2)


def test_record_judged_sees_the_earlier_events_and_stores_the_reward(store: EventStore) -> None:
    store.record_decision(decision())
    seen: list[list[str]] = []

    def reward_of(earlier: list[EventRecord]) -> float:
        seen.append([e.event_id for e in earlier])
        return 0.25 * len(earlier)

    assert store.record_judged(event("e1", reward=9.0), reward_of) == 1
    assert store.record_judged(event("e2", reward=9.0), reward_of) == 2
    assert store.record_judged(event("e1"), reward_of) == 0  # a duplicate: not judged again
    assert seen == [[], ["e1"]]
    assert [e.reward for e in store.events("d1")] == [0.0, 0.25]


def test_feedback_after_and_cursors(store: EventStore) -> None:
    store.record_decision(decision())
    store.record_events([event("e1"), event("e2", entity_id="a")])
    rows = store.feedback_after(1, 10)
    assert [(p, e.event_id, text, ctx) for p, e, text, ctx in rows] == [(2, "e2", "love story", {"device": "mobile"})]
    assert store.cursor("memory") == 0
    store.set_cursor("memory", 2)
    assert store.cursor("memory") == 2


def test_training_and_ope_read_the_same_on_both_backends(store: EventStore) -> None:
    store.record_decisions([decision("d1", ts=1.0), decision("d2", ts=2.0, allocation=1)])
    store.record_events([event("e1", "d1", "c", reward=0.5), event("e2", "d1", "a", EventType.SKIP, reward=0.0)])
    groups = list(store.training_groups())
    assert [g.query_text for g in groups] == ["love story"]
    assert list(groups[0].merged.entity_ids) == list(decision().merged().entity_ids)
    log = store.bandit_feedback()
    assert log.decision_ids == ("d1", "d2")
    np.testing.assert_array_equal(log.reward, [0.5, 0.0])
    np.testing.assert_array_equal(log.action, [3, 1])


def test_retention_age_rules(store: EventStore) -> None:
    store.record_decisions([decision("old", ts=1.0), decision("quiet", ts=500.0), decision("heard", ts=500.0),
                            decision("new", ts=990.0)])
    store.record_event(event("e1", "heard"))
    report = store.compact(1000.0, RetentionConfig(keep_lists_s=100.0, max_age_s=900.0))
    assert (report.deleted_decisions, report.compacted) == (1, 1)
    with pytest.raises(NotFoundError):
        store.decision("old")
    assert store.decision("quiet").compacted
    assert not store.decision("heard").compacted and not store.decision("new").compacted


def test_the_sqlite_lease_is_always_held(tmp_path: Path) -> None:
    with EventLog(tmp_path / "events.sqlite") as log:
        lease = log.lease("memory-outbox")
        assert isinstance(lease, Lease) and lease.hold()
        assert not isinstance(log, SnapshotStore)


def test_a_version_2_file_gains_policy_version(tmp_path: Path) -> None:
    """Files written before policy_version (schema 2) are upgraded in place, old decisions at version 0."""
    path = tmp_path / "events.sqlite"
    with EventLog(path) as log:
        log.record_decision(decision("old"))
    conn = sqlite3.connect(path)  # back to version 2, as the previous ltrr left it
    conn.executescript("ALTER TABLE decisions DROP COLUMN policy_version; DROP TABLE catalog_writes; "
                       "DROP TABLE catalog_versions; PRAGMA user_version=2;")
    conn.close()
    with EventLog(path) as log:
        assert log._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert log.decision("old").policy_version == 0
        log.record_decision(replace(decision("new"), policy_version=5))
        assert log.decision("new").policy_version == 5


# -- PostgreSQL only ----------------------------------------------------------------------------


def test_postgresql_commits_synchronously(pg_url: str) -> None:
    with PgEventLog(pg_url) as store, store._session() as conn:
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)


def test_a_batch_of_decisions_sent_again_is_stored_once(pg_url: str) -> None:
    """The broker re-sends a batch whose COMMIT it could not confirm; it may have been stored."""
    with PgEventLog(pg_url) as store:
        store.record_decisions([decision("d1"), decision("d2")])
        store.record_decisions([decision("d1"), decision("d2"), decision("d3")])
        assert store.counts() == (3, 0)


def test_a_repeated_event_id_counts_once_across_brokers(pg_url: str) -> None:
    with PgEventLog(pg_url) as a, PgEventLog(pg_url) as b:
        a.record_decision(decision())
        assert b.record_event(event("e1"))  # feedback on a's decision, at b
        assert not a.record_event(event("e1"))
        assert a.counts() == (1, 1)


def test_a_tailer_never_misses_an_event_committed_later(pg_url: str) -> None:
    """Positions increase in commit order: a reader at position p that reads `events_after(p)`
    while four writers insert sees every event exactly once (a SEQUENCE would let a transaction
    holding a smaller position commit after the reader moved past it)."""
    with PgEventLog(pg_url) as setup:
        setup.record_decisions([decision(f"d{w}") for w in range(4)])
    n_each, done = 60, threading.Event()
    seen: list[str] = []

    def write(w: int) -> None:
        with PgEventLog(pg_url) as store:
            for i in range(n_each):
                store.record_event(event(f"w{w}-{i}", f"d{w}"))

    def tail() -> None:
        with PgEventLog(pg_url) as store:
            position = 0
            while True:
                last_round = done.is_set()
                rows = store.events_after(position)
                seen.extend(e.event_id for _, e in rows)
                position = rows[-1][0] if rows else position
                if last_round:
                    return

    writers = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    reader = threading.Thread(target=tail)
    reader.start()
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    done.set()
    reader.join()
    assert sorted(seen) == sorted(f"w{w}-{i}" for w in range(4) for i in range(n_each))


def test_snapshots_keep_the_newest(pg_url: str) -> None:
    with PgEventLog(pg_url) as store:
        assert store.latest_snapshot() is None
        for position in range(1, KEEP_SNAPSHOTS + 3):
            store.save_snapshot(position, position * 2, f"policy at {position}".encode())
        store.save_snapshot(KEEP_SNAPSHOTS + 2, 0, b"another broker's copy")  # same position: kept as it was
        assert store.latest_snapshot() == (KEEP_SNAPSHOTS + 2, 2 * (KEEP_SNAPSHOTS + 2),
                                           f"policy at {KEEP_SNAPSHOTS + 2}".encode())
        with store._session() as conn:
            assert conn.execute("SELECT count(*) FROM snapshots").fetchone() == (KEEP_SNAPSHOTS,)


def test_one_lease_holder_until_its_session_dies(pg_url: str) -> None:
    with PgEventLog(pg_url) as store:
        first, second = store.lease("memory-outbox"), store.lease("memory-outbox")
        assert first.hold() and first.hold()
        assert not second.hold()
        assert store.lease("other-job").hold()
        with psycopg.connect(pg_url, autocommit=True) as admin:  # the holder's session dies
            assert first._conn is not None
            # waits (up to 10 s) until the server process has exited, its locks released
            admin.execute("SELECT pg_terminate_backend(%s, 10000)", (first._conn.info.backend_pid,))
        assert not first.hold()
        assert second.hold()
        assert not first.hold()
        second.release()
        assert first.hold()
