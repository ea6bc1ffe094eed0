"""The Catalog service through a real broker in process over real shard processes: writes are
durable and versioned, the broker's entity table follows them (Feedback on a new id accepted; a
deleted id never in a search and Feedback on it NOT_FOUND), a bad item refuses the whole batch,
`wait` and Status over shards without a live catalog, the CLI, and two brokers on one PostgreSQL
store (a write through one is applied by the other)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest

from core.catalog import Entity, load_catalog
from core.eventlog import EventLog
from core.policy.policies import PolicyConfig, PolicyKind
from ltrr.v1 import broker_pb2, broker_pb2_grpc, catalog_pb2, catalog_pb2_grpc
from services import cli, metrics
from services.broker import BrokerConfig, BrokerService
from services.convert_catalog import write_to_proto
from services.process import ServerProcess, shard_args, spawn
from services.security import SecurityConfig, open_channel, server_interceptors
from tests.services.conftest import broker_serving

pytestmark = pytest.mark.slow
APPLIED, STALE = catalog_pb2.CatalogWriteResult.OUTCOME_APPLIED, catalog_pb2.CatalogWriteResult.OUTCOME_STALE
NEW = Entity(id="new-1", type="track", fields={"title": "zanzibar quokka", "artist": "nobody yet"},
             attributes={"genre": ("jazz",)}, popularity=50.0)


@pytest.fixture(scope="module")
def shards(built: Path) -> Iterator[dict[str, str]]:
    running: dict[str, ServerProcess] = {"lexical": spawn(shard_args("lexical", built / "index"))}
    yield {name: s.address for name, s in running.items()}
    for server in running.values():
        server.stop()


class Stubs:
    def __init__(self, channel: grpc.aio.Channel, address: str) -> None:
        self.broker = broker_pb2_grpc.BrokerStub(channel)
        self.catalog = catalog_pb2_grpc.CatalogStub(channel)
        self.address = address


@asynccontextmanager
async def broker(shards: dict[str, str], state: Path, built: Path, store: str = "",
                 security: SecurityConfig | None = None) -> AsyncIterator[tuple[BrokerService, Stubs]]:
    service = BrokerService(BrokerConfig(shards=shards, state_dir=str(state), store=store,
                                         entities=tuple(load_catalog(built / "catalog.jsonl")), ranker="blend",
                                         policy=PolicyConfig(kind=PolicyKind.STATIC)))
    async with broker_serving(service, server_interceptors(security) if security else None) as (channel, address):
        yield service, Stubs(channel, address)


def write(*items: Entity | str, version: int = 0, wait: bool = False) -> catalog_pb2.CatalogWriteRequest:
    return catalog_pb2.CatalogWriteRequest(writes=[write_to_proto(i, version) for i in items], wait=wait)


async def feedback(stubs: Stubs, entity_id: str) -> broker_pb2.FeedbackResponse:
    response = await stubs.broker.Search(broker_pb2.SearchRequest(query={"text": "love"}, k=5, budget_ms=5000))
    return await stubs.broker.Feedback(broker_pb2.FeedbackRequest(decision_id=response.decision_id,
                                                                  entity_id=entity_id, type=1))


def test_a_new_entity_is_known_to_feedback_once_written(shards: dict[str, str], built: Path, tmp_path: Path) -> None:
    async def go() -> None:
        async with broker(shards, tmp_path / "state", built) as (_, stubs):
            with pytest.raises(grpc.aio.AioRpcError) as unknown:
                await feedback(stubs, NEW.id)
            assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
            response = await stubs.catalog.Write(write(NEW))
            assert [(r.id, r.outcome, r.position) for r in response.results] == [(NEW.id, APPLIED, 1)]
            assert response.position == 1 and response.results[0].version > 1_600_000_000 * 10**6  # now, in µs
            assert not (await feedback(stubs, NEW.id)).duplicate
        async with broker(shards, tmp_path / "state", built) as (_, stubs):  # a restart replays the log
            assert not (await feedback(stubs, NEW.id)).duplicate

    asyncio.run(go())


def test_a_deleted_entity_is_never_served_and_feedback_on_it_is_not_found(shards: dict[str, str], built: Path,
                                                                          tmp_path: Path) -> None:
    async def go() -> None:
        async with broker(shards, tmp_path / "state", built) as (_, stubs):
            request = broker_pb2.SearchRequest(query={"text": "love"}, k=10, budget_ms=5000)
            before = [r.entity_id for r in (await stubs.broker.Search(request)).results]
            gone = before[:2]
            response = await stubs.catalog.Write(write(*gone))
            assert [r.outcome for r in response.results] == [APPLIED, APPLIED]
            after = [r.entity_id for r in (await stubs.broker.Search(request)).results]
            # the lexical shard serves no live catalog yet: the broker drops the deleted ids itself
            assert after and not set(gone) & set(after) and after[:len(before) - 2] == before[2:len(after) + 2]
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await feedback(stubs, gone[0])
            assert refused.value.code() == grpc.StatusCode.NOT_FOUND
            assert "not in the catalog" in str(refused.value.details())
            # a newer upsert brings it back
            await stubs.catalog.Write(write(Entity(id=gone[0], fields={"title": "love"})))
            assert not (await feedback(stubs, gone[0])).duplicate

    asyncio.run(go())


def counted(outcome: str) -> float:
    return metrics.BROKER.get_sample_value("ltrr_broker_catalog_writes_total", {"outcome": outcome}) or 0.0


def test_versions_stale_and_idempotent(shards: dict[str, str], built: Path, tmp_path: Path) -> None:
    before = {o: counted(o) for o in ("applied", "stale")}

    async def go() -> None:
        async with broker(shards, tmp_path / "state", built) as (_, stubs):
            first = await stubs.catalog.Write(write(NEW, version=5))
            again = await stubs.catalog.Write(write(NEW, version=5))
            older = await stubs.catalog.Write(write(NEW.id, version=4))  # a late delete
            assert [r.outcome for r in (*first.results, *again.results, *older.results)] == [APPLIED, STALE, STALE]
            assert again.position == 0 and older.results[0].position == 0
            assert not (await feedback(stubs, NEW.id)).duplicate  # the stale delete changed nothing

    asyncio.run(go())
    assert {o: counted(o) - before[o] for o in before} == {"applied": 1, "stale": 2}


def test_a_write_needs_the_token_when_the_broker_requires_one(shards: dict[str, str], built: Path,
                                                              tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")

    async def go() -> None:
        async with broker(shards, tmp_path / "state", built, security=SecurityConfig(token_file=str(token))) \
                as (_, stubs):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stubs.catalog.Write(write(NEW))
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            await stubs.catalog.Status(catalog_pb2.CatalogStatusRequest())  # a read needs none

            def with_token() -> int:
                with open_channel(stubs.address, SecurityConfig(token_file=str(token))) as channel:
                    return int(catalog_pb2_grpc.CatalogStub(channel).Write(write(NEW), timeout=10).position)

            assert await asyncio.to_thread(with_token) == 1

    asyncio.run(go())


def test_a_broker_killed_during_a_write_stream_loses_no_acknowledged_write(shards: dict[str, str], built: Path,
                                                                           tmp_path: Path) -> None:
    """SIGKILL of a broker process receiving single writes: every acknowledged write is in the
    catalog log (at most the one in flight beyond them), and the restarted broker applies them all."""
    state = tmp_path / "state"
    args = ["broker", "--state", str(state), "--catalog", str(built / "catalog.jsonl"), "--port", "0",
            "--shard", f"lexical={shards['lexical']}", "--set", "policy=static"]
    server = spawn(args)
    acked: list[tuple[str, int]] = []
    try:
        with open_channel(server.address) as channel:
            stub = catalog_pb2_grpc.CatalogStub(channel)

            def stream() -> None:
                for i in range(100_000):
                    try:
                        response = stub.Write(write(Entity(id=f"k{i}", fields={"title": f"kill {i}"})), timeout=5)
                    except grpc.RpcError:
                        return
                    acked.append((f"k{i}", int(response.position)))

            sender = threading.Thread(target=stream)
            sender.start()
            deadline = time.monotonic() + 60
            while len(acked) < 30 and sender.is_alive() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(acked) >= 30, "the write stream stopped before the kill"
            server.kill()
            sender.join()
        with EventLog(state / "events.sqlite") as store:
            logged = [(r.write.entity_id, r.position) for r in store.catalog_after(0, 100_000)]
        assert logged[:len(acked)] == acked and len(logged) - len(acked) <= 1
        server = spawn(args)
        with open_channel(server.address) as channel:
            status = catalog_pb2_grpc.CatalogStub(channel).Status(catalog_pb2.CatalogStatusRequest(), timeout=10)
        assert status.replicas[0].applied_position == status.log_position == len(logged)
    finally:
        server.stop()


def test_a_bad_item_refuses_the_whole_batch(shards: dict[str, str], built: Path, tmp_path: Path) -> None:
    async def go() -> None:
        async with broker(shards, tmp_path / "state", built) as (_, stubs):
            bad = write_to_proto(NEW)
            bad.upsert.popularity = float("nan")
            request = catalog_pb2.CatalogWriteRequest(writes=[write_to_proto(Entity(id="fine")), bad])
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stubs.catalog.Write(request)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert str(refused.value.details()).startswith("writes[1].upsert.popularity: must be finite")
            empty = catalog_pb2.CatalogWriteRequest(writes=[catalog_pb2.CatalogWrite(version=3)])
            with pytest.raises(grpc.aio.AioRpcError, match=r"writes\[0\]: must set an operation"):
                await stubs.catalog.Write(empty)
            status = await stubs.catalog.Status(catalog_pb2.CatalogStatusRequest())
            assert status.log_position == 0 and status.replicas[0].applied_position == 0  # nothing written

    asyncio.run(go())


def test_wait_and_status_over_shards_without_a_live_catalog(shards: dict[str, str], built: Path,
                                                            tmp_path: Path) -> None:
    async def go() -> None:
        async with broker(shards, tmp_path / "state", built) as (_, stubs):
            response = await stubs.catalog.Write(write(NEW, wait=True))
            assert response.visible  # no replica serves a live catalog: nothing to wait for
            status = await stubs.catalog.Status(catalog_pb2.CatalogStatusRequest())
            assert status.log_position == 1 and status.visibility_bound_ms == 1000
            own, lexical = status.replicas
            assert (own.strategy, own.applied_position, own.pending_entities, own.error) == ("broker", 1, 1, "")
            assert (lexical.strategy, lexical.address) == ("lexical", shards["lexical"])
            assert (lexical.live, lexical.applied_position, lexical.error) == (False, 0, "")  # a static shard

    asyncio.run(go())


def run_cli(argv: list[str]) -> int:
    return cli.main(argv)


def test_the_cli_prints_one_line_per_item_and_fails_on_a_bad_line(shards: dict[str, str], built: Path,
                                                                   tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.jsonl"
    good.write_text('{"id": "a", "fields": {"title": "x"}}\n{"id": "b", "popularity": 2}\n\n')
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "c"}\n{"id": "d"}\n{"id": "e"}\n{"id": "f", "popularity": -1}\n')

    async def go() -> None:
        async with broker(shards, tmp_path / "state", built) as (_, stubs):
            target = ["--target", stubs.address]
            assert await asyncio.to_thread(run_cli, ["catalog", "upsert", str(good), *target]) == 0
            out = capsys.readouterr().out.splitlines()
            assert out[0].startswith("a applied v") and out[0].endswith(" @1") and out[1].endswith(" @2")
            assert out[2].startswith("2 writes: 2 applied, 0 stale, 0 failed in ") and out[2].endswith(" writes/s)")
            code = await asyncio.to_thread(run_cli, ["catalog", "upsert", str(bad), "--batch", "2", *target])
            out = capsys.readouterr().out.splitlines()
            assert code == 1
            assert out[:2] == ["c applied v" + out[0].split(" v")[1].split(" ")[0] + " @3", out[1]]
            assert out[2] == f"error: {bad}:4: entity 'f': popularity must be finite and >= 0, got -1.0"
            assert out[3] == f"e error: not written: its batch holds a bad line ({bad}:4)"
            assert (await stubs.catalog.Status(catalog_pb2.CatalogStatusRequest())).log_position == 4  # not e
            assert await asyncio.to_thread(run_cli, ["catalog", "delete", "a", "zz", *target]) == 0
            out = capsys.readouterr().out.splitlines()
            assert out[0].startswith("a applied v") and out[0].endswith(" @5") and out[1].endswith(" @6")
            assert await asyncio.to_thread(run_cli, ["catalog", "status", *target]) == 0
            out = capsys.readouterr().out.splitlines()
            assert out[0] == "log position 6; visibility bound 1000 ms"
            assert out[1] == "broker: applied @6, 5 pending entities"  # a, b, c, d and zz written

    asyncio.run(go())


def test_a_write_through_one_broker_is_applied_by_the_other(shards: dict[str, str], built: Path, tmp_path: Path,
                                                            pg_url: str) -> None:
    async def go() -> None:
        async with broker(shards, tmp_path / "a", built, pg_url) as (_, a), \
                broker(shards, tmp_path / "b", built, pg_url) as (_, b):
            response = await a.catalog.Write(write(NEW))
            deadline = time.monotonic() + 5.0  # a bounded wait for b's tail, not a timing check
            while True:
                status = await b.catalog.Status(catalog_pb2.CatalogStatusRequest())
                if status.replicas[0].applied_position >= response.position or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            assert status.log_position == response.position == status.replicas[0].applied_position
            assert not (await feedback(b, NEW.id)).duplicate

    asyncio.run(go())
