"""A document-partitioned strategy's fan-out against real in-process grpc.aio shard servers: the
exact refetch, and a refetch that fails making the search degraded instead of silently inexact."""

from __future__ import annotations

import asyncio

import grpc

from core.partitions import partition_quota
from core.pipeline import Answer, CallStatus
from ltrr.v1 import common_pb2, shard_pb2, shard_pb2_grpc
from services.fanout import ShardPool, fan_out
from tests.services.conftest import shard_servers

QUOTA = 100


class Partition(shard_pb2_grpc.ShardServicer):
    """Holds `n` documents named `<prefix><i>` scored `top - i`; fails calls asking for more than
    `fail_above` with UNAVAILABLE (a replica lost between the first call and the refetch)."""

    def __init__(self, prefix: str, n: int, top: float, fail_above: int = 10**6) -> None:
        self.prefix, self.n, self.top, self.fail_above = prefix, n, top, fail_above
        self.asked: list[int] = []

    async def Retrieve(self, request: shard_pb2.RetrieveRequest, context: grpc.aio.ServicerContext
                       ) -> shard_pb2.RetrieveResponse:
        self.asked.append(request.quota)
        if request.quota > self.fail_above:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "injected")
        k = min(request.quota, self.n)
        return shard_pb2.RetrieveResponse(strategy="lexical", candidates=[
            common_pb2.Candidate(entity_id=f"{self.prefix}{i}", score=self.top - i, rank=i + 1) for i in range(k)])


def search(a: Partition, b: Partition) -> Answer:
    async def go() -> Answer:
        async with shard_servers([a, b]) as (addresses, _):
            pool = ShardPool({"lexical": [[addresses[0]], [addresses[1]]]})
            try:
                (answer,) = await fan_out(pool, common_pb2.Query(text="love"), {"lexical": QUOTA}, 5.0)
            finally:
                await pool.close()
            return answer
    return asyncio.run(go())


def test_a_partition_holding_most_of_the_top_is_asked_again_and_the_merge_is_exact() -> None:
    # a holds 200 documents scored 1000, 999, ...; b 10 scored 50 and below: the top 100 is all a's
    a, b = Partition("a", 200, 1000.0), Partition("b", 10, 50.0)
    answer = search(a, b)
    first = partition_quota(QUOTA, 2)
    assert a.asked == [first, QUOTA] and b.asked == [first]  # b gave all it had: not asked again
    assert answer.status is CallStatus.OK and answer.coverage == 1.0 and answer.refetched == 1
    assert answer.hits is not None and list(answer.hits.entity_ids) == [f"a{i}" for i in range(QUOTA)]


def test_a_failed_refetch_counts_that_partition_as_not_answered() -> None:
    a, b = Partition("a", 200, 1000.0, fail_above=partition_quota(QUOTA, 2)), Partition("b", 10, 50.0)
    answer = search(a, b)
    # the first answers are still merged (a's 69 best, then b's 10), but a may hold more of the top
    # 100 than it gave: coverage 1/2, so the search is degraded rather than silently inexact
    assert answer.status is CallStatus.OK and answer.coverage == 0.5
    assert answer.hits is not None and list(answer.hits.entity_ids[:3]) == ["a0", "a1", "a2"]
    assert len(answer.hits.entity_ids) == partition_quota(QUOTA, 2) + 10
