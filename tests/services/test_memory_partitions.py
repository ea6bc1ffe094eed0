"""Memory split by query key, with replicas: the outbox's per-replica cursors, and asking only the
owner; Understand from any attribute partition. Real in-process grpc.aio servers on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from core.eventlog import DecisionRecord, EventLog, EventRecord
from core.merge import StrategyList
from core.partitions import query_partition
from core.types import EventType
from ltrr.v1 import common_pb2, shard_pb2, shard_pb2_grpc
from services.fanout import ShardPool, fan_out, understand
from services.outbox import CURSOR, MemoryOutboxes, OutboxConfig, replica_cursor
from tests.services.conftest import shard_servers

TEXTS = [f"query number {i}" for i in range(40)]


class Shard(shard_pb2_grpc.ShardServicer):
    """Records what it was sent; while `down`, every rpc is UNAVAILABLE."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.down = False
        self.learned: list[str] = []
        self.batches: list[int] = []  # events per Learn call
        self.asked: list[str] = []

    async def _check(self, context: grpc.aio.ServicerContext) -> None:
        if self.down:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"{self.name} is down")

    async def Learn(self, request: shard_pb2.LearnRequest, context: grpc.aio.ServicerContext
                    ) -> shard_pb2.LearnResponse:
        await self._check(context)
        self.learned.extend(e.event_id for e in request.events)
        self.batches.append(len(request.events))
        return shard_pb2.LearnResponse(accepted=len(request.events))

    async def Retrieve(self, request: shard_pb2.RetrieveRequest, context: grpc.aio.ServicerContext
                       ) -> shard_pb2.RetrieveResponse:
        await self._check(context)
        self.asked.append(request.query.text)
        return shard_pb2.RetrieveResponse(candidates=[common_pb2.Candidate(entity_id=self.name, score=1.0, rank=1)])

    async def Understand(self, request: shard_pb2.UnderstandRequest, context: grpc.aio.ServicerContext
                         ) -> shard_pb2.UnderstandResponse:
        await self._check(context)
        return shard_pb2.UnderstandResponse(interpretations=[common_pb2.Interpretation(free_text=self.name)])


@asynccontextmanager
async def shards(names: list[str]) -> AsyncIterator[tuple[list[Shard], list[str]]]:
    servicers = [Shard(name) for name in names]
    async with shard_servers(servicers) as (addresses, _):
        yield servicers, addresses


