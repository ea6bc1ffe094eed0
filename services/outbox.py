"""The broker's outbox to the memory shards: logged feedback reaches each exactly once per event id.

The event log is the outbox. The memory strategy is split by query key into partitions
(core.partitions.query_partition), each served by replicas, and every replica keeps its own copy:
each replica has its own cursor in the log (core.eventlog cursors, `memory/<partition>/<replica>`;
the single memory shard's older cursor `memory` is read as partition 0 replica 0's), holding the
position of the last event that replica acknowledged, and its own task (MemoryOutbox), owned by the
broker, which sends it the events after its cursor whose query its partition owns in batches
(Learn), and moves the cursor only after the replica answered. A replica that was down catches up
alone; the others are not held back. For each replica:

- the shard down, slow or restarting: the batch fails, the task waits (exponential backoff up to
  `max_backoff_s`) and sends the same batch again, so the shard catches up from the log after any
  outage or restart of either side;
- a batch acknowledged but the cursor not yet stored (a broker crash in between) is sent again
  after the restart; the memory shard counts a repeated event id once (its dedup window), so each
  event counts exactly once.

With several brokers on one store (PostgreSQL) each replica's outbox runs on one of them at a time:
the one holding the store's lease `memory-outbox:<cursor>` (core.eventstore.Lease: an advisory lock that dies with
its session). The others check every `lease_retry_s` and take over, from the shared cursor, when the
holder is gone. With SQLite the lease is always held.

Only satisfying events (core.reward.satisfies: no skip, no play below `satisfied_fraction`, no
reformulation naming nothing) are forwarded: the memory strategy learns what a query's users
wanted, and the rest is evidence they did not want that entity (the cursor still moves past them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from core.errors import UnavailableError
from core.eventlog import AlwaysHeld
from core.eventstore import EventStore, Lease
from core.partitions import query_partition
from core.policy.policies import DEFAULT_SATISFIED_FRACTION
from core.reward import satisfies
from core.types import FeedbackEvent
from ltrr.v1 import shard_pb2, shard_pb2_grpc
from services import convert, metrics
from services.tailing import cancelled

log = logging.getLogger("ltrr.outbox")
CURSOR = "memory"  # the cursor of a broker with one memory shard, before partitions and replicas
DEFAULT_BATCH = 256
# After a new event wakes it, an outbox waits this long before reading the log, so that the events
# logged meanwhile go in the same Learn call and cursor write (as Kafka's linger.ms): at 40 feedback
# events a second a Learn call and a durable cursor write per event cost the broker and the memory
# shard more than the events' own work. The memory strategy learns an event this much later.
DEFAULT_LINGER_S = 0.1
DEFAULT_TIMEOUT_S = 5.0
DEFAULT_MAX_BACKOFF_S = 10.0
LEASE = "memory-outbox"  # one lease per replica outbox: LEASE + ":" + its cursor
# How often a broker without the lease tries to take it, and the holder checks it still has it:
# the longest the memory shard waits for a new holder after the old one died.
DEFAULT_LEASE_RETRY_S = 1.0


@dataclass(frozen=True, kw_only=True)
class OutboxConfig:
    """batch: events per Learn call (<= the shard's 1,000); timeout_s: per call; max_backoff_s: the
    longest wait between retries while the shard is unreachable; linger_s: the wait after a wake-up
    before reading the log (DEFAULT_LINGER_S; 0: none)."""

    batch: int = DEFAULT_BATCH
    linger_s: float = DEFAULT_LINGER_S
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_backoff_s: float = DEFAULT_MAX_BACKOFF_S

    def __post_init__(self) -> None:
        if not 1 <= self.batch <= 1000:
            raise ValueError(f"`batch` must be in [1, 1000], but got {self.batch}")
        if not (self.timeout_s > 0 and self.max_backoff_s > 0):
            raise ValueError(f"`timeout_s` and `max_backoff_s` must be > 0, but got {self.timeout_s}, "
                             f"{self.max_backoff_s}")
        if not 0 <= self.linger_s < 60:
            raise ValueError(f"`linger_s` must be in [0, 60), but got {self.linger_s}")


Runner = Callable[..., Awaitable[Any]]


def replica_cursor(partition: int, replica: int) -> str:
    """The log cursor of replica `replica` of memory partition `partition`."""
    return f"{CURSOR}/{partition}/{replica}"


class MemoryOutbox:
    """Forwards the event log's feedback to one memory replica (module docstring). run_on_log: runs
    a function on the event log's one thread (the broker's writer). satisfied_fraction: the broker's
    PolicyConfig.satisfied_fraction, which decides what is forwarded. partition, partitions: the
    replica serves the queries of partition `partition` of `partitions` (0 of 1: every query).
    cursor: its log cursor (replica_cursor; CURSOR for a lone memory shard's log); legacy: an older
    cursor to start from while `cursor` is unset. lease: held while forwarding (None: always).
    lag(): events not yet forwarded."""

    def __init__(self, event_log: EventStore, stub: shard_pb2_grpc.ShardStub, run_on_log: Runner,
                 config: OutboxConfig | None = None, *,
                 satisfied_fraction: float = DEFAULT_SATISFIED_FRACTION, partition: int = 0, partitions: int = 1,
                 cursor: str = CURSOR, legacy: str = "", lease: Lease | None = None,
                 lease_retry_s: float = DEFAULT_LEASE_RETRY_S) -> None:
        if not 0 <= partition < partitions:
            raise ValueError(f"`partition` must be in [0, {partitions}), but got {partition}")
        self.log, self.stub, self.run_on_log = event_log, stub, run_on_log
        self.lease: Lease = lease or AlwaysHeld()
        self.lease_retry_s = lease_retry_s
        self.held = False
        self.satisfied_fraction = satisfied_fraction
        self.partition, self.partitions, self.cursor, self.legacy = partition, partitions, cursor, legacy
        self.config = config or OutboxConfig()
        self.wake = asyncio.Event()
        self.position = 0
        self.last_logged = 0
        self.failures = 0
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"ltrr-outbox-{self.cursor}")
        self.wake.set()

    def notify(self, position: int) -> None:
        """A new event was logged at `position`."""
        self.last_logged = max(self.last_logged, position)
        self.wake.set()

    def lag(self) -> int:
        return max(self.last_logged - self.position, 0)

    async def stop(self) -> None:
        """Cancel the task and give the lease up (what is not forwarded stays in the log)."""
        await cancelled(self.task)
        self.task = None
        await asyncio.to_thread(self.lease.release)
        self.held = False

    async def _hold(self) -> bool:
        """Take or keep the lease; on taking it, resume from the shared cursor (another holder moved it)."""
        was, self.held = self.held, await asyncio.to_thread(self.lease.hold)
        if self.held and not was:
            self.position = await self.run_on_log(self.log.cursor, self.cursor)
            if not self.position and self.legacy:
                self.position = await self.run_on_log(self.log.cursor, self.legacy)
            self.last_logged = max(self.last_logged, await self.run_on_log(self.log.last_event_rowid))
            log.info("memory outbox %s: lease held; forwarding from position %d", self.cursor, self.position)
        return self.held

    async def _run(self) -> None:
        while True:
            try:
                if not await self._hold():
                    await asyncio.sleep(self.lease_retry_s)
                    continue
                with contextlib.suppress(TimeoutError):  # wakes to check the lease even without events
                    await asyncio.wait_for(self.wake.wait(), self.lease_retry_s)
                if self.wake.is_set() and self.config.linger_s:
                    await asyncio.sleep(self.config.linger_s)  # the events logged meanwhile join the batch
                self.wake.clear()
                await self._drain()
            except UnavailableError as e:  # the store: wait for it, then take the lease again
                self.held = False
                log.warning("memory outbox: the event store is unreachable (%s); retrying in %.1fs", e,
                            self.lease_retry_s)
                await asyncio.sleep(self.lease_retry_s)

    async def _drain(self) -> None:
        """Forward every batch there is while the lease is held, retrying the shard with backoff."""
        backoff = 0.1
        while await self._hold():
            try:
                sent = await self._forward_batch()
            except grpc.aio.AioRpcError as err:
                self.failures += 1
                metrics.OUTBOX_FAILURES.inc()
                log.warning("memory replica %s unreachable (%s); %d events wait in the log, retrying in %.1fs",
                            self.cursor, err.code().name, self.lag(), backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.config.max_backoff_s)
                continue
            if sent < self.config.batch:  # the log had no more; a later event sets `wake` again
                return
            backoff = 0.1

    async def _forward_batch(self) -> int:
        """Send the next batch and move the cursor past it; the number of log rows passed (0: none left)."""
        rows = await self.run_on_log(self.log.feedback_after, self.position, self.config.batch)
        if not rows:
            return 0
        events = [FeedbackEvent(event_id=e.event_id, query_text=text, entity_id=e.entity_id, type=e.type,
                                value=e.value, timestamp=e.ts, context=context)
                  for _, e, text, context in rows
                  if self._owns(text)
                  and satisfies(e.type, e.value, e.entity_id, satisfied_fraction=self.satisfied_fraction)]
        if events:
            request = shard_pb2.LearnRequest(events=[convert.event_to_proto(e) for e in events])
            await self.stub.Learn(request, timeout=self.config.timeout_s)
        self.position = rows[-1][0]
        await self.run_on_log(self.log.set_cursor, self.cursor, self.position)
        return len(rows)

    def _owns(self, text: str) -> bool:
        return self.partitions == 1 or query_partition(text, self.partitions) == self.partition


class MemoryOutboxes:
    """One MemoryOutbox per memory replica, started, notified and stopped together. stubs: per
    partition, per replica, its stub. A lone memory shard (one partition, one replica) keeps the
    cursor `memory` of older logs; otherwise replica r of partition p has replica_cursor(p, r), and
    partition 0 replica 0 starts from `memory` when a log written before partitions has it.
    lag(): the most events any replica has not acknowledged (the ltrr_broker_outbox_lag_events gauge)."""

    def __init__(self, event_log: EventStore, stubs: Sequence[Sequence[shard_pb2_grpc.ShardStub]], run_on_log: Runner,
                 config: OutboxConfig | None = None, *,
                 satisfied_fraction: float = DEFAULT_SATISFIED_FRACTION) -> None:
        lone = len(stubs) == 1 and len(stubs[0]) == 1
        cursors = [(p, r, stub, CURSOR if lone else replica_cursor(p, r))
                   for p, replicas in enumerate(stubs) for r, stub in enumerate(replicas)]
        self.outboxes = [MemoryOutbox(event_log, stub, run_on_log, config, satisfied_fraction=satisfied_fraction,
                                      partition=p, partitions=len(stubs), cursor=cursor,
                                      legacy=CURSOR if (p, r) == (0, 0) and not lone else "",
                                      lease=event_log.lease(LEASE if lone else f"{LEASE}:{cursor}"))
                         for p, r, stub, cursor in cursors]

    def start(self) -> None:
        metrics.OUTBOX_LAG.set_function(self.lag)
        for outbox in self.outboxes:
            outbox.start()

    def notify(self, position: int) -> None:
        for outbox in self.outboxes:
            outbox.notify(position)

    def lag(self) -> int:
        return max((o.lag() for o in self.outboxes), default=0)

    async def stop(self) -> None:
        for outbox in self.outboxes:
            await outbox.stop()
