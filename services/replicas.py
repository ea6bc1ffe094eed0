"""The replicas of one partition: per-call balancing, failover and hedged requests.

Balancing: **least outstanding**, ties broken at random (Envoy's LEAST_REQUEST). A replica that is
slow or stalled keeps its calls longer, so it holds more outstanding calls and is picked less,
without a latency model to tune; a random pick among the idle ones spreads light load evenly. (Not
round robin: a search calls a partition twice when it refetches, and a turn that alternates would
send every first call to one replica and every refetch to the other.) A replica whose call failed
with an error another replica may not have is passed over for `eject_s` (unless every replica is),
so a dead one costs one failover, not one per search.

Failover: an attempt that ends with UNAVAILABLE (connection refused or reset, a server stopping),
RESOURCE_EXHAUSTED (its queue is full), INTERNAL, or CANCELLED (only the server cancels: the
broker's own cancellations are asyncio.CancelledError) is retried on a replica not yet tried,
within the time left. Any other status (INVALID_ARGUMENT, DEADLINE_EXCEEDED, ...) would be the same
on every replica and ends the call.

Hedging (Dean and Barroso, "The Tail at Scale", CACM 2013): when the first attempt has not
answered after the `hedge_percentile` of this partition's recent attempt latencies (at least
`hedge_min_delay_ms`; none before `hedge_min_samples` answers), the same request goes to a second
replica; the first answer wins and the other attempt is cancelled. One hedge per call, so about
(100 - percentile)% more load. The window (the last `latency_window` calls answered) holds one
sample per call, the latency of the attempt a hedge would back up: its time when it answered, and
when the hedge beat it, the time it had run when the hedge was due (a lower bound; not when the
event loop got round to sending it: on a busy machine that lateness would raise the percentile by
the loop's lag at every refresh while a replica stays slow). Adding the hedges' own times, or
leaving the beaten attempts out, biases the window fast and hedges ever more (about 20% of calls in
benchmarks.hedging); timing the beaten ones until the hedge answered, or timing whole calls, lets a
replica that is always slow push the percentile up call after call until nothing is hedged in time.
A call that failed or ran out of time is no sample.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import grpc
import numpy as np

from ltrr.v1 import shard_pb2_grpc
from services import metrics
from services.security import NO_SECURITY, SecurityConfig, open_aio_channel

__all__ = ["RETRYABLE", "ReplicaConfig", "ReplicaSet", "channel"]

DEFAULT_HEDGE_PERCENTILE = 95.0
DEFAULT_HEDGE_MIN_DELAY_MS = 2.0
DEFAULT_HEDGE_MIN_SAMPLES = 20
DEFAULT_LATENCY_WINDOW = 256
DEFAULT_EJECT_S = 1.0
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INTERNAL,
                       grpc.StatusCode.CANCELLED})
_REFRESH = 8  # recompute the hedge delay after this many new samples

R = TypeVar("R")
Invoke = Callable[[shard_pb2_grpc.ShardStub, float], Awaitable[R]]


@dataclass(frozen=True, kw_only=True)
class ReplicaConfig:
    """failover: retry a failed attempt on another replica (module docstring); hedging: send a
    second attempt after the hedge delay (applies to partitions with >= 2 replicas);
    hedge_percentile: in (0, 100), the partition's recent latency percentile after which the hedge
    goes; hedge_min_delay_ms: the hedge delay's floor; hedge_min_samples: answers seen before any
    hedge; latency_window: answers kept for the percentile; eject_s: how long a replica that failed
    is passed over."""

    failover: bool = True
    hedging: bool = True
    hedge_percentile: float = DEFAULT_HEDGE_PERCENTILE
    hedge_min_delay_ms: float = DEFAULT_HEDGE_MIN_DELAY_MS
    hedge_min_samples: int = DEFAULT_HEDGE_MIN_SAMPLES
    latency_window: int = DEFAULT_LATENCY_WINDOW
    eject_s: float = DEFAULT_EJECT_S

    def __post_init__(self) -> None:
        if not 0 < self.hedge_percentile < 100:
            raise ValueError(f"`hedge_percentile` must be in (0, 100), but got {self.hedge_percentile}")
        if self.hedge_min_delay_ms < 0:
            raise ValueError(f"`hedge_min_delay_ms` must be >= 0, but got {self.hedge_min_delay_ms}")
        if self.hedge_min_samples < 1 or self.latency_window < self.hedge_min_samples:
            raise ValueError(f"`hedge_min_samples` must be >= 1 and `latency_window` >= it, but got "
                             f"{self.hedge_min_samples} and {self.latency_window}")
        if self.eject_s < 0:
            raise ValueError(f"`eject_s` must be >= 0, but got {self.eject_s}")


# A replica's channel reconnects within this after the replica comes back (gRPC's default backs
# off up to 120 s: a restarted replica would stay unused, every call to it failing over, that long).
MAX_RECONNECT_BACKOFF_MS = 2000


def channel(address: str, security: SecurityConfig = NO_SECURITY) -> grpc.aio.Channel:
    """The broker's channel to one replica (TLS and the write token as `security` says).
    round_robin: an address that is a DNS name with several records (a headless Service) is
    balanced per call too."""
    return open_aio_channel(address, security, [("grpc.lb_policy_name", "round_robin"),
                                                ("grpc.initial_reconnect_backoff_ms", 100),
                                                ("grpc.min_reconnect_backoff_ms", 100),
                                                ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS)])


def _whole_ms(seconds: float) -> float:
    """`seconds` rounded up to a whole millisecond: uvloop rounds a timer to the nearest
    millisecond and libuv's clock advances once per loop turn, so a 3.4 ms wait may end after 3;
    hedges sent that early would go at a lower percentile than asked."""
    return math.ceil(max(seconds, 0.0) * 1000) / 1000


class _Replica:
    __slots__ = ("address", "channel", "ejected_until", "outstanding", "stub")

    def __init__(self, address: str, security: SecurityConfig) -> None:
        self.address = address
        self.channel = channel(address, security)
        self.stub = shard_pb2_grpc.ShardStub(self.channel)
        self.outstanding = 0
        self.ejected_until = 0.0  # time.monotonic()


class ReplicaSet:
    """The replicas of partition `partition` of `strategy` (module docstring). hedges, failovers:
    counts since start (also in services.metrics)."""

    def __init__(self, strategy: str, partition: int, addresses: Sequence[str],
                 config: ReplicaConfig | None = None, *, seed: int | None = None,
                 security: SecurityConfig = NO_SECURITY) -> None:
        if not addresses:
            raise ValueError(f"`addresses` must name one or more replicas of {strategy} partition {partition}")
        self.strategy, self.partition = strategy, partition
        self.config = config or ReplicaConfig()
        self.replicas = [_Replica(a, security) for a in addresses]
        self.latencies: deque[float] = deque(maxlen=self.config.latency_window)
        self._delay_ms: float | None = None
        self._fresh = 0
        self._rng = random.Random(seed)  # ties between replicas (None: seeded from the OS)
        self.hedges = self.failovers = 0

    async def close(self) -> None:
        for replica in self.replicas:
            await replica.channel.close(grace=None)

    def pick(self, tried: set[int]) -> int | None:
        """The replica for the next attempt: not in `tried`, not ejected (unless all are), least
        outstanding calls, ties at random. None when every replica was tried."""
        left = [i for i in range(len(self.replicas)) if i not in tried]
        if not left:
            return None
        now = time.monotonic()
        healthy = [i for i in left if self.replicas[i].ejected_until <= now] or left
        fewest = min(self.replicas[i].outstanding for i in healthy)
        return self._rng.choice([i for i in healthy if self.replicas[i].outstanding == fewest])

    def observe(self, latency_ms: float) -> None:
        self.latencies.append(latency_ms)
        self._fresh += 1

    def hedge_delay_s(self) -> float | None:
        """Seconds after which a call is hedged; None: no hedging (off, one replica, too few samples)."""
        c = self.config
        if not c.hedging or len(self.replicas) < 2 or len(self.latencies) < c.hedge_min_samples:
            return None
        if self._delay_ms is None or self._fresh >= _REFRESH:
            self._delay_ms = float(np.percentile(np.fromiter(self.latencies, dtype=np.float64), c.hedge_percentile))
            self._fresh = 0
        return max(self._delay_ms, c.hedge_min_delay_ms) / 1000

    async def _attempt(self, r: int, invoke: Invoke[R], deadline: float) -> R:
        replica = self.replicas[r]
        replica.outstanding += 1
        try:
            return await invoke(replica.stub, max(deadline - time.perf_counter(), 0.0))
        finally:
            replica.outstanding -= 1

    async def call(self, invoke: Invoke[R], deadline: float) -> R:
        """invoke(stub, timeout_s) on one replica, with failover and hedging, until `deadline`
        (time.perf_counter()). Raises the last attempt's grpc.aio.AioRpcError when no replica
        answered, TimeoutError or the attempt's DEADLINE_EXCEEDED when the deadline passed first.
        `invoke` must pass `timeout_s` to gRPC: with one replica nothing else ends the attempt."""
        if len(self.replicas) == 1:  # nothing to fail over to or hedge with: the one attempt, awaited as it is
            return await self._only(invoke, deadline)
        tried: set[int] = set()
        running: dict[asyncio.Task[R], tuple[int, float]] = {}
        error: grpc.aio.AioRpcError | None = None
        hedge_at: float | None = None
        hedged = False
        primary: asyncio.Task[R] | None = None  # the attempt a hedge would back up
        waited = 0.0  # how long it had run when the hedge went
        try:
            while True:
                now = time.perf_counter()
                if not running:
                    primary = self._next(invoke, deadline, running, tried, error)
                    delay = None if hedged else self.hedge_delay_s()
                    hedge_at = None if delay is None else now + delay
                until = deadline if hedge_at is None else min(deadline, hedge_at)
                done, _ = await asyncio.wait(running, timeout=_whole_ms(until - now),
                                             return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    if hedge_at is None or hedge_at >= deadline or time.perf_counter() >= deadline:
                        raise TimeoutError(self._late())
                    if time.perf_counter() < hedge_at:  # woke early (see _whole_ms): not yet
                        continue
                    # the delay the hedge was due after, not when the loop woke: a late loop's
                    # lateness would add to every such sample (module docstring)
                    waited = hedge_at - running[primary][1] if primary in running else 0.0
                    hedge_at, hedged = None, True
                    if (r := self.pick(tried)) is not None:
                        self._count_hedge()
                        self._start(r, invoke, deadline, running, tried)
                    continue
                for task in done:
                    r, started = running.pop(task)
                    failed = self._failed(task, r)
                    if failed is None:
                        beaten = primary in running  # the hedge answered first
                        self.observe(waited * 1000 if beaten else (time.perf_counter() - started) * 1000)
                        return task.result()
                    error = failed
        finally:
            for task in running:
                task.cancel()

    async def _only(self, invoke: Invoke[R], deadline: float) -> R:
        """call() of a partition with one replica: the attempt without a task of its own or a wait
        beside it (a search makes several such calls; gRPC's own timeout ends it at `deadline`)."""
        started = time.perf_counter()
        if started >= deadline:
            raise TimeoutError(self._late())
        result = await self._attempt(0, invoke, deadline)
        self.observe((time.perf_counter() - started) * 1000)
        return result

    def _next(self, invoke: Invoke[R], deadline: float, running: dict[asyncio.Task[R], tuple[int, float]],
              tried: set[int], error: grpc.aio.AioRpcError | None) -> asyncio.Task[R]:
        """Start the call's first attempt, or fail over after `error`; raise `error` when every
        replica was tried (or failover is off), TimeoutError past the deadline."""
        r = self.pick(tried) if not tried or self.config.failover else None
        if r is None or time.perf_counter() >= deadline:
            raise error if error is not None and r is None else TimeoutError(self._late())
        if tried:
            self._count_failover()
        return self._start(r, invoke, deadline, running, tried)

    def _failed(self, task: asyncio.Task[R], r: int) -> grpc.aio.AioRpcError | None:
        """None when attempt `task` (on replica `r`) answered; its error when another replica may
        not have it (replica `r` is then passed over for eject_s); any other error is raised."""
        err = task.exception()
        if err is None:
            return None
        if not isinstance(err, grpc.aio.AioRpcError) or err.code() not in RETRYABLE:
            raise err
        self.replicas[r].ejected_until = time.monotonic() + self.config.eject_s
        return err

    def _start(self, r: int, invoke: Invoke[R], deadline: float, running: dict[asyncio.Task[R], tuple[int, float]],
               tried: set[int]) -> asyncio.Task[R]:
        tried.add(r)
        task = asyncio.ensure_future(self._attempt(r, invoke, deadline))
        running[task] = (r, time.perf_counter())
        return task

    def _late(self) -> str:
        return f"{self.strategy} partition {self.partition}: no replica answered before the deadline"

    def _count_hedge(self) -> None:
        self.hedges += 1
        metrics.count_replica_event(metrics.HEDGES, self.strategy)

    def _count_failover(self) -> None:
        self.failovers += 1
        metrics.count_replica_event(metrics.FAILOVERS, self.strategy)

