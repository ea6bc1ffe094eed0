"""Admission control and deadlines (services.admission): the limiter alone, then real shard and
broker processes held busy by a test delay. Outcomes are asserted by status code and counter,
never by milliseconds."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc
import pytest

from core.errors import DeadlineExceededError, OverloadedError
from ltrr.v1 import broker_pb2, shard_pb2, shard_pb2_grpc
from services import convert
from services.admission import Deadline, Limiter, LoopLag, StandingDelay
from services.client import AsyncBrokerClient, ShardClient
from services.cluster import ClusterConfig, broker_args
from services.process import ServerProcess, shard_args, spawn
from tests.services.conftest import config

DELAY_MS = "600"  # long enough that requests sent together all arrive while the first still runs


# -- the limiter ------------------------------------------------------------------------------------


def test_limiter_admits_up_to_its_bound_then_sheds() -> None:
    limiter = Limiter(2, name="q")
    assert [limiter.try_acquire() for _ in range(4)] == [True, True, False, False]
    assert (limiter.in_flight, limiter.admitted, limiter.shed) == (2, 2, 2)
    limiter.release()
    assert limiter.try_acquire() and limiter.in_flight == 2 and limiter.admitted == 3


def test_limiter_without_a_bound_never_sheds() -> None:
    limiter = Limiter(0, name="q")
    assert all(limiter.try_acquire() for _ in range(1000)) and limiter.shed == 0


def test_admit_refuses_with_a_clear_error_and_releases_on_failure() -> None:
    limiter = Limiter(1, name="the test queue")
    with pytest.raises(RuntimeError), limiter.admit():
        raise RuntimeError("the work failed")
    assert limiter.in_flight == 0
    with limiter.admit(), pytest.raises(OverloadedError, match="overloaded: the test queue is full"):
        limiter.acquire()
    assert limiter.in_flight == 0 and limiter.shed == 1


@pytest.mark.parametrize(("limit", "match"), [(-1, "`limit` must be >= 0")])
def test_limiter_rejects_a_bad_bound(limit: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Limiter(limit, name="q")


def test_release_without_acquire_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="without a matching"):
        Limiter(1, name="q").release()


def test_a_passed_deadline_is_dropped_and_counted() -> None:
    limiter = Limiter(4, name="q")
    limiter.try_acquire()
    limiter.check(Deadline(None))
    limiter.check(Deadline.after(10.0))
    with pytest.raises(DeadlineExceededError, match="dropped unrun"):
        limiter.check(Deadline(time.monotonic() - 0.001))
    assert limiter.expired == 1


def test_work_expected_to_finish_late_is_dropped_only_when_others_wait() -> None:
    limiter = Limiter(4, name="q")
    limiter.observe(5_000.0)  # the work takes ~5 s; 10 s are left, then 1 s
    limiter.try_acquire()
    limiter.check(Deadline.after(1.0))  # alone: it runs, and its service time is measured again
    limiter.try_acquire()
    limiter.check(Deadline.after(10.0))
    with pytest.raises(DeadlineExceededError):
        limiter.check(Deadline.after(1.0))
    assert limiter.expired == 1


def test_the_service_time_average_moves_towards_new_times() -> None:
    limiter = Limiter(1, name="q")
    limiter.observe(10.0)
    assert limiter.service_ms == 10.0
    limiter.observe(20.0)
    assert 10.0 < limiter.service_ms < 20.0


def test_loop_lag_signals_only_a_standing_delay() -> None:
    """CoDel's rule: one late callback is a burst, delays above the target for a whole interval a queue."""
    lag = LoopLag(target_ms=5, interval_ms=100)
    lag.record(0.300, now=10.0)  # one stall of 300 ms
    assert not lag.overloaded(10.0)
    lag.record(0.001, now=10.01)  # caught up
    lag.record(0.020, now=10.08)
    lag.record(0.020, now=10.15)
    assert not lag.overloaded(10.15)  # late since 10.08: 70 ms
    lag.record(0.020, now=10.2)
    assert lag.overloaded(10.2)
    lag.record(0.001, now=10.21)
    assert not lag.overloaded(10.21)


