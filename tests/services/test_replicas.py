"""services.replicas against real in-process grpc.aio shard servers on loopback: failover, hedging.

Each replica is a real gRPC server whose Retrieve handler answers with its own name, after a delay
or with an injected status the test sets; the ReplicaSet under test talks to them over TCP.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest

from ltrr.v1 import common_pb2, shard_pb2, shard_pb2_grpc
from services.replicas import ReplicaConfig, ReplicaSet
from tests.services.conftest import shard_servers


class Replica(shard_pb2_grpc.ShardServicer):
    """Answers Retrieve with one candidate named after itself, after `delay_s`, or fails with `fail`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.delay_s = 0.0
        self.fail: grpc.StatusCode | None = None
        self.calls = self.cancelled = 0

    async def Retrieve(self, request: shard_pb2.RetrieveRequest, context: grpc.aio.ServicerContext
                       ) -> shard_pb2.RetrieveResponse:
        self.calls += 1
        if self.fail is not None:
            await context.abort(self.fail, f"{self.name}: injected")
        try:
            await asyncio.sleep(self.delay_s)
        except asyncio.CancelledError:  # the caller cancelled the call (a hedge won)
            self.cancelled += 1
            raise
        return shard_pb2.RetrieveResponse(strategy="lexical", candidates=[
            common_pb2.Candidate(entity_id=self.name, score=1.0, rank=1)])


@asynccontextmanager
async def replicas(*names: str) -> AsyncIterator[tuple[list[Replica], list[grpc.aio.Server], list[str]]]:
    servicers = [Replica(name) for name in names]
    async with shard_servers(servicers) as (addresses, servers):
        yield servicers, servers, addresses


async def ask(rs: ReplicaSet, timeout_s: float = 2.0) -> str:
    """One Retrieve through `rs`: the name of the replica that answered."""
    async def invoke(stub: shard_pb2_grpc.ShardStub, t: float) -> shard_pb2.RetrieveResponse:
        return await stub.Retrieve(shard_pb2.RetrieveRequest(query=common_pb2.Query(text="x"), quota=1), timeout=t)

    response = await rs.call(invoke, time.perf_counter() + timeout_s)
    return str(response.candidates[0].entity_id)


def run(go: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(go())


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED,
                                  grpc.StatusCode.INTERNAL])
def test_a_failing_replica_fails_over_to_another_and_is_then_passed_over(code: grpc.StatusCode) -> None:
    async def go() -> None:
        async with replicas("a", "b") as (servicers, _, addresses):
            servicers[0].fail = code
            rs = ReplicaSet("lexical", 0, addresses, ReplicaConfig(hedging=False), seed=1)
            got = [await ask(rs) for _ in range(12)]
            await rs.close()
        assert got == ["b"] * 12
        assert rs.failovers == 1 and servicers[0].calls == 1  # ejected after its failure: not asked again

    run(go)


def test_a_dead_replica_fails_over_and_both_dead_raise_the_last_error() -> None:
    async def go() -> None:
        async with replicas("a", "b") as (_, servers, addresses):
            rs = ReplicaSet("lexical", 0, addresses, ReplicaConfig(hedging=False), seed=1)
            assert {await ask(rs) for _ in range(8)} == {"a", "b"}  # ties between idle replicas: at random
            await servers[0].stop(grace=None)
            assert [await ask(rs) for _ in range(4)] == ["b"] * 4
            await servers[1].stop(grace=None)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await ask(rs)
            await rs.close()
        assert err.value.code() is grpc.StatusCode.UNAVAILABLE

    run(go)


def test_a_replica_that_comes_back_is_used_again() -> None:
    """A replica stopped, then started again on its address: once its ejection is over and its
    channel has reconnected, it answers again (a bounded wait, not a timing check)."""
    async def go() -> None:
        async with replicas("a", "b") as (servicers, servers, addresses):
            rs = ReplicaSet("lexical", 0, addresses, ReplicaConfig(hedging=False, eject_s=0.2), seed=1)
            await servers[0].stop(grace=None)
            assert {await ask(rs) for _ in range(6)} == {"b"}
            again = grpc.aio.server()
            shard_pb2_grpc.add_ShardServicer_to_server(servicers[0], again)
            again.add_insecure_port(addresses[0])
            await again.start()
            answered = set()
            for _ in range(200):  # bounded: 10 s
                answered.add(await ask(rs))
                if "a" in answered:
                    break
                await asyncio.sleep(0.05)
            await rs.close()
            await again.stop(grace=None)
        assert "a" in answered

    run(go)


def test_an_error_every_replica_would_give_is_not_retried() -> None:
    async def go() -> None:
        async with replicas("a", "b") as (servicers, _, addresses):
            for s in servicers:
                s.fail = grpc.StatusCode.INVALID_ARGUMENT
            rs = ReplicaSet("lexical", 0, addresses)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await ask(rs)
            await rs.close()
        assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert rs.failovers == 0 and servicers[0].calls + servicers[1].calls == 1

    run(go)


