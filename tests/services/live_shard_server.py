"""Test helpers for live shards: a shard server run in process on a free loopback port with a test
catalog log (tests.core.live_writes.ListLog)."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from typing import Any

import grpc

from core.catalog import Entity
from core.catalog_log import CatalogLog
from ltrr.v1 import shard_pb2, shard_pb2_grpc
from services.client import ShardClient
from services.shard import ShardConfig, ShardService
from tests.core.live_writes import ListLog


def as_log(log: ListLog) -> CatalogLog:
    return log


class LiveServer:
    """A ShardService on grpc.aio in a thread of its own (its event loop), started like `ltrr shard`."""

    def __init__(self, config: ShardConfig, log: ListLog, *, freeze: bool = False) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.service = ShardService(config, catalog_log=lambda: as_log(log), freeze=freeze)
        self.server, port = self._run(self._up(), 300)
        self.client = ShardClient(f"127.0.0.1:{port}")

    def _run(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _up(self) -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server()
        shard_pb2_grpc.add_ShardServicer_to_server(self.service, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        await self.service.start()
        return server, port

    def position(self) -> shard_pb2.CatalogPositionResponse:
        return self.client.stub.CatalogPosition(shard_pb2.CatalogPositionRequest(), timeout=10)

    def wait_applied(self, position: int, timeout_s: float = 60.0) -> None:
        """Poll CatalogPosition until it reaches `position` (a bounded wait, not a timing check)."""
        deadline = time.monotonic() + timeout_s
        while self.position().applied_position < position:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the shard did not apply position {position}")
            time.sleep(0.02)

    def ids(self, text: str, quota: int = 10, **kwargs: Any) -> list[str]:
        return [c.entity_id for c in self.client.retrieve(text, quota, **kwargs).candidates]

    def close(self) -> None:
        """Stop the server and the service (once; again is a no-op)."""
        if not self.thread.is_alive():
            return
        self.client.close()
        self._run(self.server.stop(0))
        self._run(self.service.stop(), 120)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def track(eid: str, title: str, base: Entity, **attributes: Any) -> Entity:
    """`base`'s content with a new id, title (artist unchanged) and attributes added."""
    return dataclasses.replace(base, id=eid, fields={**base.fields, "title": title},
                               attributes={**base.attributes, **attributes})


