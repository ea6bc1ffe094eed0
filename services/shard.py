"""The shard server: one retrieval strategy behind ltrr.v1.Shard, on grpc.aio and uvloop.

Life of a shard process:
1. bind the port and start serving at once, health NOT_SERVING, every Shard rpc UNAVAILABLE;
2. load the index (checksums verified) and warm every kernel, in a worker thread;
3. health SERVING; requests run one at a time on a worker thread (the Numba kernels release the
   GIL), so the event loop keeps answering health checks and watching deadlines. Retrieve and
   Understand are admitted only while fewer than `max_queue` wait or run (services.admission;
   beyond it RESOURCE_EXHAUSTED at once), and one whose deadline passed while it queued is
   answered DEADLINE_EXCEEDED without running;
4. on SIGTERM or SIGINT: health NOT_SERVING, in-flight requests get a grace period, then exit 0.
A damaged index ends the process with exit code 2 and a message naming the file.

With `store` (`ltrr shard --store URL`) the shard is live (services.shard_live): step 2 also
replays the catalog log after its base, and while serving it applies the log as it grows; every
search runs on one consistent state (core.live_shard.LiveShard.reading). CatalogPosition tells how
far it has applied (zeros for a static shard).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import wraps
from typing import Any, TypeVar

import grpc

from core.catalog_log import CatalogLog
from core.collection import Collection
from core.errors import InvalidArgumentError, LtrrError, NotReadyError, UnimplementedError
from core.indexing import open_strategy
from core.live_shard import DEFAULT_MERGE_ENTITIES, LiveShard, LiveShardConfig
from core.noop import NoopStrategy
from core.query import Limits, check_quota
from core.storage import FORMAT_VERSION
from core.types import Strategy, StrategyKind, SupportsClose, SupportsLearn, SupportsUnderstand
from ltrr.v1 import shard_pb2, shard_pb2_grpc
from services import convert, metrics, metrics_shard
from services.admission import DEFAULT_SHARD_MAX_QUEUE, Deadline, Limiter
from services.metrics_shard import shard_observed
from services.security import NO_SECURITY, SecurityConfig
from services.server import Hosted, run
from services.shard_live import DEFAULT_BACKGROUND_NICE, DEFAULT_CATALOG_POLL_S, CatalogTail, store_log
from services.status import status_for

log = logging.getLogger("ltrr.shard")
SERVICE = shard_pb2.DESCRIPTOR.services_by_name["Shard"].full_name
MAX_LEARN_EVENTS = 1000
DEFAULT_INTERPRETATIONS = 8
MAX_INTERPRETATIONS = 32

Resp = TypeVar("Resp")


@dataclass(frozen=True, kw_only=True)
class ShardConfig:
    """strategy: registered strategy name; index: index directory; options: the strategy's run-time
    settings; delay_ms: test-only artificial delay added to every Retrieve (0 = none); noop: serve
    core.noop.NoopStrategy under the strategy's name (benchmarks' floor); max_queue: Retrieve and
    Understand requests queued or running at once, beyond which they are refused (0 = unbounded;
    services.admission.DEFAULT_SHARD_MAX_QUEUE); security: TLS and the token required on Learn
    (services.security). store: the event store URL whose catalog log the shard applies ("" = a
    static shard); catalog: the catalog file the index was built from (live shards); live_dir: the
    lexical shard's merged bases and the semantic shard's checkpoints (one per replica);
    merge_entities: lexical delta size, or semantic writes since the last checkpoint, that start a
    merge (0 = on request only); catalog_poll_s: the tail's interval when the log is idle;
    background_nice: added to the nice value of the thread that merges; not 0: the thread that
    encodes writes runs under SCHED_IDLE (services.shard_live)."""

    strategy: str
    index: str
    host: str = "127.0.0.1"
    port: int = 0
    limits: Limits = field(default_factory=Limits)
    options: Mapping[str, Any] = field(default_factory=dict)
    delay_ms: float = 0.0
    noop: bool = False
    max_queue: int = DEFAULT_SHARD_MAX_QUEUE
    security: SecurityConfig = NO_SECURITY
    store: str = ""
    catalog: str = ""
    live_dir: str = ""
    merge_entities: int = DEFAULT_MERGE_ENTITIES
    catalog_poll_s: float = DEFAULT_CATALOG_POLL_S
    background_nice: int = DEFAULT_BACKGROUND_NICE

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"`port` must be in [0, 65535], but got {self.port}")
        if self.delay_ms < 0:
            raise ValueError(f"`delay_ms` must be >= 0, but got {self.delay_ms}")
        if self.max_queue < 0:
            raise ValueError(f"`max_queue` must be >= 0 (0 = unbounded), but got {self.max_queue}")
        if self.store and self.noop:
            raise ValueError("`store` must be '' for a no-op shard, but got a store URL")
        if self.catalog_poll_s <= 0:
            raise ValueError(f"`catalog_poll_s` must be > 0, but got {self.catalog_poll_s}")
        if not 0 <= self.background_nice <= 19:
            raise ValueError(f"`background_nice` must be in [0, 19], but got {self.background_nice}")

    def live_config(self) -> LiveShardConfig:
        return LiveShardConfig(strategy=self.strategy, index=self.index, catalog=self.catalog,
                               live_dir=self.live_dir, options=self.options, merge_entities=self.merge_entities)


def rpc(handler: Callable[..., Awaitable[Resp]]) -> Callable[..., Awaitable[Resp]]:
    """Map core errors onto status codes (one table: services.status); everything else is INTERNAL."""

    @wraps(handler)
    async def wrapper(self: ShardService, request: Any, context: grpc.aio.ServicerContext) -> Resp:
        try:
            return await handler(self, request, context)
        except LtrrError as err:
            await context.abort(status_for(err), str(err))
        except Exception:
            log.exception("%s failed", handler.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, f"{handler.__name__} failed; see the shard's log")
        raise AssertionError("unreachable: context.abort raises")

    return wrapper


class ShardService(shard_pb2_grpc.ShardServicer):
    """catalog_log: opens the catalog log of a live shard (default: the store at config.store;
    tests pass their own)."""

    def __init__(self, config: ShardConfig, catalog_log: Callable[[], CatalogLog] | None = None, *,
                 freeze: bool = False) -> None:
        """freeze: a live shard freezes what its start-up loaded, and then what its writes built
        (CatalogTail; a server process's choice, serve())."""
        self.config = config
        self._static: Strategy | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ltrr-shard")
        self.admission = Limiter(config.max_queue, name=f"the {config.strategy} shard's queue")
        if catalog_log is None and config.store:
            catalog_log = store_log(config.store)
        self.tail = None if catalog_log is None else CatalogTail(
            config.live_config(), catalog_log, config.catalog_poll_s, config.background_nice,
            freeze=freeze)

    @property
    def live(self) -> LiveShard | None:
        return None if self.tail is None else self.tail.live

    @property
    def strategy(self) -> Strategy | None:
        live = self.live
        return self._static if live is None else live.strategy

    def _ready(self) -> Strategy:
        strategy = self.strategy
        if strategy is None:
            raise NotReadyError(f"the {self.config.strategy} shard is still loading its index")
        return strategy

    @contextmanager
    def _reading(self) -> Iterator[Strategy]:
        """The strategy, with no catalog batch applied until the block ends (a live shard)."""
        live = self.live
        if live is None:
            yield self._ready()
            return
        with live.reading() as strategy:
            yield strategy

    async def _run(self, fn: Callable[..., Resp], *args: Any) -> Resp:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def _admitted(self, fn: Callable[..., Resp], request: Any, context: grpc.aio.ServicerContext) -> Resp:
        """fn(request, deadline) on the worker if its queue has room, else OverloadedError at once.
        The place is held until the worker is done with it (not when the caller gives up), so the
        bound counts exactly the work queued on or running on the worker. A call cancelled (its
        deadline passed, the caller left) while still queued never runs and is counted expired."""
        self.admission.acquire()
        loop = asyncio.get_running_loop()
        job = self.executor.submit(fn, request, Deadline.after(context.time_remaining()))
        job.add_done_callback(lambda _: loop.call_soon_threadsafe(self.admission.release))
        try:
            return await asyncio.wrap_future(job)
        except asyncio.CancelledError:
            if job.cancel():  # still queued: now it never runs
                self.admission.expired += 1
            raise

    def _picked_up(self, deadline: Deadline) -> float:
        """On the worker, first thing: drop a request that would be late (Limiter.check); its start time."""
        self.admission.check(deadline)
        return time.perf_counter()

    def _retrieve(self, request: shard_pb2.RetrieveRequest, deadline: Deadline) -> shard_pb2.RetrieveResponse:
        start = self._picked_up(deadline)
        with self._reading() as strategy:
            query = convert.query_from_proto(request.query, self.config.limits, strategy.vector_dim)
            quota = check_quota(request.quota, self.config.limits)
            hits = strategy.retrieve(query, quota, strategy.collection.allowed(query.filters))
            ids = strategy.collection.ids  # append-only: an ordinal's id never changes
        if self.config.delay_ms:
            time.sleep(self.config.delay_ms / 1000)
        took = (time.perf_counter() - start) * 1000
        self.admission.observe(took)
        return convert.hits_to_response(strategy.kind.value, hits, ids, took)

    @shard_observed
    @rpc
    async def Retrieve(self, request: shard_pb2.RetrieveRequest, context: grpc.aio.ServicerContext
                       ) -> shard_pb2.RetrieveResponse:
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed before the shard started")
        return await self._admitted(self._retrieve, request, context)

    def _understand(self, request: shard_pb2.UnderstandRequest, deadline: Deadline) -> shard_pb2.UnderstandResponse:
        start = self._picked_up(deadline)
        with self._reading() as strategy:
            if not isinstance(strategy, SupportsUnderstand):
                raise UnimplementedError(f"the {strategy.kind.value} strategy has no query understanding")
            n = request.max_interpretations or DEFAULT_INTERPRETATIONS
            if not 1 <= n <= MAX_INTERPRETATIONS:
                raise InvalidArgumentError("max_interpretations",
                                           f"must be in [0, {MAX_INTERPRETATIONS}], but got {n}")
            query = convert.query_from_proto(request.query, self.config.limits, strategy.vector_dim)
            interps = strategy.understand(query, n)
        return shard_pb2.UnderstandResponse(interpretations=[convert.interpretation_to_proto(i) for i in interps],
                                            took_ms=(time.perf_counter() - start) * 1000)

    @shard_observed
    @rpc
    async def Understand(self, request: shard_pb2.UnderstandRequest, context: grpc.aio.ServicerContext
                         ) -> shard_pb2.UnderstandResponse:
        return await self._admitted(self._understand, request, context)

    def _learn(self, request: shard_pb2.LearnRequest) -> shard_pb2.LearnResponse:
        strategy = self._ready()
        if not isinstance(strategy, SupportsLearn):
            raise UnimplementedError(f"the {strategy.kind.value} strategy does not learn from feedback")
        if not 1 <= len(request.events) <= MAX_LEARN_EVENTS:
            raise InvalidArgumentError("events", f"must hold 1..{MAX_LEARN_EVENTS} events, got {len(request.events)}")
        events = [convert.event_from_proto(e, f"events[{i}]") for i, e in enumerate(request.events)]
        accepted, duplicates = strategy.learn(events)
        return shard_pb2.LearnResponse(accepted=accepted, duplicates=duplicates)

    @shard_observed
    @rpc
    async def Learn(self, request: shard_pb2.LearnRequest, context: grpc.aio.ServicerContext
                    ) -> shard_pb2.LearnResponse:
        return await self._run(self._learn, request)

    @rpc
    async def Describe(self, request: shard_pb2.DescribeRequest, context: grpc.aio.ServicerContext
                       ) -> shard_pb2.DescribeResponse:
        s = self._ready()
        c = s.collection
        return shard_pb2.DescribeResponse(
            strategy=s.kind.value, format_version=FORMAT_VERSION, index_id=c.index_id, num_entities=len(c),
            num_deleted=len(c.deleted), max_quota=self.config.limits.max_quota,
            max_query_chars=self.config.limits.max_query_chars, filter_fields=c.filter_fields,
            vector_dim=s.vector_dim, params={**s.describe(), **self._admission_params(), **self._live_params()})

    def _live_params(self) -> dict[str, str]:
        """A live shard's catalog position, pending entities, merges and live entities."""
        live = self.live
        return {} if live is None else live.describe()

    @rpc
    async def CatalogPosition(self, request: shard_pb2.CatalogPositionRequest, context: grpc.aio.ServicerContext
                              ) -> shard_pb2.CatalogPositionResponse:
        live = self.live
        if live is None:  # a static shard, or a live one still replaying
            return shard_pb2.CatalogPositionResponse(live=bool(self.config.store))
        return shard_pb2.CatalogPositionResponse(applied_position=live.applied_position,
                                                 base_position=live.base_position,
                                                 pending_entities=live.pending_entities, live=True)

    def _admission_params(self) -> dict[str, str]:
        """The queue's bound and counters (services.admission.Limiter), as Describe params."""
        a = self.admission
        return {"queue.max": str(a.limit), "queue.admitted": str(a.admitted), "queue.shed": str(a.shed),
                "queue.expired": str(a.expired)}

    def load(self) -> None:
        """Open the index and warm it up (blocking; runs on the worker thread)."""
        started = time.perf_counter()
        if self.config.noop:
            strategy: Strategy = NoopStrategy(StrategyKind(self.config.strategy), Collection.load(self.config.index))
        else:
            strategy = open_strategy(self.config.index, self.config.strategy, self.config.options)
        strategy.warm_up()
        self._static = strategy
        log.info("loaded %s index %s (%d entities) in %.2fs", self.config.strategy, self.config.index,
                 len(strategy.collection), time.perf_counter() - started)

    async def start(self) -> None:
        """Load (static) or open, replay and start tailing (live); SERVING follows."""
        if self.tail is not None:
            await self.tail.load()
        else:
            await asyncio.get_running_loop().run_in_executor(self.executor, self.load)

    async def stop(self) -> None:
        if self.tail is not None:
            await self.tail.close()  # closes the live strategy
        elif isinstance(self._static, SupportsClose):
            self._static.close()
        self.executor.shutdown(wait=True)


async def serve(config: ShardConfig, *, on_listening: Callable[[str], None] | None = None,
                metrics_port: int = 0, health_port: int = 0) -> int:
    """Run a shard until SIGTERM/SIGINT; returns the process exit code. metrics_port: serve
    Prometheus metrics over HTTP there (0 = off, services.metrics.AUTO_PORT = a free port);
    health_port: answer health checks in plaintext there too (0 = off; services.server.run)."""
    service = ShardService(config, freeze=True)
    if metrics_port:
        metrics_shard.watch_shard(service)
        metrics.serve(metrics_port, config.host, metrics_shard.SHARD)

    hosted = Hosted(SERVICE, lambda server: shard_pb2_grpc.add_ShardServicer_to_server(service, server),
                    service.start, service.stop)
    return await run(hosted, config.host, config.port, label=f"{config.strategy} shard", on_listening=on_listening,
                     security=config.security, health_port=health_port)
