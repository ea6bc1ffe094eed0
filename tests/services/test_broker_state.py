"""The broker's state under faults: a disk that fails, a memory shard that is down, a damaged
snapshot or log, a start that has not finished. The broker runs in process on a real grpc.aio
server on a free port, so the test can reach its event log's connection; shards are processes."""

from __future__ import annotations

import asyncio
import gc
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import grpc
import numpy as np
import pytest

from core.catalog import load_catalog
from core.errors import NotReadyError, StateError
from core.eventlog import EventLog
from core.policy.features import DIM
from core.policy.policies import BanditPolicy, PolicyConfig, PolicyKind
from ltrr.v1 import broker_pb2, broker_pb2_grpc, common_pb2
from services import broker as broker_module
from services.broker import BrokerConfig, BrokerService
from services.client import ShardClient
from services.process import ServerProcess, shard_args, spawn
from tests.services.conftest import broker_serving, wait_for_events

pytestmark = pytest.mark.slow
STATIC = PolicyConfig(kind=PolicyKind.STATIC)


@contextmanager
def shard(name: str, built: Path, *extra: str, **options: object) -> Iterator[ServerProcess]:
    server = spawn(shard_args(name, built / "index", options, list(extra)))
    try:
        yield server
    finally:
        server.stop()


@asynccontextmanager
async def broker(shards: dict[str, str], state: Path, built: Path, *, freeze: bool = False, **settings: object
                 ) -> AsyncIterator[tuple[BrokerService, broker_pb2_grpc.BrokerStub]]:
    """A started BrokerService behind a grpc.aio server on a free loopback port (broker_serving), and a stub of it."""
    service = BrokerService(BrokerConfig(shards=shards, state_dir=str(state),
                                         entities=tuple(load_catalog(built / "catalog.jsonl")), ranker="rrf",
                                         **settings), freeze=freeze)  # type: ignore[arg-type]
    async with broker_serving(service) as (channel, _):
        yield service, broker_pb2_grpc.BrokerStub(channel)


def search(text: str) -> broker_pb2.SearchRequest:
    return broker_pb2.SearchRequest(query={"text": text}, k=5, budget_ms=5000)


