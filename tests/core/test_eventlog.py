from __future__ import annotations

import json
import math
import signal
import sqlite3
import subprocess
import sys
import textwrap
import zlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from core.errors import NotFoundError, StateError
from core.eventlog import DecisionRecord, EventLog, EventRecord
from core.eventlog_schema import SCHEMA_VERSION
from core.merge import StrategyList
from core.types import EventType

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("lexical", "semantic", "memory")


def decision(decision_id: str = "d1", ts: float = 1.0, allocation: int = 3, propensity: float = 0.25,
             features: np.ndarray | None = None) -> DecisionRecord:
    lists = (StrategyList("lexical", ["a", "b", "c"], np.array([3.0, 2.0, 1.0], dtype=np.float32)),
             StrategyList("memory", ["c", "d"], np.array([0.9, 0.5], dtype=np.float32)))
    return DecisionRecord(
        decision_id=decision_id, ts=ts, query_text="love story", context={"device": "mobile"},
        features=np.arange(4, dtype=np.float64) if features is None else features, strategies=NAMES,
        quotas=(10, 25, 10), allocation=allocation, propensity=propensity, marginals=(0.5, 0.4, 0.9),
        policy="thompson", lists=lists, final=("c", "a", "b", "d"))


def event(event_id: str = "e1", decision_id: str = "d1", entity_id: str = "c",
          kind: EventType = EventType.CLICK, reward: float = 0.9, value: float = 0.0) -> EventRecord:
    return EventRecord(event_id=event_id, decision_id=decision_id, entity_id=entity_id, type=kind,
                       value=value, ts=2.0, reward=reward)


@pytest.fixture
def log(tmp_path: Path) -> Iterator[EventLog]:
    with EventLog(tmp_path / "events.sqlite") as opened:
        yield opened


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite"
    with EventLog(path) as log:
        log.record_decision(decision())
        assert log.record_event(event())
    with EventLog(path) as log:
        got = log.decision("d1")
        want = decision()
        assert (got.query_text, got.context, got.strategies, got.quotas) == \
            (want.query_text, want.context, want.strategies, want.quotas)
        assert (got.allocation, got.propensity, got.marginals, got.policy, got.final) == \
            (want.allocation, want.propensity, want.marginals, want.policy, want.final)
        np.testing.assert_array_equal(got.features, want.features)
        assert got.features.dtype == np.float64
        assert [(s.strategy, list(s.entity_ids), s.scores.tolist()) for s in got.lists] == \
            [(s.strategy, list(s.entity_ids), s.scores.tolist()) for s in want.lists]
        assert got.answered == (True, False, True)
        assert got.returned == (3, None, 2) and got.fetched == 5  # semantic timed out: no list
        assert got.merged().ranks.tolist() == want.merged().ranks.tolist()
        assert log.events("d1") == [event()]


def test_wal_and_full_sync_are_on(log: EventLog) -> None:
    assert log._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert log._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_duplicate_event_ids_count_once(log: EventLog) -> None:
    log.record_decision(decision())
    assert log.record_event(event("e1"))
    assert not log.record_event(event("e1", entity_id="a", reward=5.0))
    assert log.record_event(event("e2", entity_id="a"))
    assert log.counts() == (1, 2)
    assert [e.entity_id for e in log.events("d1")] == ["c", "a"]


def test_unknown_decision_is_not_found(log: EventLog) -> None:
    with pytest.raises(NotFoundError, match="nope"):
        log.decision("nope")
    with pytest.raises(NotFoundError, match="nope"):
        log.record_event(event(decision_id="nope"))
    assert log.counts() == (0, 0)
    log.record_decision(decision())  # the failed event left no transaction open
    assert log.record_event(event())


