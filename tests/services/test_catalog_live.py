"""A write through the broker's Catalog service reaches a live shard process through the event
store's catalog log: `wait` returns once the shard has applied it, a search then finds it (and no
longer finds a deleted entity), and a shard SIGKILLed and started again still serves every
acknowledged write (the log is its write-ahead log)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.catalog import Entity
from core.eventstore import open_store
from ltrr.v1 import broker_pb2, catalog_pb2
from services.client import ShardClient
from services.process import ServerProcess, shard_args, spawn
from tests.services.test_catalog_service import APPLIED, broker, write

pytestmark = pytest.mark.slow
RELEASE = Entity(id="release-1", type="track", fields={"title": "quokka marmalade sunrise", "artist": "nobody yet"},
                 attributes={"genre": ("jazz",)}, popularity=60.0)


def live_shard(built: Path, state: Path) -> ServerProcess:
    flags = ["--store", str(state / "events.sqlite"), "--catalog", str(built / "catalog.jsonl"),
             "--live-dir", str(state / "live" / "lexical")]
    return spawn(shard_args("lexical", built / "index", None, flags))


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "state").mkdir()
    open_store(tmp_path / "state" / "events.sqlite").close()  # the shard reads the log before the broker starts
    yield tmp_path / "state"


def titles_found(response: broker_pb2.SearchResponse) -> set[str]:
    return {r.entity_id for r in response.results}


def test_wait_returns_once_a_live_shard_serves_the_write_and_a_restart_keeps_it(built: Path, state: Path) -> None:
    shard = live_shard(built, state)
    search = broker_pb2.SearchRequest(query={"text": "quokka marmalade sunrise"}, k=5, budget_ms=5000,
                                      plan={"lexical": 50})

    async def go(shards: dict[str, str], check_restart: bool) -> None:
        async with broker(shards, state, built) as (_, stubs):
            if check_restart:
                assert RELEASE.id in titles_found(await stubs.broker.Search(search))
                return
            assert RELEASE.id not in titles_found(await stubs.broker.Search(search))
            response = await stubs.catalog.Write(write(RELEASE, wait=True))
            assert [r.outcome for r in response.results] == [APPLIED] and response.visible
            assert RELEASE.id in titles_found(await stubs.broker.Search(search))
            status = await stubs.catalog.Status(catalog_pb2.CatalogStatusRequest())
            lexical = status.replicas[1]
            assert (lexical.live, lexical.applied_position, lexical.error) == (True, response.position, "")

    try:
        asyncio.run(go({"lexical": shard.address}, check_restart=False))
        shard.kill()
        shard = live_shard(built, state)
        asyncio.run(go({"lexical": shard.address}, check_restart=True))
    finally:
        shard.stop()


def test_a_delete_with_wait_is_gone_from_the_live_shard(built: Path, state: Path) -> None:
    shard = live_shard(built, state)
    search = broker_pb2.SearchRequest(query={"text": "quokka marmalade sunrise"}, k=5, budget_ms=5000,
                                      plan={"lexical": 50})

    def on_shard() -> set[str]:
        with ShardClient(shard.address) as client:
            return {c.entity_id for c in client.retrieve(RELEASE.fields["title"], 10).candidates}

    async def go() -> None:
        async with broker({"lexical": shard.address}, state, built) as (_, stubs):
            assert (await stubs.catalog.Write(write(RELEASE, wait=True))).visible
            assert RELEASE.id in on_shard()
            assert (await stubs.catalog.Write(write(RELEASE.id, wait=True))).visible
            assert RELEASE.id not in on_shard()  # the shard itself, not only the broker's filter
            assert RELEASE.id not in titles_found(await stubs.broker.Search(search))

    try:
        asyncio.run(go())
    finally:
        shard.stop()