def test_a_failing_disk_fails_the_search_instead_of_serving_an_unjoinable_decision(built: Path,
                                                                                     tmp_path: Path) -> None:
    """Regression: DecisionWriter dropped the future of a failed batch write, so a search answered
    with a decision id that Feedback later called NOT_FOUND. Here the log's file may not grow
    (SQLite's max_page_count: a real 'database or disk is full'), then may again."""
    served: list[tuple[str, str]] = []

    async def go() -> None:
        with shard("lexical", built) as lexical:
            async with broker({"lexical": lexical.address}, tmp_path / "state", built,
                              policy=PolicyConfig(kind=PolicyKind.STATIC)) as (service, stub):
                r = await stub.Search(search("love"))
                served.append((r.decision_id, r.results[0].entity_id))
                assert service.writer is not None and isinstance(service.writer.log, EventLog)
                conn = service.writer.log._conn
                pages = await service.writer.run(lambda: conn.execute("PRAGMA page_count").fetchone()[0])
                await service.writer.run(conn.execute, f"PRAGMA max_page_count={pages}")
                failed = 0
                for i in range(200):  # the pages left fill up: searches whose decision does not fit fail
                    try:
                        r = await stub.Search(search(["night river love", "blue", "fire"][i % 3]))
                    except grpc.aio.AioRpcError as err:
                        assert err.code() == grpc.StatusCode.UNAVAILABLE
                        assert "could not be stored" in (err.details() or "")
                        failed += 1
                        if failed == 5:
                            break
                        continue
                    served.append((r.decision_id, r.results[0].entity_id))
                assert failed == 5
                await service.writer.run(conn.execute, "PRAGMA max_page_count=1000000")
                for text in ("love", "night", "blue river"):
                    r = await stub.Search(search(text))
                    served.append((r.decision_id, r.results[0].entity_id))
            # every decision id that was served joins, after a restart too
            async with broker({"lexical": lexical.address}, tmp_path / "state", built,
                              policy=PolicyConfig(kind=PolicyKind.STATIC)) as (service, stub):
                for decision_id, entity in served:
                    response = await stub.Feedback(broker_pb2.FeedbackRequest(
                        decision_id=decision_id, entity_id=entity, type=common_pb2.EVENT_TYPE_CLICK))
                    assert not response.duplicate

    asyncio.run(go())
    with EventLog(tmp_path / "state" / "events.sqlite") as log:
        assert log.counts() == (len(served), len(served))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_outbox_brings_a_memory_shard_that_was_down_back_in_step(built: Path, tmp_path: Path) -> None:
    """Regression: feedback forwarded to the memory shard was fire-and-forget, so a shard that was
    down missed it for good. Now the shard catches up from the broker's log, once per event id,
    across a shard restart and a broker restart."""
    port = free_port()
    memory_state = tmp_path / "memory"

    async def feedback(stub: broker_pb2_grpc.BrokerStub, n: int, tag: str) -> int:
        sent = 0
        for i in range(n):
            r = await stub.Search(search(["love", "night", "blue"][i % 3]))
            if r.results:
                await stub.Feedback(broker_pb2.FeedbackRequest(
                    decision_id=r.decision_id, entity_id=r.results[0].entity_id, event_id=f"{tag}{i}",
                    type=common_pb2.EVENT_TYPE_PLAY))
                sent += 1
        return sent

    async def go() -> None:
        with shard("lexical", built) as lexical:
            shards = {"lexical": lexical.address, "memory": f"127.0.0.1:{port}"}
            async with broker(shards, tmp_path / "state", built, policy=STATIC) as (_, stub):
                first = await feedback(stub, 12, "a")  # the memory shard is not running yet
                with shard("memory", built, "--port", str(port), state_dir=memory_state) as memory:
                    assert await asyncio.to_thread(wait_for_events, memory.address, first) == first
                    second = await feedback(stub, 9, "b")
                    assert await asyncio.to_thread(wait_for_events, memory.address, first + second) == first + second
            # broker restarted, memory shard restarted: nothing is forwarded twice, nothing lost
            async with broker(shards, tmp_path / "state", built, policy=STATIC) as (_, stub):
                third = await feedback(stub, 6, "c")
                with shard("memory", built, "--port", str(port), state_dir=memory_state) as memory:
                    total = first + second + third
                    assert await asyncio.to_thread(wait_for_events, memory.address, total) == total
                    with ShardClient(memory.address) as client:
                        assert int(client.describe().params["events"]) == total

    asyncio.run(go())


def start_is_refused(state: Path, match: str) -> None:
    """A broker over `state` refuses to start with a StateError matching `match`."""
    async def go() -> None:
        service = BrokerService(BrokerConfig(shards={"lexical": "127.0.0.1:1"}, state_dir=str(state)))
        with pytest.raises(StateError, match=match):
            await service.start()
        await service.close()

    asyncio.run(go())


