"""core.warmstart: a pipeline warm-started from another plan's event log."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.errors import StateError
from core.eventlog import DecisionRecord, EventLog, EventRecord
from core.merge import StrategyList
from core.pipeline import SearchPipeline
from core.policy.features import DIM
from core.policy.policies import BanditPolicy, PolicyConfig
from core.ranking import RRFRanker
from core.types import EventType
from core.warmstart import warm_start_from_log

IDS = [f"e{i}" for i in range(200)]


def decision(i: int, strategies: tuple[str, ...], quotas: tuple[int, ...]) -> DecisionRecord:
    lists = tuple(StrategyList(s, IDS[k * 7:k * 7 + q], np.ones(q, dtype=np.float32))
                  for k, (s, q) in enumerate(zip(strategies, quotas, strict=True)) if q)
    return DecisionRecord(decision_id=f"d{i}", ts=float(i), query_text=f"query {i % 3}", context={},
                          features=np.ones(DIM), strategies=strategies, quotas=quotas, allocation=0, propensity=1.0,
                          marginals=(1.0,) * len(strategies), policy="static", lists=lists, final=())


def write_log(path: Path, events: list[tuple[DecisionRecord, EventType, str]]) -> Path:
    """Plays are full listens (value 1): satisfying under any threshold."""
    with EventLog(path) as log:
        seen: set[str] = set()
        for n, (record, kind, entity) in enumerate(events):
            if record.decision_id not in seen:
                log.record_decision(record)
                seen.add(record.decision_id)
            log.record_event(EventRecord(event_id=f"v{n}", decision_id=record.decision_id, entity_id=entity, type=kind,
                                         value=1.0 if kind is EventType.PLAY else 0.0))
    return path


def pipeline() -> SearchPipeline:
    policy = BanditPolicy(("lexical", "semantic"), DIM, PolicyConfig(levels=(0, 50, 100), budget=100))
    return SearchPipeline(policy, RRFRanker())


def test_one_event_per_decision_teaches_and_strategies_are_matched_by_name(tmp_path: Path) -> None:
    """The log's plan had semantic and memory (in that order); the policy has lexical and semantic.
    Semantic's list starts at e0, so e3 is its rank 4; each decision gets a play and a click."""
    old = ("semantic", "memory")
    events = []
    for i in range(10):
        record = decision(i, old, (50, 50))
        events += [(record, EventType.SKIP, "e1"), (record, EventType.PLAY, "e3"), (record, EventType.CLICK, "e3")]
    pipe = pipeline()
    report = warm_start_from_log(pipe, write_log(tmp_path / "old.sqlite", events))
    assert report.searches == 10  # the skip teaches nothing, the click after the play is the same decision's
    policy = pipe.allocator
    assert isinstance(policy, BanditPolicy)
    semantic_50 = policy.space.index_of((0, 50))
    assert policy.arms.n.tolist() == [10 if a == semantic_50 else 0 for a in range(policy.n_allocations)]
    assert policy.arms.predict(policy.model_input(np.ones(DIM)))[0][semantic_50] > 0.9
    assert len(pipe.history) == 3  # the three query texts, from every event but the skips


def test_a_log_of_skips_only_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = write_log(tmp_path / "old.sqlite", [(decision(0, ("lexical",), (50,)), EventType.SKIP, "e1")])
    with pytest.raises(StateError, match=r"old\.sqlite.*none of its 1 feedback events teaches"):
        warm_start_from_log(pipeline(), path)


def test_a_log_of_other_strategies_is_refused(tmp_path: Path) -> None:
    path = write_log(tmp_path / "old.sqlite", [(decision(0, ("memory",), (50,)), EventType.PLAY, "e1")])
    with pytest.raises(StateError, match=r"teaches a strategy of \['lexical', 'semantic'\]"):
        warm_start_from_log(pipeline(), path)
