"""`ltrr broker --warm-start LOG`: the policy learns the replaced plan's event log once, before serving."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from core.errors import StateError
from core.eventlog import DecisionRecord, EventLog, EventRecord
from core.merge import StrategyList
from core.policy.features import DIM
from core.policy.policies import BanditPolicy, PolicyConfig, PolicyKind
from core.types import EventType
from ltrr.v1 import broker_pb2, common_pb2
from services.broker import BrokerConfig, BrokerService
from tests.services.test_broker_state import broker, search, shard

pytestmark = pytest.mark.slow
QUERIES = ("love", "night", "blue", "fire river", "dance", "gold")


def incumbent_log(built: Path, state: Path, searches: int) -> int:
    """A static plan's broker over the lexical shard serves `searches` searches, each played at its
    first result (a full listen); returns the events it logged."""
    async def go() -> None:
        with shard("lexical", built) as lexical:
            async with broker({"lexical": lexical.address}, state, built,
                              policy=PolicyConfig(kind=PolicyKind.STATIC)) as (_, stub):
                for i in range(searches):
                    r = await stub.Search(search(QUERIES[i % len(QUERIES)]))
                    await stub.Feedback(broker_pb2.FeedbackRequest(
                        decision_id=r.decision_id, entity_id=r.results[0].entity_id, event_id=f"e{i}",
                        type=common_pb2.EVENT_TYPE_PLAY, value=1.0))

    asyncio.run(go())
    with EventLog(state / "events.sqlite") as log:
        return log.counts()[1]


def warm_policy(built: Path, state: Path, source: Path) -> tuple[BanditPolicy, dict[str, object] | None, int]:
    """Start a thompson broker over `state` warm-started from `source`; its policy, its warm-start
    record and how many queries its history holds, read while it serves."""
    async def go() -> tuple[BanditPolicy, dict[str, object] | None, int]:
        with shard("lexical", built) as lexical:
            async with broker({"lexical": lexical.address}, state, built, warm_start=str(source)) as (service, stub):
                await stub.Search(search("love"))
                assert service.pipeline is not None
                policy = service.pipeline.allocator
                assert isinstance(policy, BanditPolicy)
                return policy, service.warm_started, len(service.pipeline.history)

    return asyncio.run(go())


def test_the_broker_learns_the_replaced_plans_log_once(built: Path, tmp_path: Path) -> None:
    events = incumbent_log(built, tmp_path / "incumbent", 12)
    source = tmp_path / "incumbent" / "events.sqlite"
    policy, record, queries = warm_policy(built, tmp_path / "new", source)
    assert record == {"path": str(source.resolve()), "searches": events, "clipped": 0}
    # the static plan asked lexical for 200: every search shows lexical@50, @100 and @200
    assert policy.arms.n.tolist() == [events] * 3
    assert queries == len(QUERIES)
    # a restart with the same flag finds the warm start in its snapshot and does not learn it again
    again, record, _ = warm_policy(built, tmp_path / "new", source)
    assert record is not None and record["searches"] == events
    np.testing.assert_array_equal(again.arms.n, policy.arms.n)
    np.testing.assert_allclose(again.arms.b, policy.arms.b)


def start_is_refused(config: BrokerConfig, match: str) -> None:
    async def go() -> None:
        service = BrokerService(config)
        with pytest.raises(StateError, match=match):
            await service.start()
        await service.close()

    asyncio.run(go())


def config(state: Path, source: Path) -> BrokerConfig:
    return BrokerConfig(shards={"lexical": "127.0.0.1:1"}, state_dir=str(state), warm_start=str(source))


def logged(path: Path, features: int, *, feedback: bool) -> Path:
    """An event log of one lexical decision with `features` features, and a play on it if `feedback`."""
    with EventLog(path) as log:
        log.record_decision(DecisionRecord(
            decision_id="d1", ts=1.0, query_text="love", context={}, features=np.ones(features),
            strategies=("lexical",), quotas=(50,), allocation=0, propensity=1.0, marginals=(1.0,), policy="static",
            lists=(StrategyList("lexical", ["t0001"], np.ones(1, dtype=np.float32)),), final=("t0001",)))
        if feedback:
            log.record_event(EventRecord(event_id="e1", decision_id="d1", entity_id="t0001", type=EventType.PLAY,
                                         value=1.0))
    return path


def test_a_log_without_feedback_is_refused_naming_the_file(tmp_path: Path) -> None:
    source = logged(tmp_path / "old.sqlite", DIM, feedback=False)
    start_is_refused(config(tmp_path / "state", source), r"old\.sqlite.*no feedback")


def test_a_log_of_another_feature_layout_is_refused_naming_the_file(tmp_path: Path) -> None:
    source = logged(tmp_path / "old.sqlite", 5, feedback=True)
    start_is_refused(config(tmp_path / "state", source), r"old\.sqlite.*cannot warm-start this policy.*5 features")


def test_a_missing_log_is_refused_and_not_created(tmp_path: Path) -> None:
    start_is_refused(config(tmp_path / "state", tmp_path / "nowhere.sqlite"), r"nowhere\.sqlite.*no such event log")
    assert not (tmp_path / "nowhere.sqlite").exists()


def test_the_brokers_own_log_is_refused(tmp_path: Path) -> None:
    start_is_refused(config(tmp_path / "state", tmp_path / "state" / "events.sqlite"), r"this broker's own event log")


def test_a_policy_warm_started_from_another_log_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    BanditPolicy(("lexical",), DIM).save(state / "policy.npz", {"warm_start": {"path": "/elsewhere.sqlite"}})
    source = logged(tmp_path / "old.sqlite", DIM, feedback=True)
    start_is_refused(config(state, source), r"warm-started from /elsewhere\.sqlite already")


def test_the_flag_reaches_the_broker_config(built: Path) -> None:
    from services.cli import build_parser
    from services.cli_broker import broker_config

    base = ["broker", "--shard", "lexical=127.0.0.1:1", "--state", "/tmp/unused", "--catalog",
            str(built / "catalog.jsonl")]
    assert broker_config(build_parser().parse_args([*base, "--warm-start", "/old/events.sqlite"])).warm_start == \
        "/old/events.sqlite"
    assert broker_config(build_parser().parse_args(base)).warm_start == ""