def test_a_slow_replica_is_hedged_to_another_and_the_loser_cancelled() -> None:
    """Once the partition has enough latency samples, a call stuck on the replica made slow (10 s)
    goes to the other after the recent p95 and is answered by it well within its 3 s deadline (a
    status check: without the hedge it would time out); the slow attempt is cancelled."""
    async def go() -> None:
        async with replicas("a", "b") as (servicers, _, addresses):
            rs = ReplicaSet("lexical", 0, addresses, ReplicaConfig(hedge_min_samples=6, latency_window=50), seed=1)
            for _ in range(6):
                await ask(rs)
            assert rs.hedges == 0 and rs.hedge_delay_s() is not None
            servicers[0].delay_s = 10.0
            got = [await ask(rs, timeout_s=3.0) for _ in range(8)]
            await asyncio.sleep(0.2)  # let the server see the cancellations
            await rs.close()
        assert got == ["b"] * 8
        assert rs.hedges >= 1 and servicers[0].cancelled >= 1  # the stuck attempt on "a" was cancelled

    run(go)


@pytest.mark.parametrize("config", [ReplicaConfig(hedging=False), ReplicaConfig(hedge_min_samples=50)],
                         ids=["hedging off", "too few samples"])
def test_no_hedge_when_off_or_before_enough_samples(config: ReplicaConfig) -> None:
    async def go() -> None:
        async with replicas("a", "b") as (servicers, _, addresses):
            rs = ReplicaSet("lexical", 0, addresses, config, seed=1)
            for _ in range(20):
                await ask(rs)
            servicers[0].delay_s = 10.0  # "b" stays fast: only a hedge would save a call that "a" got
            outcomes = []
            for _ in range(8):
                try:
                    outcomes.append(await ask(rs, timeout_s=0.3))
                except TimeoutError:
                    outcomes.append("late")
            await rs.close()
        assert rs.hedges == 0 and "late" in outcomes and set(outcomes) <= {"b", "late"}

    run(go)


def test_one_replica_answers_fails_and_times_out_as_its_only_attempt() -> None:
    """A partition of one replica: its answer; its error as it came (nothing to fail over to); a
    call past the deadline ends late (gRPC's DEADLINE_EXCEEDED or TimeoutError); an abandoned call
    is cancelled at the server; a deadline already passed calls nobody."""
    async def go() -> None:
        async with replicas("a") as (servicers, _, addresses):
            rs = ReplicaSet("lexical", 0, addresses, seed=1)
            assert [await ask(rs) for _ in range(3)] == ["a"] * 3
            assert len(rs.latencies) == 3
            servicers[0].fail = grpc.StatusCode.UNAVAILABLE
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await ask(rs)
            assert err.value.code() is grpc.StatusCode.UNAVAILABLE and rs.failovers == 0
            servicers[0].fail, servicers[0].delay_s = None, 10.0
            with pytest.raises((grpc.aio.AioRpcError, TimeoutError)) as late:
                await ask(rs, timeout_s=0.2)
            assert not isinstance(late.value, grpc.aio.AioRpcError) or \
                late.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
            await asyncio.sleep(0.2)  # let the server see the late call's cancellation
            task = asyncio.ensure_future(ask(rs, timeout_s=5.0))
            await asyncio.sleep(0.2)
            cancelled = servicers[0].cancelled
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            calls = servicers[0].calls
            with pytest.raises(TimeoutError):
                await ask(rs, timeout_s=-1.0)
            await asyncio.sleep(0.2)  # let the server see the cancellation
            await rs.close()
        assert servicers[0].calls == calls and servicers[0].cancelled == cancelled + 1

    run(go)


def test_a_hedged_call_leaves_the_delay_it_was_due_after_not_the_loops_lateness() -> None:
    """The sample a call beaten by its hedge leaves is the hedge delay it was given: here every call
    goes to the slow "a" first (it has the fewer calls outstanding) and the loop is blocked for 30 ms
    just before the hedge is due; that lateness must not enter the window (it would raise the
    percentile at every refresh while "a" stays slow, until no hedge came in time)."""
    async def go() -> None:
        async with replicas("a", "b") as (servicers, _, addresses):
            rs = ReplicaSet("lexical", 0, addresses, ReplicaConfig(hedge_min_samples=6, latency_window=50), seed=1)
            for _ in range(6):
                await ask(rs)
            servicers[0].delay_s = 10.0
            samples: list[tuple[float, float]] = []  # (the call's sample, the hedge delay it was given), ms
            loop = asyncio.get_running_loop()
            for _ in range(12):
                delay_s, hedges = rs.hedge_delay_s(), rs.hedges
                assert delay_s is not None
                blocker = loop.call_later(max(delay_s - 0.001, 0.0), time.sleep, 0.03)
                rs.replicas[1].outstanding += 1  # so the call starts on "a"; the hedge has only "b" left
                try:
                    assert await ask(rs, timeout_s=3.0) == "b"
                finally:
                    rs.replicas[1].outstanding -= 1
                    blocker.cancel()
                assert rs.hedges == hedges + 1
                samples.append((rs.latencies[-1], delay_s * 1000))
                await asyncio.sleep(0.05)  # the cancelled attempt on "a" ends (its outstanding count with it)
            await rs.close()
        assert all(sample <= delay for sample, delay in samples), samples

    run(go)
