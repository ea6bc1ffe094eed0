"""The broker over real shard processes: search, feedback, deadlines, dead shards, crash durability."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from core.eventlog import EventLog
from core.pipeline import SearchPipeline
from core.policy.features import DIM
from core.policy.history import QueryHistory
from core.policy.policies import BanditPolicy
from core.ranking import RRFRanker
from core.reward import strategy_outcomes
from ltrr.v1 import broker_pb2
from services.broker import BrokerService
from services.client import BrokerClient
from services.cluster import Cluster, broker_args
from services.process import ServerProcess, shard_args, spawn
from tests.services.conftest import ALL, config

pytestmark = pytest.mark.slow
OK, TIMEOUT, ERROR = (broker_pb2.STRATEGY_STATUS_OK, broker_pb2.STRATEGY_STATUS_TIMEOUT,
                      broker_pb2.STRATEGY_STATUS_ERROR)


@pytest.fixture(scope="module")
def cluster(built: Path) -> Iterator[Cluster]:
    c = Cluster(config(built, "state-main", policy="static"))
    c.start(broker_port=0)
    yield c
    c.stop()


@pytest.fixture(scope="module")
def client(cluster: Cluster) -> Iterator[BrokerClient]:
    assert cluster.broker is not None
    with BrokerClient(cluster.broker.address) as c:
        yield c


def test_search_reports_every_strategy(client: BrokerClient) -> None:
    response = client.search("love night", k=5, budget_ms=2000)
    assert len(response.decision_id) == 32 and 0 < len(response.results) <= 5
    assert [r.strategy for r in response.strategies] == list(ALL)
    called = [r for r in response.strategies if r.quota > 0]
    assert called and all(r.status == OK and 0 < r.propensity <= 1 for r in called)
    assert all(r.status == broker_pb2.STRATEGY_STATUS_SKIPPED for r in response.strategies if r.quota == 0)
    assert not response.degraded
    assert [r.rank for r in response.results] == list(range(1, len(response.results) + 1))
    assert all(r.strategies for r in response.results)


def test_candidates_are_the_whole_merged_union_on_request(client: BrokerClient) -> None:
    plain = client.search("love night", k=3, budget_ms=2000)
    assert not plain.candidates and plain.propensity == 1.0  # a static plan chooses with certainty
    response = client.search("love night", k=3, budget_ms=2000, return_candidates=True)
    ids = [c.entity_id for c in response.candidates]
    assert len(ids) == len(set(ids)) > len(response.results)
    assert {r.entity_id for r in response.results} <= set(ids)
    ranks = np.array([list(c.ranks) for c in response.candidates])
    assert ranks.shape == (len(ids), len(ALL))
    for s, report in enumerate(response.strategies):
        # every list that came back is in the union, each rank 1..returned exactly once
        found = np.sort(ranks[:, s][ranks[:, s] > 0])
        np.testing.assert_array_equal(found, np.arange(1, report.returned + 1))
    best = np.where(ranks > 0, ranks, np.iinfo(np.int32).max).min(axis=1)
    assert np.all(np.diff(best) >= 0)  # ordered by best rank in any list


def test_feedback_counts_once_and_names_unknowns(client: BrokerClient) -> None:
    response = client.search("blue river", k=5, budget_ms=2000)
    entity = response.results[0].entity_id
    first = client.feedback(response.decision_id, entity, "click", event_id="ev-1")
    again = client.feedback(response.decision_id, entity, "click", event_id="ev-1")
    assert not first.duplicate and again.duplicate and first.reward == pytest.approx(again.reward)
    for decision, eid, field in [("nope", entity, "decision_id"), (response.decision_id, "no-such-id", "entity_id")]:
        with pytest.raises(grpc.RpcError) as err:
            client.feedback(decision, eid, "click")
        assert err.value.code() == grpc.StatusCode.NOT_FOUND and field in (err.value.details() or "")


def test_a_decision_is_rewarded_once_on_its_first_satisfying_event(client: BrokerClient) -> None:
    """Regression (issue 13): every event of a decision was credited, so a play, a like and a click
    on one search taught the policy three times; skips and short plays now teach nothing."""
    response = client.search("blue river", k=5, budget_ms=2000)
    decision, entity = response.decision_id, response.results[0].entity_id
    answers = [client.feedback(decision, entity, kind, value=value, event_id=f"{decision}:{i}") for i, (kind, value)
               in enumerate([("skip", 0.0), ("play", 0.05), ("play", 0.8), ("like", 0.0), ("click", 0.0)])]
    assert not any(a.duplicate for a in answers)
    rewards = [a.reward for a in answers]
    assert rewards[0] == rewards[1] == 0.0 and rewards[2] > 0.5 and rewards[3] == rewards[4] == 0.0
    nothing = client.feedback(decision, "", "reformulate")  # a session that played nothing after
    assert not nothing.duplicate and nothing.reward == 0.0
    with pytest.raises(grpc.RpcError) as err:
        client.feedback(decision, "", "click")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "entity_id" in (err.value.details() or "")


@pytest.mark.parametrize(("k", "budget", "field"), [(101, 100, "k"), (5, 2, "budget_ms"), (5, 20000, "budget_ms")])
def test_bad_search_arguments(client: BrokerClient, k: int, budget: int, field: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        client.search("love", k=k, budget_ms=budget)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (err.value.details() or "").startswith(field)


def test_a_slow_shard_is_dropped_and_reported_timeout(built: Path) -> None:
    """Deadline behaviour by status, not milliseconds: the shard slowed past the budget is reported
    TIMEOUT, the search is flagged degraded and still answers from the shard that was in time."""
    fast = spawn(shard_args("lexical", built / "index"))
    slow = spawn(shard_args("semantic", built / "index", extra=["--test-delay-ms", "3000"]))
    broker = spawn(broker_args(config(built, "state-slow", policy="static"),
                               {"lexical": fast.address, "semantic": slow.address}, 0))
    try:
        with BrokerClient(broker.address) as client:
            client.search("love", budget_ms=1000)  # connections up
            for _ in range(3):
                response = client.search("love night", k=5, budget_ms=500)
                status = {r.strategy: r.status for r in response.strategies}
                assert status == {"lexical": OK, "semantic": TIMEOUT} and response.degraded
                assert len(response.results) > 0
                assert all(r.strategies == ["lexical"] for r in response.results)
    finally:
        for p in (broker, slow, fast):
            p.stop()


def test_killing_a_shard_mid_run_fails_no_search(built: Path) -> None:
    cluster = Cluster(config(built, "state-kill", policy="static"))
    cluster.start(broker_port=0)
    try:
        assert cluster.broker is not None
        with BrokerClient(cluster.broker.address) as client:
            failures = degraded = 0
            for i in range(60):
                if i == 20:
                    cluster.shards["lexical"].kill()
                try:
                    degraded += client.search("love night", k=5, budget_ms=500).degraded
                except grpc.RpcError:
                    failures += 1
            assert failures == 0 and degraded >= 30
    finally:
        cluster.stop()


def test_acknowledged_feedback_survives_a_broker_sigkill(built: Path) -> None:
    shard = spawn(shard_args("lexical", built / "index"))
    args = broker_args(config(built, "state-crash"), {"lexical": shard.address}, 0)
    broker: ServerProcess = spawn(args)
    try:
        with BrokerClient(broker.address) as client:
            acked = []
            for i in range(20):
                r = client.search("love", k=3, budget_ms=1000)
                assert not client.feedback(r.decision_id, r.results[0].entity_id, "play", event_id=f"e{i}").duplicate
                acked.append((r.decision_id, r.results[0].entity_id, f"e{i}"))
        broker.kill()
        broker = spawn(args)
        with BrokerClient(broker.address) as client:
            for decision, entity, event in acked:
                assert client.feedback(decision, entity, "play", event_id=event).duplicate
        assert broker.stop() == 0
    finally:
        broker.stop()
        shard.stop()
    # No snapshot existed when the broker was killed (20 updates < save_every): the restarted broker
    # rebuilt its policy from the event log, so its snapshot equals a replay of the log.
    state = built / "state-crash"
    restored = BanditPolicy(("lexical",), DIM)
    assert restored.load(state / "policy.npz")["applied_event_rowid"] == 20
    reference = SearchPipeline(BanditPolicy(("lexical",), DIM), RRFRanker())
    with EventLog(state / "events.sqlite") as log:
        assert reference.replay(BrokerService._logged_after(log, 0)) == (20, 0)
    policy = reference.allocator
    assert isinstance(policy, BanditPolicy) and policy.arms.n.sum() > 0 and policy.fill.n.sum() > 0
    np.testing.assert_array_equal(restored.arms.n, policy.arms.n)
    np.testing.assert_allclose(restored.arms.b, policy.arms.b)
    np.testing.assert_allclose(restored.fill.b, policy.fill.b)  # the fill model is rebuilt too


def test_event_log_feeds_ranker_training_and_policy_evaluation(built: Path) -> None:
    """Searches with feedback through the broker, then the two offline tools on its state. The
    cluster is this test's own: it stops the broker to run the tools (a shared one would leave the
    other tests of the module without a broker, in whatever order they run)."""
    import subprocess
    import sys

    cluster = Cluster(config(built, "state-offline", policy="static"))
    cluster.start(broker_port=0)
    try:
        assert cluster.broker is not None
        with BrokerClient(cluster.broker.address) as client:
            for i in range(40):
                response = client.search(["love night", "blue river", "fire heart", "city dream"][i % 4], k=10,
                                         budget_ms=2000)
                if len(response.results) > 2:
                    client.feedback(response.decision_id, response.results[i % 3].entity_id, "play")
    finally:
        cluster.stop()  # the broker writes its last policy snapshot
    state = built / "state-offline"

    def ltrr(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "services.cli", *args], capture_output=True, text=True,
                              timeout=300, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout

    trained = ltrr("train-ranker", "--state", str(state), "--catalog", str(built / "catalog.jsonl"))
    assert "trained LambdaMART" in trained and (state / "ranker.txt").exists()
    # The logging policy (static, propensity 1) evaluated on its own log: every estimator gives the mean reward.
    evaluated = ltrr("evaluate-policy", "--state", str(state), "--set", "policy=static")
    lines = {line.split()[0]: float(line.split()[1]) for line in evaluated.splitlines()[1:]}
    mean = float(evaluated.splitlines()[0].rsplit(" ", 1)[1])
    assert lines["IPS"] == pytest.approx(mean) and lines["SNIPS"] == pytest.approx(mean)


def test_state_from_an_older_policy_is_set_aside_not_fatal(tmp_path: Path) -> None:
    """An upgrade that changes the features or the model must not stop the broker: the old
    snapshot is moved aside and decisions logged with other features are not replayed."""
    import asyncio

    from core.eventlog import DecisionRecord, EventRecord
    from core.merge import StrategyList
    from core.policy.models import ModelKind
    from core.policy.policies import PolicyConfig
    from core.types import EventType
    from services.broker import BrokerConfig, BrokerService

    strategies = ("lexical", "memory")
    state = tmp_path / "state"
    state.mkdir()
    BanditPolicy(strategies, DIM, PolicyConfig(model=ModelKind.INDEPENDENT)).save(state / "policy.npz")
    lists = (StrategyList("lexical", ["a", "b"], np.array([2.0, 1.0], dtype=np.float32)),)
    with EventLog(state / "events.sqlite") as log:
        for i, dim in enumerate((DIM - 10, DIM)):
            log.record_decision(DecisionRecord(
                decision_id=f"d{i}", ts=1.0, query_text="q", context={}, features=np.ones(dim), strategies=strategies,
                quotas=(50, 0), allocation=0, propensity=0.5, marginals=(0.5, 0.5), policy="thompson", lists=lists,
                final=("a", "b")))
            assert log.record_event(EventRecord(event_id=f"e{i}", decision_id=f"d{i}", entity_id="a",
                                                type=EventType.CLICK, value=0.0, ts=2.0, reward=1.0))

    async def start() -> BrokerService:
        service = BrokerService(BrokerConfig(shards={s: "127.0.0.1:1" for s in strategies}, state_dir=str(state)))
        await service.start()
        await service.close()
        return service

    service = asyncio.run(start())
    assert (state / "policy.npz.incompatible").exists()
    assert service.pipeline is not None
    policy = service.pipeline.allocator
    assert isinstance(policy, BanditPolicy) and int(policy.arms.n.sum()) > 0  # the decision with these features
    fresh = BanditPolicy(strategies, DIM)
    fresh.update(np.ones(DIM), strategy_outcomes((50, 0), (1, 0), (True, False), EventType.CLICK))
    np.testing.assert_array_equal(policy.arms.n, fresh.arms.n)  # ... and only that one
    both = QueryHistory()  # the query history needs no features: it learns from both events
    for _ in range(2):
        both.observe("q", "a", retrieved=True)
    assert service.pipeline.history.features("q").tolist() == both.features("q").tolist()
