from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from core.errors import NotFoundError
from core.eventlog import DecisionRecord, EventLog, EventRecord
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
          kind: EventType = EventType.CLICK, reward: float = 0.9) -> EventRecord:
    return EventRecord(event_id=event_id, decision_id=decision_id, entity_id=entity_id, type=kind,
                       value=0.0, ts=2.0, reward=reward)


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
    log.record_event(event("e3", "d1", "b", EventType.PLAY))
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
    from core.ranking import EntityTable, TrainParams, train_lambdamart

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
