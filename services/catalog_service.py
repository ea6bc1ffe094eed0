"""The Catalog service on the broker (ltrr.v1.Catalog: Write, Status) and the broker's catalog tail.

Write: the write token (services.security, as on Feedback) -> every item checked
(services.convert_catalog; INVALID_ARGUMENT naming the item, nothing written) -> the batch appended
to the store's catalog log in one transaction on the log's thread (durable when it returns) -> the
broker catches its live table up with the log (its own batch and anything before it, in position
order: the one path, as services.learning for feedback) -> with `wait`, every shard replica of the
topology polled (Shard.CatalogPosition) until it has applied the batch's position or the wait ends.
A replica that answers CatalogPosition UNIMPLEMENTED serves no live catalog: Status reports it and
a wait does not wait for it. Status: the log's newest position, the broker's applied position, then
each replica's.

CatalogFollower keeps the broker's core.catalog_table.LiveTable current: built at start-up from the
offline catalog (--catalog) and the whole log, then caught up after each own write and, on a store
shared with other brokers, every interval_s by a background tail. The log is read on the log's
thread, the table rebuilt on a thread of its own (off the event loop, and never holding up the
decisions' group commits) and swapped on the event loop (`on_swap`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from core.catalog_log import CatalogRecord
from core.catalog_table import LiveTable
from core.errors import InvalidArgumentError, NotReadyError, UnavailableError
from core.eventstore import EventStore
from ltrr.v1 import catalog_pb2, catalog_pb2_grpc, shard_pb2
from services import metrics
from services.convert_catalog import Clock, writes_from_proto
from services.decisions import DecisionWriter
from services.fanout import ShardPool
from services.shard import rpc
from services.tailing import cancelled, tail

log = logging.getLogger("ltrr.catalog")
SERVICE = catalog_pb2.DESCRIPTOR.services_by_name["Catalog"].full_name
DEFAULT_WAIT_TIMEOUT_MS = 10_000
VISIBILITY_BOUND_MS = 1000  # the documented bound (issue 15): a replica applies a write this soon
DEFAULT_CATALOG_TAIL_S = 0.1  # other brokers' catalog writes reach this broker within ~this
CATALOG_BATCH = 1000  # records read per round trip
READ_RECORDS = 20_000  # records applied per rebuild of the table (bounds a catch-up's memory)
POLL_S = 0.01  # how often a wait asks the replicas again
ASK_TIMEOUT_S = 1.0  # one CatalogPosition call


def replay(store: EventStore, live: LiveTable) -> LiveTable:
    """On the log's thread: `live` with every record of the log after its position applied."""
    while records := read_after(store, live.position):  # READ_RECORDS per rebuild of the table
        live = live.applied(records)
    return live


def read_after(store: EventStore, position: int) -> list[CatalogRecord]:
    """On the log's thread: about READ_RECORDS records after `position`, in position order, ending
    at a batch's end (catalog_after never splits one)."""
    out: list[CatalogRecord] = []
    while len(out) < READ_RECORDS and (records := store.catalog_after(position, CATALOG_BATCH)):
        out += records
        position = records[-1].position
    return out


class CatalogFollower:
    """The broker's live table and the task that keeps it current (module docstring)."""

    def __init__(self, writer: DecisionWriter, live: LiveTable, on_swap: Callable[[LiveTable], None], *,
                 interval_s: float = DEFAULT_CATALOG_TAIL_S) -> None:
        self.writer, self.live, self.on_swap, self.interval_s = writer, live, on_swap, interval_s
        # the table's rebuild (a fold of the whole catalog takes ~0.2 s) runs here, not on the log's
        # thread, so that it never holds up the group commits of the searches' decisions
        self.builder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ltrr-catalog")
        self.lock = asyncio.Lock()
        self.task: asyncio.Task[None] | None = None

    async def catch_up(self) -> LiveTable:
        """Apply every record after the table's position (read on the log's thread, the table
        rebuilt on the builder's)."""
        async with self.lock:
            while True:
                records = await self.writer.run(read_after, self.writer.log, self.live.position)
                if records:
                    self.live = await asyncio.get_running_loop().run_in_executor(self.builder, self.live.applied,
                                                                                 records)
                    self.on_swap(self.live)
                if len(records) < READ_RECORDS:
                    return self.live

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._tail(), name="ltrr-catalog-tail")

    async def _tail(self) -> None:
        await tail(self.catch_up, self.interval_s, "the catalog log", log)

    async def stop(self) -> None:
        await cancelled(self.task)
        self.task = None
        self.builder.shutdown(wait=True)


Replica = tuple[str, int, str, Any]  # strategy, partition, address, stub


def replicas(pool: ShardPool) -> Iterator[Replica]:
    """Every shard replica of the broker's topology."""
    for strategy, parts in pool.partitions.items():
        for part in parts:
            for replica in part.replicas:
                yield strategy, part.partition, replica.address, replica.stub