def test_repeated_decision_id_is_refused(log: EventLog) -> None:
    log.record_decision(decision())
    with pytest.raises(ValueError, match="`decision_id` 'd1' was already recorded"):
        log.record_decision(decision())


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"propensity": 0.0}, "`propensity` must be in"),
    ({"features": np.array([np.nan])}, "`features` must be a finite"),
])
def test_bad_decisions(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        decision(**kwargs)  # type: ignore[arg-type]


def test_training_groups_join_events_with_graded_labels(log: EventLog) -> None:
    log.record_decision(decision("d1", ts=1.0))
    log.record_decision(decision("d2", ts=2.0))  # no feedback: not a training group
    log.record_decision(decision("d3", ts=3.0))
    log.record_event(event("e1", "d1", "c", EventType.CLICK))
    log.record_event(event("e2", "d1", "c", EventType.FAVORITE))
    log.record_event(event("e3", "d1", "b", EventType.PLAY, value=0.9))  # played through: satisfied
    log.record_event(event("e4", "d3", "a", EventType.SKIP))
    groups = list(log.training_groups())
    assert len(groups) == 2
    g = groups[0]
    assert g.query_text == "love story" and g.merged.strategies == NAMES
    assert dict(zip(g.merged.entity_ids, g.labels.tolist(), strict=True)) == {"a": 0, "b": 2, "c": 3, "d": 0}
    assert groups[1].labels.tolist() == [0, 0, 0, 0]


def test_bandit_feedback_arrays(log: EventLog) -> None:
    log.record_decision(decision("d1", ts=1.0, allocation=3, propensity=0.25))
    log.record_decision(decision("d2", ts=2.0, allocation=7, propensity=0.5, features=np.ones(4)))
    log.record_event(event("e1", "d1", reward=0.2))
    log.record_event(event("e2", "d1", reward=0.7))
    fb = log.bandit_feedback()
    assert fb.decision_ids == ("d1", "d2") and fb.strategies == NAMES
    assert fb.contexts.shape == (2, 4) and fb.contexts[1].tolist() == [1.0] * 4
    assert fb.action.tolist() == [3, 7] and fb.action.dtype == np.int64
    assert fb.reward.tolist() == [0.7, 0.0] and fb.pscore.tolist() == [0.25, 0.5]
    assert fb.quotas.tolist() == [[10, 25, 10]] * 2
    with pytest.raises(ValueError, match="no logged decisions"):
        log.bandit_feedback(policy="linucb")


_CHILD = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    sys.path.insert(0, {root!r})
    sys.path.insert(0, {tests!r})
    from test_eventlog import decision, event
    from core.eventlog import EventLog
    log = EventLog({path!r})
    log.record_decision(decision())
    acked = log.record_event(event())
    os.kill(os.getpid(), signal.SIGKILL)  # right after the acknowledgement, no close
""")


def test_acknowledged_event_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite"
    code = _CHILD.format(root=str(ROOT), tests=str(Path(__file__).parent), path=str(path))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    assert Path(f"{path}-wal").exists()  # killed before any checkpoint or clean close
    with EventLog(path) as log:
        assert log.events("d1") == [event()]
        assert not log.record_event(event())


def test_a_reader_sees_the_log_while_the_writer_is_open(log: EventLog) -> None:
    log.record_decision(decision())
    log.record_event(event())
    with sqlite3.connect(log.path) as other:
        assert other.execute("SELECT count(*) FROM events").fetchone()[0] == 1


def test_logged_feedback_trains_a_ranker(log: EventLog, tmp_path: Path) -> None:
    from core.catalog import Entity
    from core.ranking import EntityTable
    from core.ranking_train import TrainParams, train_lambdamart

    table = EntityTable.from_entities(Entity(id=e, fields={"title": f"song {e}"}) for e in "abcd")
    for i in range(12):
        log.record_decision(decision(f"d{i}", ts=float(i)))
        log.record_event(event(f"e{i}", f"d{i}", "abcd"[i % 4], EventType.PLAY))
    report = train_lambdamart(log.training_groups(), tmp_path / "ranker.txt",
                              TrainParams(num_boost_round=3, min_data_in_leaf=1, valid_fraction=0.25), table=table)
    assert (report.train_groups, report.valid_groups, report.rows) == (9, 3, 36)
    assert report.feature_names[:3] == ("rank_lexical", "score_lexical", "missing_lexical")


def test_events_after_a_position_in_recording_order(log: EventLog) -> None:
    """The broker rebuilds its policy from a snapshot plus the events logged after its position."""
    log.record_decisions([decision("d1"), decision("d2")])
    assert log.last_event_rowid() == 0
    for i, d in enumerate(["d2", "d1", "d2"]):
        assert log.record_event(event(f"e{i}", decision_id=d))
    assert not log.record_event(event("e1", decision_id="d1"))  # a duplicate takes no position
    last = log.last_event_rowid()
    assert [e.event_id for _, e in log.events_after(0)] == ["e0", "e1", "e2"]
    after_first = log.events_after(log.events_after(0)[0][0])
    assert [e.event_id for _, e in after_first] == ["e1", "e2"] and after_first[-1][0] == last
    assert log.events_after(last) == []


# The version 1 schema, as ltrr wrote it before schema version 2 (kept here, not imported: the
# migration must read files that code no longer writes).
V1_SCHEMA = """
CREATE TABLE decisions (
  decision_id TEXT PRIMARY KEY, ts REAL NOT NULL, query_text TEXT NOT NULL, context TEXT NOT NULL,
  features BLOB NOT NULL, strategies TEXT NOT NULL, quotas TEXT NOT NULL, allocation INTEGER NOT NULL,
  propensity REAL NOT NULL, marginals TEXT NOT NULL, policy TEXT NOT NULL, lists TEXT NOT NULL,
  final TEXT NOT NULL);
CREATE TABLE events (
  event_id TEXT PRIMARY KEY, decision_id TEXT NOT NULL REFERENCES decisions(decision_id),
  entity_id TEXT NOT NULL, type INTEGER NOT NULL, value REAL NOT NULL, ts REAL NOT NULL,
  reward REAL NOT NULL);
CREATE INDEX events_by_decision ON events(decision_id);
PRAGMA user_version=1;
"""


def write_v1(path: Path, decisions: list[DecisionRecord], events: list[EventRecord]) -> None:
    """A version 1 file holding these, encoded as version 1 did (lists as plain JSON text)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(V1_SCHEMA)
    for d in decisions:
        lists = json.dumps({lst.strategy: {"ids": list(lst.entity_ids), "scores": lst.scores.tolist()}
                            for lst in d.lists})
        conn.execute("INSERT INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (
            d.decision_id, d.ts, d.query_text, json.dumps(dict(d.context)), d.features.astype("<f8").tobytes(),
            json.dumps(list(d.strategies)), json.dumps(list(d.quotas)), d.allocation, d.propensity,
            json.dumps(list(d.marginals)), d.policy, lists, json.dumps(list(d.final))))
    for e in events:
        conn.execute("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (e.event_id, e.decision_id, e.entity_id, int(e.type), e.value, e.ts, e.reward))
    conn.close()


def same_lists(a: DecisionRecord, b: DecisionRecord) -> bool:
    return [(s.strategy, list(s.entity_ids), s.scores.tolist()) for s in a.lists] == \
        [(s.strategy, list(s.entity_ids), s.scores.tolist()) for s in b.lists]


def test_a_version_1_file_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite"
    write_v1(path, [decision("d1", ts=1.0), decision("d2", ts=2.0)],
             [event("e1", "d1", "c"), event("e2", "d2", "a"), event("e3", "d1", "b", EventType.PLAY, value=0.9)])
    with EventLog(path) as log:
        assert log._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        old = log.decision("d1")
        assert same_lists(old, decision()) and old.final == decision().final
        assert old.latency_ms == 0.0 and not old.compacted  # unknown for version 1 decisions
        assert [(p, e.event_id) for p, e in log.events_after(0)] == [(1, "e1"), (2, "e2"), (3, "e3")]
        assert log.last_event_rowid() == 3
        log.record_decision(replace(decision("d3", ts=3.0), latency_ms=42.5))
        assert log.record_events([event("e4", "d3")]) == [4]
        kinds = dict(log._conn.execute("SELECT decision_id, typeof(lists) FROM decisions").fetchall())
        assert kinds == {"d1": "text", "d2": "text", "d3": "blob"}  # old rows stay as they were written
        assert log.decision("d3").latency_ms == 42.5 and same_lists(log.decision("d3"), decision())
        labelled = [{e: int(g) for e, g in zip(t.merged.entity_ids, t.labels.tolist(), strict=True) if g}
                    for t in log.training_groups()]
        assert labelled == [{"c": 1, "b": 2}, {"a": 1}, {"c": 1}]  # d1 (click c, play b), d2, d3
        assert log.bandit_feedback().decision_ids == ("d1", "d2", "d3")
        # auto_vacuum cannot be switched on without rewriting the file: freed pages are reused instead
        assert log._conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    with EventLog(path) as log:  # opening the upgraded file again changes nothing
        assert log.counts() == (3, 4) and log.last_event_rowid() == 4


def test_a_new_file_has_the_current_schema_and_incremental_vacuum(log: EventLog) -> None:
    assert log._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert log._conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # INCREMENTAL
    log.record_decision(decision())
    assert log._conn.execute("SELECT typeof(lists) FROM decisions").fetchone()[0] == "blob"


def realistic_decision(rng: np.random.Generator, decision_id: str) -> DecisionRecord:
    """4 strategies of 50-200 Spotify-like ids (from a pool of 500 for the query), float32 scores."""
    alphabet = np.array(list("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    pool = ["spotify:track:" + "".join(chars) for chars in rng.choice(alphabet, (500, 22))]
    names = ("lexical", "semantic", "attribute", "memory")
    lists = []
    for name, high in zip(names, (25.0, 0.9, 3.0, 1.0), strict=True):
        n = int(rng.integers(50, 201))
        scores = np.sort(rng.uniform(0.0, high, n).astype(np.float32))[::-1]
        lists.append(StrategyList(name, [pool[i] for i in rng.choice(500, n, replace=False)], scores))
    return DecisionRecord(decision_id=decision_id, ts=1.0, query_text="q", context={}, features=np.zeros(4),
                          strategies=names, quotas=(200,) * 4, allocation=0, propensity=1.0, marginals=(1.0,) * 4,
                          policy="static", lists=tuple(lists), final=tuple(lists[0].entity_ids[:10]))


def test_lists_are_stored_compressed_and_read_back_exactly(log: EventLog) -> None:
    rng = np.random.default_rng(0)
    records = [realistic_decision(rng, f"d{i}") for i in range(20)]
    log.record_decisions(records)
    stored = sum(n for (n,) in log._conn.execute("SELECT length(lists) FROM decisions"))
    as_json = sum(len(json.dumps({s.strategy: {"ids": list(s.entity_ids), "scores": s.scores.tolist()}
                                  for s in r.lists})) for r in records)
    assert stored * 2.5 < as_json  # 2.9x on these lists (core.eventlog_schema)
    assert all(same_lists(log.decision(r.decision_id), r) for r in records)


def test_non_finite_scores_survive_the_encoding(log: EventLog) -> None:
    lists = (StrategyList("lexical", ["a", "b", "c"], np.array([np.inf, 1.5, np.nan], dtype=np.float32)),)
    log.record_decision(replace(decision(), lists=lists))
    got = log.decision("d1").lists[0].scores
    assert got.dtype == np.float32 and got[0] == np.inf and got[1] == 1.5 and np.isnan(got[2])


def test_lists_written_with_decimal_scores_are_still_read(log: EventLog) -> None:
    """Rows written before the "f4" encoding hold the scores as JSON decimals (core.eventlog_schema)."""
    log.record_decision(decision())
    old = {"lexical": {"ids": ["a", "b"], "scores": [2.5, 0.1]}, "memory": {"ids": ["c"], "scores": [math.inf]}}
    blob = zlib.compress(json.dumps(old).encode(), 1)  # json writes math.inf as Infinity, as the old code did
    with log._conn:
        log._conn.execute("UPDATE decisions SET lists = ? WHERE decision_id = 'd1'", (blob,))
    lists = log.decision("d1").lists
    assert [(s.strategy, list(s.entity_ids)) for s in lists] == [("lexical", ["a", "b"]), ("memory", ["c"])]
    assert lists[0].scores.dtype == np.float32 and lists[0].scores.tolist() == [2.5, np.float32(0.1)]
    assert lists[1].scores[0] == np.inf


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"latency_ms": -1.0}, "`latency_ms` must be finite and >= 0"),
    ({"latency_ms": math.nan}, "`latency_ms` must be finite and >= 0"),
    ({"ts": math.inf}, "`ts` must be finite"),
    ({"compacted": True}, "must have empty `lists` and `final`"),
])
def test_bad_decision_fields(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        replace(decision(), **kwargs)  # type: ignore[arg-type]


def test_cursors_are_durable_across_reopening(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite"
    with EventLog(path) as log:
        assert log.cursor("memory") == 0  # unset
        log.set_cursor("memory", 7)
        log.set_cursor("memory", 9)
        log.set_cursor("other", 3)
    with EventLog(path) as log:
        assert (log.cursor("memory"), log.cursor("other"), log.cursor("none")) == (9, 3, 0)
        with pytest.raises(ValueError, match="`position` must be an int >= 0, but got -1"):
            log.set_cursor("memory", -1)
        with pytest.raises(ValueError, match="`name` must be non-empty"):
            log.set_cursor("", 1)


def test_feedback_after_joins_query_and_context_in_position_order(log: EventLog) -> None:
    log.record_decisions([decision("d1"), replace(decision("d2"), query_text="blue river", context={"u": "7"})])
    positions = log.record_events([event("e1", "d2", "a"), event("e2", "d1", "c"), event("e3", "d2", "b")])
    assert positions == [1, 2, 3]
    first = log.feedback_after(0, 2)
    assert [(p, e.event_id, q, c) for p, e, q, c in first] == \
        [(1, "e1", "blue river", {"u": "7"}), (2, "e2", "love story", {"device": "mobile"})]
    assert first[0][1] == event("e1", "d2", "a")
    assert [p for p, *_ in log.feedback_after(first[-1][0], 10)] == [3]
    assert log.feedback_after(3, 10) == []
    assert [p for p, _ in log.events_after(0, limit=2)] == [1, 2]
    with pytest.raises(ValueError, match="`limit` must be an int >= 1, but got 0"):
        log.feedback_after(0, 0)


def test_record_events_in_one_batch(log: EventLog) -> None:
    log.record_decision(decision())
    assert log.record_events([event("e1"), event("e2"), event("e1")]) == [1, 2, 0]  # repeated in the batch
    assert log.record_events([event("e2"), event("e3")]) == [0, 3]
    with pytest.raises(NotFoundError, match="nope"):
        log.record_events([event("e4"), event("e5", decision_id="nope")])
    assert log.counts() == (1, 3)  # the failed batch wrote nothing
    assert log.record_events([event("e4")]) == [4]


def corrupt(path: Path, how: str) -> None:
    if how == "random bytes":
        path.write_bytes(np.random.default_rng(0).bytes(64 << 10))
        return
    with EventLog(path) as log:
        log.record_decisions([decision(f"d{i}", ts=float(i)) for i in range(300)])
    conn = sqlite3.connect(path)  # the log is closed and checkpointed: the file holds everything
    if how == "truncated":
        conn.close()
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "newer version":
        conn.execute("PRAGMA user_version=7")
    elif how == "table lost":
        conn.execute("DROP TABLE cursors")
    elif how == "column lost":
        conn.execute("ALTER TABLE decisions DROP COLUMN latency_ms")
    conn.close()


@pytest.mark.parametrize(("how", "match"), [
    ("random bytes", "not a SQLite database or it is damaged"),
    ("truncated", "not a SQLite database or it is damaged"),
    ("newer version", "schema version 7 is unknown"),
    ("table lost", "lacks the table 'cursors'"),
    ("column lost", "table 'decisions' with columns"),
])
def test_a_damaged_file_is_refused_naming_it(tmp_path: Path, how: str, match: str) -> None:
    path = tmp_path / "events.sqlite"
    corrupt(path, how)
    with pytest.raises(StateError, match=match) as refused:
        EventLog(path)
    assert str(refused.value).startswith(f"{path}: ") and refused.value.path == path
    advice = "move it aside: the broker starts a new log; the policy snapshot keeps what was learned"
    assert advice in str(refused.value)


def test_another_programs_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE songs (id TEXT)")
    with pytest.raises(StateError, match=r"not an ltrr event log \(it has tables \['songs'\]\)"):
        EventLog(path)
    with sqlite3.connect(path) as conn:  # refused before anything was written to it
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_a_missing_directory_is_named(tmp_path: Path) -> None:
    path = tmp_path / "no-such-dir" / "events.sqlite"
    with pytest.raises(StateError, match=r"cannot open it .*: its directory must exist and be writable") as refused:
        EventLog(path)
    assert str(refused.value).startswith(f"{path}: ")