def test_a_limiter_with_a_lagging_loop_sheds_with_a_clear_error() -> None:
    async def run() -> None:
        lag = LoopLag(target_ms=5, interval_ms=100)
        limiter = Limiter(0, name="the test broker", lag=lag)
        now = asyncio.get_running_loop().time()
        lag.record(0.030, now - 0.2)
        lag.record(0.030, now)
        with pytest.raises(OverloadedError, match="overloaded: the test broker waits 30 ms for its event loop"):
            limiter.acquire()
        lag.record(0.0, now)
        limiter.acquire()
        assert (limiter.admitted, limiter.shed, limiter.lagged) == (1, 1, 1)
        full = Limiter(1, name="the full broker", lag=lag)
        full.acquire()
        assert not full.try_acquire() and (full.shed, full.lagged) == (1, 0)  # full, not lagging

    asyncio.run(run())


def test_a_waiting_request_takes_the_first_place_released_or_is_refused_in_time() -> None:
    async def run() -> None:
        limiter = Limiter(1, name="the test broker")
        await limiter.acquire_within(0.0)
        waiting = asyncio.create_task(limiter.acquire_within(10.0))
        await asyncio.sleep(0)
        assert not waiting.done()
        limiter.release()  # handed to the waiter: the place stays taken
        await waiting
        assert (limiter.in_flight, limiter.admitted, limiter.shed) == (1, 2, 0)
        with pytest.raises(OverloadedError, match="none finished within 1 ms"):
            await limiter.acquire_within(0.001)
        with pytest.raises(OverloadedError, match="is full"):
            await limiter.acquire_within(0.0)
        limiter.release()
        assert (limiter.in_flight, limiter.shed, len(limiter.waiters)) == (0, 2, 0)

    asyncio.run(run())


def test_standing_waits_for_a_place_refuse_at_once_and_a_free_place_still_admits() -> None:
    """CoDel on the wait for a place: while every wait has stood above the target for an interval, a
    search that finds every place taken is refused at once (not after max_wait); one that finds a
    place free is admitted and its zero wait ends the standing queue; a wait cut short by time or
    by the caller counts as a wait."""
    async def run() -> None:
        waits = StandingDelay(target_ms=5, interval_ms=100)
        limiter = Limiter(1, name="the test broker", waits=waits)
        await limiter.acquire_within(1.0)
        now = asyncio.get_running_loop().time()
        waits.record(0.030, now - 0.2)
        waits.record(0.030, now)
        with pytest.raises(OverloadedError, match="waited over 5 ms for a place for 100 ms"):
            await limiter.acquire_within(10.0)  # at once, or this test would wait 10 s
        assert (limiter.shed, limiter.queueing, len(limiter.waiters)) == (1, 1, 0)
        limiter.release()
        await limiter.acquire_within(1.0)  # free again: admitted, and the queue is over
        assert not waits.overloaded(asyncio.get_running_loop().time()) and limiter.admitted == 2
        waiting = asyncio.create_task(limiter.acquire_within(10.0))
        await asyncio.sleep(0.02)
        limiter.release()
        await waiting
        assert waits.lag_ms >= 15  # the waiter's own wait, measured when it got the place
        with pytest.raises(OverloadedError, match="none finished within 10 ms"):
            await limiter.acquire_within(0.010)
        assert waits.lag_ms >= 10.0 and waits.above_since is not None  # a refused wait: one of max_wait
        cut = asyncio.create_task(limiter.acquire_within(10.0))
        await asyncio.sleep(0.02)
        cut.cancel()  # the caller left while it waited: its wait counts too
        with pytest.raises(asyncio.CancelledError):
            await cut
        assert waits.lag_ms >= 15.0 and waits.above_since is not None and limiter.in_flight == 1
        limiter.release()
        await limiter.acquire_within(1.0)  # a place free at once: a wait of 0 ends the run of long ones
        assert waits.above_since is None

    asyncio.run(run())