def test_a_damaged_snapshot_is_refused_naming_the_file(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    BanditPolicy(("lexical",), DIM).save(state / "policy.npz")
    data = (state / "policy.npz").read_bytes()
    (state / "policy.npz").write_bytes(data[: len(data) // 2])  # truncated mid-file
    start_is_refused(state, r"policy\.npz.*damaged.*move it aside")


def test_a_damaged_event_log_is_refused_naming_the_file(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "events.sqlite").write_bytes(np.random.default_rng(0).bytes(8192))
    start_is_refused(state, r"events\.sqlite.*move it aside")


def test_nothing_is_served_before_the_start_has_finished(tmp_path: Path) -> None:
    """Bind first, load after: until then every call is UNAVAILABLE (NotReadyError), health NOT_SERVING."""
    async def go() -> None:
        service = BrokerService(BrokerConfig(shards={"lexical": "127.0.0.1:1"}, state_dir=str(tmp_path)))
        with pytest.raises(NotReadyError, match="still loading"):
            service._ready()
        await service.close()

    asyncio.run(go())


def test_a_broker_does_not_refreeze_while_its_server_still_holds_calls(tmp_path: Path) -> None:
    """Behind a ServiceLoop relay, a call the server took but no handler runs yet (or any more) is
    not idle time: a freeze then would keep that call's objects out of collection for good."""
    async def go() -> None:
        held = [1]
        service = BrokerService(BrokerConfig(shards={"lexical": "127.0.0.1:1"}, state_dir=str(tmp_path)),
                                freeze=True, calls=lambda: held[0])
        assert service.refreezer is not None and service.refreezer.idle is not None
        assert not service.refreezer.idle()
        held[0] = 0
        assert service.refreezer.idle()
        await service.close()

    asyncio.run(go())


def test_a_periodic_snapshot_plus_the_log_after_it_is_the_live_policy(built: Path, tmp_path: Path) -> None:
    """Snapshots are built from a copy taken on the event loop and written on another thread while
    feedback keeps coming: the snapshot taken mid-stream, plus a replay of the events logged after
    the position it records, must give exactly the policy and query history the broker has live."""
    import json
    import shutil

    from core.pipeline import SearchPipeline
    from core.policy.history import QueryHistory
    from core.ranking import RRFRanker

    state = tmp_path / "state"
    copies: list[Path] = []

    async def go() -> tuple[BanditPolicy, QueryHistory]:
        with shard("lexical", built) as lexical:
            async with broker({"lexical": lexical.address}, state, built, save_every=7) as (service, stub):
                async def one(i: int) -> None:
                    r = await stub.Search(search(["love", "night", "blue", "fire river"][i % 4]))
                    await stub.Feedback(broker_pb2.FeedbackRequest(
                        decision_id=r.decision_id, entity_id=r.results[i % len(r.results)].entity_id,
                        event_id=f"e{i}", type=common_pb2.EVENT_TYPE_PLAY))
                # 4 at once: the shard's queue bound (--max-queue 4) sheds a fifth concurrent search
                for start in range(0, 60, 4):
                    await asyncio.gather(*(one(i) for i in range(start, start + 4)))
                    if service.snapshot_task is not None:
                        await service.snapshot_task
                    if (state / "policy.npz").exists() and len(copies) < 3:
                        copies.append(tmp_path / f"snapshot-{start}.npz")
                        shutil.copy(state / "policy.npz", copies[-1])
                assert service.pipeline is not None
                live = service.pipeline
                assert isinstance(live.allocator, BanditPolicy)
                return live.allocator, live.history

    policy, history = asyncio.run(go())
    assert copies
    for copy in copies:
        restored = SearchPipeline(BanditPolicy(("lexical",), DIM), RRFRanker())
        saved = restored.allocator.load(copy)  # type: ignore[attr-defined]
        restored.history = QueryHistory.from_json(json.loads(saved["query_history"]))
        with EventLog(state / "events.sqlite") as log:
            after = list(BrokerService._logged_after(log, int(saved["applied_event_rowid"])))
        assert 0 < len(after) < 60
        restored.replay(after)
        got = restored.allocator
        assert isinstance(got, BanditPolicy)
        np.testing.assert_array_equal(got.arms.n, policy.arms.n)
        np.testing.assert_allclose(got.arms.b, policy.arms.b)
        np.testing.assert_allclose(got.fill.b, policy.fill.b)
        assert restored.history.to_json() == history.to_json()


def test_a_query_text_understood_once_is_not_asked_again(built: Path, tmp_path: Path) -> None:
    """The broker caches the attribute shard's readings by query text: once the shard is gone, a
    text it understood before still gets its readings, a new text gets none, and searches are answered."""
    attribute = spawn(shard_args("attribute", built / "index"))
    lexical = spawn(shard_args("lexical", built / "index"))

    async def go() -> None:
        async with broker({"lexical": lexical.address, "attribute": attribute.address}, tmp_path / "state",
                          built) as (service, stub):
            first = await service._understand(search("love").query, 5.0)
            cached = service.understood.get("love")
            assert first and cached is not None and cached.interpretations == first
            assert attribute.stop() == 0, attribute.log_text()
            assert await service._understand(search("love").query, 5.0) == first
            assert await service._understand(search("night").query, 5.0) == []
            assert (await stub.Search(search("love"))).decision_id  # answered, degraded or not

    try:
        asyncio.run(go())
    finally:
        attribute.stop()
        lexical.stop()


@pytest.mark.parametrize("stale_ms", [0, 60_000])
def test_after_a_catalog_change_cached_understanding_serves_until_it_is_too_old(built: Path, tmp_path: Path,
                                                                                stale_ms: int) -> None:
    """A live catalog's change does not drop the cached readings (they feed only the policy's
    features): they serve while younger than understood_stale_ms, and with 0 the broker asks again."""
    attribute = spawn(shard_args("attribute", built / "index"))

    async def go() -> None:
        async with broker({"attribute": attribute.address}, tmp_path / "state", built,
                          understood_stale_ms=stale_ms) as (service, _):
            first = await service._understand(search("love").query, 5.0)
            assert first
            assert attribute.stop() == 0, attribute.log_text()
            assert service.catalog is not None
            service._catalog_changed(service.catalog.live)  # what the catalog follower calls on a change
            again = await service._understand(search("love").query, 1.0)
            assert again == (first if stale_ms else [])  # asked again: the shard is gone

    try:
        asyncio.run(go())
    finally:
        attribute.stop()


@pytest.mark.parametrize("freeze", [True, False])
def test_the_broker_freezes_what_its_searches_built(built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    freeze: bool) -> None:
    """With freeze (a server process's choice), every FREEZE_SEARCHES searches, once no rpc is in
    flight, what the searches built (their decisions, kept for Feedback) leaves the collector's
    reach, and the broker keeps answering; without, nothing is frozen."""
    monkeypatch.setattr(broker_module, "FREEZE_SEARCHES", 3)

    async def go() -> None:
        with shard("lexical", built) as lexical:
            async with broker({"lexical": lexical.address}, tmp_path / "state", built, freeze=freeze,
                              policy=STATIC) as (service, stub):
                first = (await stub.Search(search("love"))).decision_id
                for text in ("night", "blue", "fire"):
                    await stub.Search(search(text))
                decision = service.recent.get(first)
                assert decision is not None
                for _ in range(200):  # the freeze runs FREEZE_DELAY_S after a search (a bounded wait)
                    if service.refreezer is None or service.refreezer.freezes:
                        break
                    await asyncio.sleep(0.01)
                assert (service.refreezer is not None and service.refreezer.freezes >= 1) is freeze
                assert any(o is decision for o in gc.get_objects()) is not freeze
                assert (await stub.Search(search("love"))).results

    try:
        asyncio.run(go())
    finally:
        gc.unfreeze()


class _NoDeadline:
    """The part of a grpc.aio context RelayedContext reads: a caller without a deadline."""

    def time_remaining(self) -> None:
        return None


def test_a_searchs_budget_counts_from_when_the_call_was_taken(tmp_path: Path) -> None:
    """A relayed search that waited for the busy service loop longer than its budget has no time
    left for its shards (TIMEOUT, not the unreachable shard's ERROR), and its took_ms includes the wait."""
    from services.server import RelayedContext

    async def go() -> None:
        service = BrokerService(BrokerConfig(shards={"lexical": "127.0.0.1:1"}, state_dir=str(tmp_path),
                                             policy=PolicyConfig(kind=PolicyKind.STATIC)))
        await service.start()
        try:
            request = broker_pb2.SearchRequest(query=common_pb2.Query(text="love"), k=5, budget_ms=100)
            fresh = await service.Search(request, RelayedContext(_NoDeadline()))  # type: ignore[arg-type]
            late = RelayedContext(_NoDeadline())  # type: ignore[arg-type]
            late.received -= 1.0  # taken 1 s ago, then waited for the service loop
            waited = await service.Search(request, late)
        finally:
            await service.close()
        assert [r.status for r in fresh.strategies] == [broker_pb2.STRATEGY_STATUS_ERROR] and fresh.took_ms < 1000
        assert [r.status for r in waited.strategies] == [broker_pb2.STRATEGY_STATUS_TIMEOUT]
        assert waited.took_ms >= 1000 and waited.degraded

    asyncio.run(go())
