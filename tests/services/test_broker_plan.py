"""SearchRequest.plan through a real broker (grpc.aio, in process) over real in-process shard servers:
a forced plan runs as given, is logged with propensity 1 as forced, and its feedback does not
change the policy; a bad plan is INVALID_ARGUMENT naming `plan`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from core.eventlog import EventLog
from core.pipeline import FORCED
from core.policy.policies import BanditPolicy
from ltrr.v1 import broker_pb2, broker_pb2_grpc, common_pb2, shard_pb2, shard_pb2_grpc
from services.broker import BrokerConfig, BrokerService
from services.broker_config import EVENTS_FILE
from tests.services.conftest import broker_serving, shard_servers


class Shard(shard_pb2_grpc.ShardServicer):
    """Answers `quota` candidates named after itself; counts its Retrieve calls."""

    def __init__(self, name: str) -> None:
        self.name, self.calls = name, 0

    async def Retrieve(self, request: shard_pb2.RetrieveRequest, context: grpc.aio.ServicerContext
                       ) -> shard_pb2.RetrieveResponse:
        self.calls += 1
        return shard_pb2.RetrieveResponse(candidates=[
            common_pb2.Candidate(entity_id=f"{self.name}{i}", score=1.0 / (i + 1), rank=i + 1)
            for i in range(request.quota)])


def run(go: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(go())


def learned(service: BrokerService) -> dict[str, np.ndarray]:
    assert service.pipeline is not None
    policy = service.pipeline.allocator
    assert isinstance(policy, BanditPolicy)
    # copies: state() returns the arrays that learning updates in place
    return {**{k: v.copy() for k, v in policy.arms.state().items()},
            **{f"fill_{k}": v.copy() for k, v in policy.fill.state().items()}}


async def serving(tmp_path: Path, go: Callable[[broker_pb2_grpc.BrokerStub, BrokerService, dict[str, Shard]],
                                               Coroutine[Any, Any, None]]) -> None:
    """Shards for lexical and semantic, a broker over them, and `go` with a stub of the broker."""
    shards = {name: Shard(name) for name in ("lexical", "semantic")}
    async with shard_servers(list(shards.values())) as (addresses, _):
        service = BrokerService(BrokerConfig(shards=dict(zip(shards, addresses, strict=True)),
                                             state_dir=str(tmp_path), ranker="rrf"))
        async with broker_serving(service) as (channel, _):
            await go(broker_pb2_grpc.BrokerStub(channel), service, shards)


def search(text: str, plan: dict[str, int] | None = None) -> broker_pb2.SearchRequest:
    return broker_pb2.SearchRequest(query=common_pb2.Query(text=text), k=5, budget_ms=2000, plan=plan or {})


def test_a_forced_plan_runs_as_given_and_teaches_the_policy_nothing(tmp_path: Path) -> None:
    async def go(stub: broker_pb2_grpc.BrokerStub, service: BrokerService, shards: dict[str, Shard]) -> None:
        response = await stub.Search(search("love", {"lexical": 100}))
        assert response.forced and response.propensity == 1.0
        assert [(r.strategy, r.quota, r.propensity) for r in response.strategies] == [("lexical", 100, 1.0),
                                                                                     ("semantic", 0, 1.0)]
        assert shards["semantic"].calls == 0 and response.results[0].entity_id == "lexical0"
        before = learned(service)
        fb = await stub.Feedback(broker_pb2.FeedbackRequest(decision_id=response.decision_id, entity_id="lexical0",
                                                            type=common_pb2.EVENT_TYPE_CLICK))
        assert fb.reward != 0.0  # a satisfying event, logged with its reward for off-policy evaluation
        after = learned(service)
        assert all(np.array_equal(before[k], after[k]) for k in before)
        chosen = await stub.Search(search("love"))
        assert not chosen.forced
        fb = await stub.Feedback(broker_pb2.FeedbackRequest(decision_id=chosen.decision_id,
                                                            entity_id=chosen.results[0].entity_id,
                                                            type=common_pb2.EVENT_TYPE_CLICK))
        assert not all(np.array_equal(after[k], v) for k, v in learned(service).items())  # the policy's own does
        with EventLog(tmp_path / EVENTS_FILE) as log:
            record = log.decision(response.decision_id)
        assert record.policy == FORCED and record.propensity == 1.0 and record.quotas == (100, 0)

    run(lambda: serving(tmp_path, go))


@pytest.mark.parametrize(("plan", "match"), [
    ({"lexical": 100, "memory": 50}, "plan: must name only the strategies"),
    ({"lexical": 60}, "plan: must give each strategy one of the levels"),
    ({"lexical": 200, "semantic": 200}, "total of at most"),
])
def test_a_bad_plan_is_invalid_argument_naming_plan(tmp_path: Path, plan: dict[str, int], match: str) -> None:
    async def go(stub: broker_pb2_grpc.BrokerStub, service: BrokerService, shards: dict[str, Shard]) -> None:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Search(search("love", plan))
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT and match in str(err.value.details())
        assert shards["lexical"].calls == 0

    run(lambda: serving(tmp_path, go))