def test_a_cancelled_waiter_leaves_no_place_taken() -> None:
    async def run() -> None:
        limiter = Limiter(1, name="q")
        await limiter.acquire_within(0.0)
        waiting = asyncio.create_task(limiter.acquire_within(10.0))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        limiter.release()
        assert limiter.in_flight == 0

    asyncio.run(run())


@pytest.mark.parametrize(("target", "interval"), [(0.0, 100.0), (5.0, -1.0)])
def test_loop_lag_rejects_bad_settings(target: float, interval: float) -> None:
    with pytest.raises(ValueError, match="must be > 0"):
        LoopLag(target, interval)


# -- a shard ----------------------------------------------------------------------------------------


@pytest.fixture
def busy_lexical(built: Path, request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    """A lexical shard slowed by DELAY_MS per Retrieve, with the queue bound the test names."""
    server = spawn(shard_args("lexical", built / "index", extra=["--test-delay-ms", DELAY_MS,
                                                                 "--max-queue", str(request.param)]))
    try:
        yield server
    finally:
        server.stop()


def _retrieve_together(address: str, timeouts: Sequence[float]) -> list[grpc.StatusCode]:
    """Retrieve calls with these deadlines, the first alone and the others 50 ms after it, at once
    (asyncio: the sync client's calls from several threads reach the server one after another)."""

    async def run() -> list[grpc.StatusCode]:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = shard_pb2_grpc.ShardStub(channel)
            request = shard_pb2.RetrieveRequest(query=convert.query_to_proto("love night"), quota=3)
            await stub.Retrieve(request, timeout=30)  # connection up, worker warm

            async def call(timeout: float, after_s: float) -> grpc.StatusCode:
                await asyncio.sleep(after_s)
                try:
                    await stub.Retrieve(request, timeout=timeout)
                except grpc.aio.AioRpcError as err:
                    if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                        assert "overloaded" in (err.details() or "")
                    return err.code()
                return grpc.StatusCode.OK

            return list(await asyncio.gather(*(call(t, 0.05 if i else 0.0) for i, t in enumerate(timeouts))))

    return asyncio.run(run())


def _queue_params(address: str) -> dict[str, int]:
    with ShardClient(address) as client:
        return {k.removeprefix("queue."): int(v) for k, v in client.describe().params.items() if k.startswith("queue.")}


@pytest.mark.parametrize("busy_lexical", [1], indirect=True)
def test_a_full_shard_refuses_at_once_with_resource_exhausted(busy_lexical: ServerProcess) -> None:
    codes = Counter(_retrieve_together(busy_lexical.address, [30.0, 30.0, 30.0]))
    assert codes[grpc.StatusCode.OK] >= 1 and codes[grpc.StatusCode.RESOURCE_EXHAUSTED] >= 1
    assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    queue = _queue_params(busy_lexical.address)
    assert queue["max"] == 1 and queue["shed"] == codes[grpc.StatusCode.RESOURCE_EXHAUSTED]


@pytest.mark.parametrize("busy_lexical", [0], indirect=True)
def test_a_request_whose_deadline_passes_in_the_queue_is_not_run(busy_lexical: ServerProcess) -> None:
    """The second call waits behind the first for DELAY_MS, past its 0.1 s deadline: the shard
    drops it unrun (expired), and only the warm-up and the first call reach the strategy."""
    codes = _retrieve_together(busy_lexical.address, [30.0, 0.1])
    assert codes == [grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED]
    deadline = time.monotonic() + 10
    while (queue := _queue_params(busy_lexical.address))["expired"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)  # the drop is counted when the worker frees up
    assert queue["expired"] == 1 and queue["admitted"] == 3 and queue["shed"] == 0


# -- the broker -------------------------------------------------------------------------------------


def _search_together(address: str, n: int) -> list[broker_pb2.SearchResponse | grpc.StatusCode]:
    """n searches at once, after one alone (connections up)."""

    async def run() -> list[broker_pb2.SearchResponse | grpc.StatusCode]:
        async with AsyncBrokerClient(address) as client:
            await client.search("love", budget_ms=5000)

            async def call() -> broker_pb2.SearchResponse | grpc.StatusCode:
                try:
                    return await client.search("love night", k=5, budget_ms=5000)
                except grpc.aio.AioRpcError as err:
                    return err.code()

            return list(await asyncio.gather(*(call() for _ in range(n))))

    return asyncio.run(run())


@pytest.fixture
def cluster_parts() -> Iterator[list[ServerProcess]]:
    parts: list[ServerProcess] = []
    yield parts
    for p in reversed(parts):
        p.stop()


def test_a_broker_at_its_bound_answers_resource_exhausted(built: Path, cluster_parts: list[ServerProcess]) -> None:
    shard = spawn(shard_args("lexical", built / "index", extra=["--test-delay-ms", DELAY_MS, "--max-queue", "0"]))
    cluster_parts.append(shard)
    broker = spawn(broker_args(config(built, "state-bound", policy="static", max_in_flight=1),
                               {"lexical": shard.address}, 0))
    cluster_parts.append(broker)
    outcomes = _search_together(broker.address, 3)
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in outcomes
    answered = [o for o in outcomes if isinstance(o, broker_pb2.SearchResponse)]
    assert answered and all(not r.degraded and r.results for r in answered)


def test_a_shedding_shard_degrades_the_search_unless_no_strategy_answered(
        built: Path, cluster_parts: list[ServerProcess]) -> None:
    """Lexical takes one search at a time; attribute answers every one. Searches sent together get
    lexical's answer or, refused by it, a degraded answer from attribute alone; never an error.
    Over lexical alone, a refused search has no strategy left: RESOURCE_EXHAUSTED."""
    lexical = spawn(shard_args("lexical", built / "index", extra=["--test-delay-ms", DELAY_MS, "--max-queue", "1"]))
    cluster_parts.append(lexical)
    attribute = spawn(shard_args("attribute", built / "index"))
    cluster_parts.append(attribute)
    both = spawn(broker_args(config(built, "state-shed", policy="static", max_in_flight=0),
                             {"lexical": lexical.address, "attribute": attribute.address}, 0))
    cluster_parts.append(both)
    outcomes = _search_together(both.address, 3)
    assert all(isinstance(o, broker_pb2.SearchResponse) for o in outcomes), outcomes
    statuses = [{r.strategy: r.status for r in o.strategies} for o in outcomes
                if isinstance(o, broker_pb2.SearchResponse)]
    shed = [o for o, s in zip(outcomes, statuses, strict=True) if s["lexical"] == broker_pb2.STRATEGY_STATUS_ERROR]
    assert shed and all(isinstance(o, broker_pb2.SearchResponse) and o.degraded for o in shed)
    assert all(s["attribute"] == broker_pb2.STRATEGY_STATUS_OK for s in statuses)
    alone = spawn(broker_args(config(built, "state-shed-alone", policy="static", max_in_flight=0),
                              {"lexical": lexical.address}, 0))
    cluster_parts.append(alone)
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in _search_together(alone.address, 3)


# -- configuration ----------------------------------------------------------------------------------


def test_cluster_toml_sets_every_shards_queue_and_the_brokers_bounds(tmp_path: Path) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text("[shards]\nmax_queue = 2\n[broker]\nmax_in_flight = 8\nlag_target_ms = 0\n")
    cluster = ClusterConfig.from_toml(path)
    assert cluster.shard_flags == ["--max-queue", "2"]
    args = broker_args(cluster, {"lexical": "127.0.0.1:1"}, 0)
    assert "max_in_flight=8" in args and "lag_target_ms=0" in args


def test_a_misspelt_shards_key_is_named() -> None:
    with pytest.raises(ValueError, match="`shards` must hold only"):
        ClusterConfig(shards={"max_qeue": 2})


def test_a_negative_shard_queue_is_refused() -> None:
    from services.shard import ShardConfig

    with pytest.raises(ValueError, match="`max_queue` must be >= 0"):
        ShardConfig(strategy="lexical", index="x", max_queue=-1)