async def ask(replica: Replica) -> catalog_pb2.CatalogReplicaStatus:
    """The replica's CatalogPosition as a status line; `error` set when it could not answer."""
    strategy, partition, address, stub = replica
    out = catalog_pb2.CatalogReplicaStatus(strategy=strategy, partition=partition, address=address)
    try:
        got = await stub.CatalogPosition(shard_pb2.CatalogPositionRequest(), timeout=ASK_TIMEOUT_S)
    except grpc.aio.AioRpcError as e:
        out.error = ("serves no live catalog (CatalogPosition UNIMPLEMENTED)"
                     if e.code() == grpc.StatusCode.UNIMPLEMENTED else f"{e.code().name}: {e.details()}")
        return out
    out.applied_position, out.pending_entities, out.live = got.applied_position, got.pending_entities, got.live
    return out


def static(status: catalog_pb2.CatalogReplicaStatus) -> bool:
    """The replica serves no live catalog (a static shard, or one older than CatalogPosition)."""
    return (not status.error and not status.live) or status.error.startswith("serves no live catalog")


async def wait_visible(pool: ShardPool, position: int, timeout_s: float) -> bool:
    """Poll every replica (those serving a live catalog) until each has applied `position`; False
    when timeout_s passes first."""
    deadline = time.monotonic() + timeout_s
    pending = list(replicas(pool))
    while True:
        answers = await asyncio.gather(*(ask(r) for r in pending))
        pending = [r for r, a in zip(pending, answers, strict=True)
                   if not static(a) and (a.error or a.applied_position < position)]
        if not pending:
            return True
        if time.monotonic() + POLL_S > deadline:
            return False
        await asyncio.sleep(POLL_S)


class CatalogService(catalog_pb2_grpc.CatalogServicer):
    """Served by the broker on its port (module docstring). follower: None until the broker is loaded."""

    def __init__(self, writer: Callable[[], DecisionWriter | None], follower: Callable[[], CatalogFollower | None],
                 pool: ShardPool) -> None:
        self._writer, self._follower, self.pool = writer, follower, pool
        self.clock = Clock()

    def _ready(self) -> tuple[DecisionWriter, CatalogFollower]:
        writer, follower = self._writer(), self._follower()
        if writer is None or follower is None:
            raise NotReadyError("the broker is still loading its catalog and replaying its logs")
        return writer, follower

    @metrics.broker_observed
    @rpc
    async def Write(self, request: catalog_pb2.CatalogWriteRequest, context: grpc.aio.ServicerContext
                    ) -> catalog_pb2.CatalogWriteResponse:
        started = time.perf_counter()
        writer, follower = self._ready()
        try:
            writes = writes_from_proto(request.writes, self.clock)
        except InvalidArgumentError:
            metrics.CATALOG_WRITES.labels("invalid").inc(len(request.writes))
            raise
        try:
            positions: list[int] = await writer.run(writer.log.append_catalog, writes)
        except UnavailableError:
            metrics.CATALOG_WRITES.labels("failed").inc(len(writes))
            raise
        await follower.catch_up()
        metrics.CATALOG_WRITE_LATENCY.observe((time.perf_counter() - started) * 1000)
        applied = sum(1 for p in positions if p)
        metrics.CATALOG_WRITES.labels("applied").inc(applied)
        metrics.CATALOG_WRITES.labels("stale").inc(len(writes) - applied)
        position = max(positions)
        visible = False
        if request.wait:
            timeout_s = (request.wait_timeout_ms or DEFAULT_WAIT_TIMEOUT_MS) / 1000
            caller_s = context.time_remaining()
            visible = await wait_visible(self.pool, position, timeout_s if caller_s is None
                                         else min(timeout_s, caller_s - 0.05))
        result = catalog_pb2.CatalogWriteResult
        results = [result(id=w.entity_id, version=w.version, position=p,
                          outcome=result.OUTCOME_APPLIED if p else result.OUTCOME_STALE)
                   for w, p in zip(writes, positions, strict=True)]
        return catalog_pb2.CatalogWriteResponse(results=results, position=position, visible=visible)

    @metrics.broker_observed
    @rpc
    async def Status(self, request: catalog_pb2.CatalogStatusRequest, context: grpc.aio.ServicerContext
                     ) -> catalog_pb2.CatalogStatusResponse:
        writer, follower = self._ready()
        log_position = await writer.run(writer.log.last_catalog_position)
        live = follower.live
        broker = catalog_pb2.CatalogReplicaStatus(strategy="broker", applied_position=live.position,
                                                  pending_entities=len(live.written))
        shards = await asyncio.gather(*(ask(r) for r in replicas(self.pool)))
        return catalog_pb2.CatalogStatusResponse(log_position=log_position, replicas=[broker, *shards],
                                                 visibility_bound_ms=VISIBILITY_BOUND_MS)
