from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from core.errors import NotFoundError
from core.eventlog import EventLog, EventRecord, RetentionConfig
from core.eventlog_retention import DEFAULT_KEEP_LISTS_S, DEFAULT_MAX_AGE_S, DEFAULT_MAX_BYTES, MIN_MAX_BYTES
from core.merge import StrategyList
from core.types import EventType
from tests.core.test_eventlog import decision, event, realistic_decision, same_lists, write_v1

FOREVER = RetentionConfig(keep_lists_s=math.inf, max_age_s=math.inf)


@pytest.fixture
def log(tmp_path: Path) -> Iterator[EventLog]:
    with EventLog(tmp_path / "events.sqlite") as opened:
        yield opened


def test_defaults_keep_lists_for_a_day_and_decisions_for_a_month_within_2_gib() -> None:
    config = RetentionConfig()
    assert (config.keep_lists_s, config.max_age_s, config.max_bytes) == \
        (DEFAULT_KEEP_LISTS_S, DEFAULT_MAX_AGE_S, DEFAULT_MAX_BYTES) == (86_400.0, 30 * 86_400.0, 2 << 30)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"keep_lists_s": 0.0}, "`keep_lists_s` must be > 0 s"),
    ({"max_age_s": math.nan}, "`max_age_s` must be > 0 s"),
    ({"max_bytes": 1000}, f"`max_bytes` must be an int >= {MIN_MAX_BYTES}"),
    ({"max_bytes": 2.0e9}, "`max_bytes` must be an int"),
])
def test_bad_retention(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        RetentionConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("now", "max_rows", "match"), [
    (math.inf, 10, "`now` must be finite"),
    (1.0, 0, r"`max_rows` must be in \[1, 10000\]"),
])
def test_bad_compact_arguments(log: EventLog, now: float, max_rows: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        log.compact(now, FOREVER, max_rows=max_rows)


def test_lists_of_old_decisions_without_feedback_are_dropped(log: EventLog) -> None:
    log.record_decisions([decision(f"d{i}", ts=float(i)) for i in range(10)])
    log.record_event(event("e1", "d2"))
    report = log.compact(100.0, RetentionConfig(keep_lists_s=95.0, max_age_s=math.inf))
    assert (report.compacted, report.deleted_decisions, report.more) == (4, 0, False)  # d0, d1, d3, d4
    for i in range(10):
        got = log.decision(f"d{i}")
        if i in (0, 1, 3, 4):
            assert got.compacted and got.lists == () and got.final == () and len(got.merged()) == 0
        else:
            assert not got.compacted and same_lists(got, decision()) and got.final == decision().final
    # Off-policy evaluation keeps every decision: features, allocation, propensity and reward remain.
    fb = log.bandit_feedback()
    assert fb.decision_ids == tuple(f"d{i}" for i in range(10)) and fb.contexts.shape == (10, 4)
    assert fb.reward.tolist() == [0.0, 0.0, 0.9] + [0.0] * 7
    assert log.compact(100.0, RetentionConfig(keep_lists_s=95.0, max_age_s=math.inf)).compacted == 0
    later = log.compact(103.0, RetentionConfig(keep_lists_s=95.0, max_age_s=math.inf))
    assert later.compacted == 3 and log.decision("d7").compacted and not log.decision("d8").compacted


def test_late_feedback_on_a_compacted_decision_joins_without_ranks(log: EventLog) -> None:
    log.record_decisions([decision("d1", ts=1.0), decision("d2", ts=2.0)])
    log.record_event(event("e1", "d2", "a", EventType.PLAY))
    log.compact(1000.0, RetentionConfig(keep_lists_s=10.0, max_age_s=math.inf))
    assert log.decision("d1").compacted
    assert log.record_event(event("e2", "d1", "c", EventType.PLAY))  # later than keep_lists_s: still joins
    assert log.events("d1") == [event("e2", "d1", "c", EventType.PLAY)]
    assert log.decision("d1").merged().ranks.shape == (0, 3)  # the ranks are unknown
    assert [g.merged.entity_ids for g in log.training_groups()] == [["a", "c", "b", "d"]]  # d2 only


def test_old_decisions_are_deleted_with_their_events(log: EventLog) -> None:
    log.record_decisions([decision(f"d{i}", ts=float(i)) for i in range(6)])
    assert log.record_events([event("e0", "d0"), event("e1", "d4"), event("e2", "d1"), event("e3", "d5")]) == \
        [1, 2, 3, 4]
    report = log.compact(10.0, RetentionConfig(keep_lists_s=1.0, max_age_s=7.5))  # deletes d0, d1, d2
    assert (report.deleted_decisions, report.deleted_events, report.last_deleted_event) == (3, 2, 3)
    assert log.counts() == (3, 2)
    with pytest.raises(NotFoundError, match="d1"):
        log.decision("d1")
    with pytest.raises(NotFoundError, match="d0"):
        log.record_event(event("e9", "d0"))
    assert [(p, e.event_id) for p, e in log.events_after(0)] == [(2, "e1"), (4, "e3")]
    # the survivors without events are older than keep_lists_s: compacted in the same call
    assert log.decision("d3").compacted and not log.decision("d4").compacted


def test_event_positions_keep_increasing_after_the_newest_are_deleted(tmp_path: Path) -> None:
    """Regression: with plain rowids, once retention deleted the newest events the next event took
    position max(rowid) + 1 again, at or below the position a policy snapshot had stored, so the
    broker would never replay it (nor forward it past its cursor)."""
    path = tmp_path / "events.sqlite"
    with EventLog(path) as log:
        log.record_decisions([decision("d1", ts=1.0), decision("d2", ts=2.0)])
        assert log.record_events([event("e1", "d1"), event("e2", "d2"), event("e3", "d2")]) == [1, 2, 3]
        snapshot = log.last_event_rowid()  # what a policy snapshot stores
        report = log.compact(100.0, RetentionConfig(keep_lists_s=1.0, max_age_s=50.0))
        assert report.deleted_events == 3 and log.counts() == (0, 0)
        assert log.last_event_rowid() == snapshot == 3
    with EventLog(path) as log:  # also after reopening
        log.record_decision(decision("d3", ts=101.0))
        assert log.record_events([event("e4", "d3")]) == [4]
        assert [e.event_id for _, e in log.events_after(snapshot)] == ["e4"]


def test_positions_of_an_upgraded_version_1_file_keep_increasing(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite"
    write_v1(path, [decision("d1", ts=1.0)], [event("e1", "d1"), event("e2", "d1")])
    with EventLog(path) as log:
        assert log.compact(100.0, RetentionConfig(keep_lists_s=1.0, max_age_s=50.0)).deleted_events == 2
        log.record_decision(decision("d2", ts=101.0))
        assert log.record_events([event("e3", "d2")]) == [3]


def test_each_call_does_a_bounded_amount_of_work(log: EventLog) -> None:
    log.record_decisions([decision(f"d{i}", ts=float(i)) for i in range(25)])
    retention = RetentionConfig(keep_lists_s=100.0, max_age_s=math.inf)
    reports = [log.compact(1000.0, retention, max_rows=10) for _ in range(4)]
    assert [r.compacted for r in reports[:2]] == [10, 9]  # each call resumes at the last timestamp it saw
    assert [r.more for r in reports] == [True, True, False, False] and sum(r.compacted for r in reports) == 25
    reports = [log.compact(1000.0, RetentionConfig(keep_lists_s=100.0, max_age_s=989.5), max_rows=10)
               for _ in range(3)]
    assert [(r.deleted_decisions, r.more) for r in reports] == [(10, True), (1, False), (0, False)]


def test_many_decisions_at_one_timestamp_do_not_stall_compaction(log: EventLog) -> None:
    log.record_decisions([decision(f"d{i}", ts=5.0) for i in range(12)] + [decision("late", ts=6.0)])
    retention = RetentionConfig(keep_lists_s=10.0, max_age_s=math.inf)
    for _ in range(4):
        log.compact(100.0, retention, max_rows=5)
    assert log.decision("late").compacted  # the walk got past the tie at ts 5


def test_the_file_shrinks_when_decisions_are_deleted(log: EventLog) -> None:
    rng = np.random.default_rng(0)
    log.record_decisions([replace(realistic_decision(rng, f"d{i}"), ts=float(i)) for i in range(200)])
    full = log.compact(0.0, FOREVER)
    assert full.deleted_decisions == 0 and full.bytes_after > 2_000_000  # ~12 KB a decision
    report = log.compact(0.0, RetentionConfig(keep_lists_s=math.inf, max_age_s=math.inf, max_bytes=1 << 20))
    assert report.deleted_decisions > 100 and report.bytes_after <= 1 << 20
    assert log.path.stat().st_size == report.bytes_after  # checkpointed: the WAL was truncated to 0
    assert log.decision("d199") and log.counts()[0] == 200 - report.deleted_decisions


def test_a_version_1_file_stops_growing(tmp_path: Path) -> None:
    """Version 1 files have no auto_vacuum: freed pages stay in the file and new rows reuse them."""
    path = tmp_path / "events.sqlite"
    rng = np.random.default_rng(0)
    write_v1(path, [replace(realistic_decision(rng, f"a{i}"), ts=float(i)) for i in range(90)], [])
    retention = RetentionConfig(keep_lists_s=math.inf, max_age_s=140.0)
    with EventLog(path) as log:
        first = log.compact(200.0, retention)
        assert first.deleted_decisions == 60
        log.record_decisions([replace(realistic_decision(rng, f"b{i}"), ts=200.0 + i) for i in range(50)])
        second = log.compact(200.0, retention)
        assert second.deleted_decisions == 0 and second.bytes_after <= first.bytes_after


def test_a_reader_pinning_the_wal_neither_blocks_nor_costs_decisions(log: EventLog) -> None:
    rng = np.random.default_rng(0)
    retention = RetentionConfig(keep_lists_s=math.inf, max_age_s=math.inf, max_bytes=1 << 20)
    log.record_decision(replace(realistic_decision(rng, "d0"), ts=0.0))
    reader = sqlite3.connect(log.path, isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM decisions").fetchone() == (1,)  # holds its snapshot
    for i in range(1, 60):  # one commit each: the WAL grows past max_bytes while it cannot be reset
        log.record_decision(replace(realistic_decision(rng, f"d{i}"), ts=float(i)))
    pinned = log.compact(100.0, retention)
    assert pinned.deleted_decisions == 0 and pinned.bytes_after > 1 << 20  # deleting would not shrink the WAL
    reader.execute("COMMIT")
    reader.close()
    released = log.compact(100.0, retention)
    assert released.deleted_decisions == 0 and released.bytes_after <= 1 << 20 < pinned.bytes_after


def test_a_long_stream_stays_under_max_bytes_and_the_newest_stay_joinable(log: EventLog) -> None:
    """20k searches (1 s apart) with feedback on a third; compact every 500 writes, as the broker does."""
    retention = RetentionConfig(keep_lists_s=600.0, max_age_s=86_400.0, max_bytes=1 << 20)
    top = StrategyList("lexical", [f"e{i}" for i in range(8)], np.linspace(9, 1, 8, dtype=np.float32))
    base = replace(decision(), lists=(top,), final=tuple(top.entity_ids))
    feedback: dict[str, float] = {}
    for start in range(0, 20_000, 500):
        batch = [replace(base, decision_id=f"d{i}", ts=float(i)) for i in range(start, start + 500)]
        log.record_decisions(batch)
        liked = {d.decision_id: d.ts % 7 for d in batch[::3]}
        log.record_events([EventRecord(event_id=f"x{d}", decision_id=d, entity_id="e1", type=EventType.PLAY,
                                       reward=reward) for d, reward in liked.items()])
        feedback.update(liked)
        while (report := log.compact(start + 500.0, retention)).more:
            pass
        assert report.bytes_after <= retention.max_bytes
    kept, n_events = log.counts()
    assert 1000 < kept < 20_000 and log.disk_bytes() <= retention.max_bytes
    # the newest decisions are all there with their lists, and feedback on them joins
    newest = [f"d{i}" for i in range(19_500, 20_000)]
    assert all(not log.decision(d).compacted for d in newest)
    assert log.record_event(event("late", "d19999", "e1", EventType.FAVORITE))
    # the retained window is whole: the newest `kept` decisions, their events, in time order
    fb = log.bandit_feedback()
    assert fb.decision_ids == tuple(f"d{i}" for i in range(20_000 - kept, 20_000))
    assert fb.reward.tolist() == [max(feedback.get(d, 0.0), 0.9 if d == "d19999" else 0.0) for d in fb.decision_ids]
    plain = [d for d in fb.decision_ids if d not in feedback]
    assert log.decision(plain[0]).compacted and not log.decision(plain[-1]).compacted  # lists kept 600 s
    groups = list(log.training_groups())  # the decisions with feedback (all have their lists)
    assert len(groups) == len(set(fb.decision_ids) & (set(feedback) | {"d19999"}))
    assert all(len(g.merged) == 8 for g in groups)
    positions = [p for p, _ in log.events_after(0)]
    assert positions == sorted(positions) and len(positions) == n_events + 1