def run(go: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(go())


def logged(path: Path, *, clicks: bool = True) -> EventLog:
    """An event log with one decision per text of TEXTS and, with `clicks`, one click on each
    (`click`: event id = its text's index)."""
    log = EventLog(path)
    for i, text in enumerate(TEXTS):
        log.record_decision(DecisionRecord(
            decision_id=f"d{i}", ts=1.0, query_text=text, context={}, features=np.zeros(4), strategies=("memory",),
            quotas=(10,), allocation=0, propensity=1.0, marginals=(1.0,), policy="static",
            lists=(StrategyList("memory", ["x"], np.ones(1, dtype=np.float32)),), final=("x",)))
        if clicks:
            click(log, i)
    return log


def click(log: EventLog, i: int) -> int:
    """Log the click on decision i; its position."""
    return log.record_events([EventRecord(event_id=f"e{i}", decision_id=f"d{i}", entity_id="x", type=EventType.CLICK,
                                          value=0.0, ts=2.0, reward=1.0)])[0]


async def on_log(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


async def settle(outboxes: MemoryOutboxes) -> None:
    """Until every replica's outbox has nothing left to send (bounded)."""
    for _ in range(200):
        await asyncio.sleep(0.02)
        if outboxes.lag() == 0:
            return


def owned(p: int) -> list[str]:
    return [f"e{i}" for i, text in enumerate(TEXTS) if query_partition(text, 2) == p]


def test_each_replica_gets_its_partitions_events_and_one_that_was_down_catches_up_alone(tmp_path: Path) -> None:
    async def go() -> None:
        log = logged(tmp_path / "events.sqlite")
        async with shards(["m00", "m01", "m10", "m11"]) as (servicers, addresses):
            servicers[3].down = True  # partition 1, replica 1
            pool = ShardPool({"memory": [addresses[:2], addresses[2:]]})
            stubs = [[r.stub for r in part.replicas] for part in pool.partitions["memory"]]
            outboxes = MemoryOutboxes(log, stubs, on_log, OutboxConfig(max_backoff_s=0.05))
            outboxes.start()
            outboxes.notify(log.last_event_rowid())
            for _ in range(100):
                await asyncio.sleep(0.02)
                if all(len(s.learned) == len(owned(p)) for s, p in zip(servicers[:3], (0, 0, 1), strict=True)):
                    break
            assert [s.learned for s in servicers] == [owned(0), owned(0), owned(1), []]
            assert outboxes.lag() == log.last_event_rowid()  # the down replica's: nothing acknowledged yet
            servicers[3].down = False
            await settle(outboxes)
            await outboxes.stop()
            await pool.close()
        assert owned(0) and owned(1)  # TEXTS spread over both partitions
        assert [s.learned for s in servicers] == [owned(0), owned(0), owned(1), owned(1)]
        assert [log.cursor(replica_cursor(p, r)) for p in (0, 1) for r in (0, 1)] == [log.last_event_rowid()] * 4
        log.close()

    run(go)


def test_events_logged_while_the_outbox_lingers_go_in_one_learn_call(tmp_path: Path) -> None:
    """The outbox waits linger_s after the first event wakes it: the next ones, logged 10 ms apart,
    join its Learn call and cursor write."""
    async def go() -> None:
        log = logged(tmp_path / "events.sqlite", clicks=False)
        async with shards(["m"]) as (servicers, addresses):
            pool = ShardPool({"memory": [[addresses[0]]]})
            outboxes = MemoryOutboxes(log, [[pool.partitions["memory"][0].replicas[0].stub]], on_log,
                                      OutboxConfig(linger_s=1.0))
            outboxes.start()
            for i in range(5):
                outboxes.notify(click(log, i))
                await asyncio.sleep(0.01)
            await settle(outboxes)
            await outboxes.stop()
            await pool.close()
        assert servicers[0].batches == [5] and servicers[0].learned == [f"e{i}" for i in range(5)]
        assert log.cursor(CURSOR) == 5  # a lone memory shard keeps the older cursor name
        log.close()

    run(go)


def test_an_older_logs_memory_cursor_is_partition_0_replica_0s(tmp_path: Path) -> None:
    """A log written when one memory shard had cursor `memory` (at event 10): partition 0 replica 0
    goes on from there; the replica that never had a cursor starts from the beginning."""
    async def go() -> None:
        log = logged(tmp_path / "events.sqlite")
        log.set_cursor(CURSOR, 10)
        async with shards(["m00", "m10", "m01"]) as (servicers, addresses):
            pool = ShardPool({"memory": [[addresses[0], addresses[2]], [addresses[1]]]})
            stubs = [[r.stub for r in part.replicas] for part in pool.partitions["memory"]]
            outboxes = MemoryOutboxes(log, stubs, on_log)
            outboxes.start()
            await settle(outboxes)
            await outboxes.stop()
            await pool.close()
        later = {f"e{i}" for i in range(10, len(TEXTS))}  # positions 11.. are e10..
        assert servicers[0].learned == [e for e in owned(0) if e in later]
        assert servicers[2].learned == owned(0) and servicers[1].learned == owned(1)
        log.close()

    run(go)


def test_memory_asks_only_the_partition_owning_the_query(tmp_path: Path) -> None:
    async def go() -> None:
        async with shards(["m0", "m1"]) as (servicers, addresses):
            pool = ShardPool({"memory": [[addresses[0]], [addresses[1]]]})
            for text in TEXTS[:12]:
                (answer,) = await fan_out(pool, common_pb2.Query(text=text), {"memory": 10}, 2.0)
                assert answer.hits is not None and answer.hits.entity_ids == [f"m{query_partition(text, 2)}"]
                assert answer.coverage == 1.0
            await pool.close()
        for p in (0, 1):
            assert servicers[p].asked == [t for t in TEXTS[:12] if query_partition(t, 2) == p]

    run(go)


def test_understand_goes_to_any_attribute_partition_that_answers(tmp_path: Path) -> None:
    async def go() -> None:
        async with shards(["a0", "a1"]) as (servicers, addresses):
            servicers[0].down = True
            pool = ShardPool({"attribute": [[addresses[0]], [addresses[1]]]})
            got = [await understand(pool, common_pb2.Query(text="love"), 2.0) for _ in range(4)]
            await pool.close()
        assert [r.interpretations[0].free_text if r else None for r in got] == ["a1"] * 4

    run(go)
