"""Prometheus metrics (prometheus-client): the helpers every process shares and the broker's set.

Every process serves its own registry over HTTP (`--metrics-port`; services.metrics_shard holds the
shards' set), so a scrape of one process shows only its own series, plus the client library's
process and Python collectors (CPU seconds, resident memory, open files, GC). Names start with
`ltrr_`, carry their unit (`_ms`, `_bytes`) and counters end in `_total` (added by the library).
Latency histograms share LATENCY_BUCKETS_MS, 1 ms to 2 s. Every registry also holds
`ltrr_gc_pause_ms` by generation: a collection holds the GIL, so each pause stalls every thread of
the process, searches included (the library's GC collector counts collections, not their time).

Call sites stay few: `observe_search` once per served search, `observed` around the broker's rpcs,
`watch_broker` once at start-up (gauges read when scraped, so the hot path sets nothing).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from functools import wraps
from typing import Any, TypeVar

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, start_http_server
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from core.pipeline import CallStatus, Served

log = logging.getLogger("ltrr.metrics")
# ms: from a 1 ms cache hit to the 2 s a client gives up at; dense around the 50..200 ms budgets
LATENCY_BUCKETS_MS = (1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000, 2000)
# a decision's propensity: P(the policy picks the plan it served)
PROPENSITY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)
AUTO_PORT = -1  # `--metrics-port auto`: a free port, announced in the log
# ms: a young collection takes well under 1 ms; a full one over a large heap tens to hundreds
GC_PAUSE_BUCKETS_MS = (0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500)
_GC_PAUSES: list[Histogram] = []  # every registry's ltrr_gc_pause_ms, fed by _gc_callback
_gc_started = [0.0]


def _gc_callback(phase: str, info: dict[str, int]) -> None:
    """gc.callbacks: the time from a collection's start to its stop, by generation (collections do
    not nest, and a callback runs holding the GIL)."""
    if phase == "start":
        _gc_started[0] = time.perf_counter()
        return
    ms = (time.perf_counter() - _gc_started[0]) * 1000
    for pauses in _GC_PAUSES:
        pauses.labels(str(info["generation"])).observe(ms)


def new_registry() -> CollectorRegistry:
    """A registry with the library's process, platform and GC collectors, and ltrr_gc_pause_ms."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    _GC_PAUSES.append(Histogram("ltrr_gc_pause_ms", "Garbage-collector pauses (ms) by generation; every thread "
                                "of the process waits meanwhile", ["generation"], buckets=GC_PAUSE_BUCKETS_MS,
                                registry=registry))
    if _gc_callback not in gc.callbacks:
        gc.callbacks.append(_gc_callback)
    return registry


def port_arg(text: str) -> int:
    """`--metrics-port` text: an integer port (0 = off) or "auto" (AUTO_PORT, a free port)."""
    if text == "auto":
        return AUTO_PORT
    try:
        port = int(text)
    except ValueError:
        raise ValueError(f"`--metrics-port` must be a port in [0, 65535] or auto, but got {text!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"`--metrics-port` must be a port in [0, 65535] or auto, but got {port}")
    return port


def serve(port: int, host: str = "127.0.0.1", registry: CollectorRegistry | None = None) -> str:
    """Serve `registry` (the broker's by default) at http://host:port/metrics from a daemon thread;
    port AUTO_PORT picks a free one. Returns "host:port" as bound, also printed (stdout) as
    "metrics on HOST:PORT" (services.process reads it from the log). Leaves out the library's
    `_created` series (one per labelled child: noise on every scrape)."""
    disable_created_metrics()
    httpd, _ = start_http_server(0 if port == AUTO_PORT else port, addr=host, registry=registry or BROKER)
    address = f"{host}:{httpd.server_port}"
    print(f"metrics on {address}", flush=True)
    return address


BROKER = new_registry()

SEARCHES = Counter("ltrr_broker_searches", "Searches answered with a stored, joinable decision", registry=BROKER)
FEEDBACK = Counter("ltrr_broker_feedback_events", "New feedback events stored and learned (duplicates excluded)",
                   registry=BROKER)
DECISION_WRITE_RETRIES = Counter("ltrr_broker_decision_write_retries",
                                 "Group commits of decisions that failed and were retried", registry=BROKER)
DECISION_WRITE_FAILURES = Counter("ltrr_broker_decision_write_failures",
                                  "Decisions that could not be stored after every retry (their searches failed "
                                  "with UNAVAILABLE)", registry=BROKER)
SNAPSHOT_FAILURES = Counter("ltrr_broker_snapshot_failures", "Policy snapshots that could not be written",
                            registry=BROKER)
OUTBOX_LAG = Gauge("ltrr_broker_outbox_lag_events", "Logged feedback events not yet acknowledged by the memory shard",
                   registry=BROKER)
OUTBOX_FAILURES = Counter("ltrr_broker_outbox_failures", "Learn calls to the memory shard that failed (retried)",
                          registry=BROKER)
RECENT_BYTES = Gauge("ltrr_broker_recent_decision_bytes", "Estimated bytes of the recent-decision cache",
                     registry=BROKER)
LOG_COMPACTED = Counter("ltrr_broker_eventlog_compacted_rows", "Decision rows compacted or deleted by retention",
                        registry=BROKER)

REQUESTS = Counter("ltrr_broker_requests", "Broker rpcs by method and final gRPC status code",
                   ["method", "code"], registry=BROKER)
REQUEST_LATENCY = Histogram("ltrr_broker_request_latency_ms", "Broker rpc time in the handler (ms), any status",
                            ["method"], buckets=LATENCY_BUCKETS_MS, registry=BROKER)
SEARCH_LATENCY = Histogram("ltrr_broker_search_latency_ms",
                           "Served searches: request in to response built (ms), decision stored",
                           buckets=LATENCY_BUCKETS_MS, registry=BROKER)
STRATEGY_LATENCY = Histogram("ltrr_broker_strategy_latency_ms",
                             "Per strategy called: fan-out Retrieve time until answered or given up (ms)",
                             ["strategy"], buckets=LATENCY_BUCKETS_MS, registry=BROKER)
STRATEGY_CALLS = Counter("ltrr_broker_strategy_calls",
                         "Per strategy and search: OK, TIMEOUT, ERROR, or SKIPPED (quota 0)",
                         ["strategy", "status"], registry=BROKER)
STRATEGY_FAILURES = Counter("ltrr_broker_strategy_failures",
                            "Failed fan-out calls by strategy and gRPC status code (RESOURCE_EXHAUSTED: the shard "
                            "shed the call; DEADLINE_EXCEEDED: it missed the deadline)", ["strategy", "code"],
                            registry=BROKER)
QUOTA = Counter("ltrr_broker_quota_candidates", "Candidates asked of each strategy, summed over searches",
                ["strategy"], registry=BROKER)
PLANS = Counter("ltrr_broker_plans", "Searches per allocation plan (the quotas, e.g. lexical=100,semantic=0,...)",
                ["plan"], registry=BROKER)
PROPENSITY = Histogram("ltrr_broker_decision_propensity",
                       "P(the policy chooses the plan it served)",
                       buckets=PROPENSITY_BUCKETS, registry=BROKER)
EXPLORED = Counter("ltrr_broker_explored_searches",
                   "Searches served with a plan other than the policy's most probable one for their context "
                   "(core.policy.policies.Decision.explored): the exploration rate's numerator", registry=BROKER)
DEGRADED = Counter("ltrr_broker_degraded_searches", "Searches served with some called strategy TIMEOUT or ERROR",
                   registry=BROKER)
CACHE_LOOKUPS = Counter("ltrr_cache_lookups", "Cache look-ups by cache and result (hit or miss)",
                        ["cache", "result"], registry=BROKER)
CACHE_ENTRIES = Gauge("ltrr_cache_entries", "Entries held, by cache", ["cache"], registry=BROKER)
CACHE_BYTES = Gauge("ltrr_cache_bytes", "Estimated bytes held, by cache", ["cache"], registry=BROKER)
INFLIGHT = Gauge("ltrr_broker_inflight_requests", "Broker rpcs being handled", registry=BROKER)
PENDING_DECISIONS = Gauge("ltrr_broker_pending_decisions",
                          "Decisions waiting for the event log's next group commit (event-store lag)", registry=BROKER)
HEDGES = Counter("ltrr_broker_hedged_calls",
                 "Shard calls sent to a second replica because the first had not answered after the partition's "
                 "recent latency percentile (services.replicas)", ["strategy"], registry=BROKER)
FAILOVERS = Counter("ltrr_broker_failovers",
                    "Shard calls retried on another replica after one failed (services.replicas)", ["strategy"],
                    registry=BROKER)
PARTIAL = Counter("ltrr_broker_partial_strategy_calls",
                  "Strategy calls answered by only some of the strategy's partitions (StrategyReport.coverage "
                  "in (0, 1); the search is degraded)", ["strategy"], registry=BROKER)
REFETCHES = Counter("ltrr_broker_partition_refetches",
                    "Document partitions asked a second time for the full quota (core.partitions.refetch_needed)",
                    ["strategy"], registry=BROKER)
RECENT_CACHE = "recent_decisions"
UNDERSTOOD_CACHE = "understood_queries"  # the attribute shard's Understand answers, by query text


def plan_label(strategies: Sequence[str], quotas: Sequence[int]) -> str:
    """"lexical=100,semantic=50,...": one label value per allocation plan (bounded by the policy's
    allocation space, a few hundred at most)."""
    return ",".join(f"{s}={q}" for s, q in zip(strategies, quotas, strict=True))


@functools.cache
def _child(metric: Counter | Histogram, *labels: str) -> Any:
    """metric.labels(*labels), kept: `labels` takes a lock and builds a key on every call, and the
    label values per search come from small fixed sets (strategies, statuses, plans)."""
    return metric.labels(*labels)


def observe_search(served: Served, took_ms: float) -> None:
    """Everything one served search shows: its latency, each strategy's call, the plan and its
    propensity, degradation (~11-13 us on the event loop, label children cached)."""
    SEARCH_LATENCY.observe(took_ms)
    SEARCHES.inc()
    for answer in served.answers:
        _child(STRATEGY_CALLS, answer.strategy, answer.status.name).inc()
        if answer.quota > 0:
            _child(STRATEGY_LATENCY, answer.strategy).observe(answer.latency_ms)
            _child(QUOTA, answer.strategy).inc(answer.quota)
        if answer.answered and answer.coverage < 1.0:
            _child(PARTIAL, answer.strategy).inc()
    record = served.record
    _child(PLANS, plan_label(record.strategies, record.quotas)).inc()
    PROPENSITY.observe(record.propensity)
    if served.explored:
        EXPLORED.inc()
    if served.degraded:
        DEGRADED.inc()


def count_failure(strategy: str, code: grpc.StatusCode) -> None:
    """One fan-out call to `strategy` that ended with gRPC status `code` (not OK)."""
    _child(STRATEGY_FAILURES, strategy, code.name).inc()


def count_replica_event(counter: Counter, strategy: str, n: int = 1) -> None:
    """`n` hedges, failovers or refetches (HEDGES, FAILOVERS, REFETCHES) of `strategy`."""
    _child(counter, strategy).inc(n)


def count_lookup(cache: str, hit: bool) -> None:
    _child(CACHE_LOOKUPS, cache, "hit" if hit else "miss").inc()


Resp = TypeVar("Resp")


def observed(requests: Counter, latency: Histogram, labels: Callable[[Any], tuple[str, ...]] = lambda _: (),
             inflight: Gauge | None = None) -> Callable[[Callable[..., Awaitable[Resp]]],
                                                        Callable[..., Awaitable[Resp]]]:
    """Decorate an aio rpc method (outside services.shard.rpc, so it sees the final status): its
    time into `latency`, its gRPC status code into `requests`, while it runs +1 on `inflight`.
    labels(servicer): the leading label values (the shard's strategy), then the method's name."""

    def decorate(handler: Callable[..., Awaitable[Resp]]) -> Callable[..., Awaitable[Resp]]:
        method = handler.__name__

        @wraps(handler)
        async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Resp:
            started = time.perf_counter()
            own = labels(self)
            gauge = inflight.labels(*own) if inflight is not None and own else inflight
            if gauge is not None:
                gauge.inc()
            code = "UNKNOWN"
            try:
                response = await handler(self, request, context)
                code = "OK"
                return response
            except BaseException as err:
                code = _failed_code(err, context)
                raise
            finally:
                if gauge is not None:
                    gauge.dec()
                latency.labels(*own, method).observe((time.perf_counter() - started) * 1000)
                requests.labels(*own, method, code).inc()

        return wrapper

    return decorate


def _failed_code(err: BaseException, context: grpc.aio.ServicerContext) -> str:
    """The status a failed handler ends with: what context.abort set, CANCELLED when the call was
    cancelled (client gone or its deadline passed), else UNKNOWN (grpc answers an uncaught error so)."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):  # grpc.aio keeps the integer value of the abort's code
        return next((c.name for c in grpc.StatusCode if c.value[0] == code), "UNKNOWN")
    return "CANCELLED" if isinstance(err, asyncio.CancelledError) else "UNKNOWN"


def admission_metrics(prefix: str, what: str, limiter: Any, label: list[str]) -> Iterator[Metric]:
    """A services.admission.Limiter's counters as `<prefix>_shed_<what>_total` (refused with
    RESOURCE_EXHAUSTED), with a loop-lag rule `<prefix>_shed_lagging_<what>_total` (those of them
    refused because the event loop ran late), with a wait rule `<prefix>_shed_queueing_<what>_total`
    (refused because the waits for a place stood above target) and `<prefix>_expired_<what>_total` (deadline passed
    before the work started), labelled by strategy when `label` names one."""
    names = ["strategy"] if label else []
    kinds = [("shed", "refused with RESOURCE_EXHAUSTED by admission control", limiter.shed),
             ("expired", "dropped because their deadline passed before the work started", limiter.expired)]
    if limiter.lag is not None:
        kinds.append(("shed_lagging", "refused while places were free, because the event loop ran late "
                      "(services.admission.LoopLag; counted in shed too)", limiter.lagged))
    if limiter.waits is not None:
        kinds.append(("shed_queueing", "refused at once while every place was taken and the waits for one had "
                      "stood above target (services.admission.StandingDelay; counted in shed too)",
                      limiter.queueing))
    for kind, doc, value in kinds:
        family = CounterMetricFamily(f"{prefix}_{kind}_{what}", f"{what.capitalize()} {doc}", labels=names)
        family.add_metric(label, float(value))
        yield family


class _BrokerAdmission(Collector):
    def __init__(self, service: Any) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        yield from admission_metrics("ltrr_broker", "searches", self.service.admission, [])


def watch_broker(service: Any) -> None:
    """Gauges read at scrape time from a services.broker.BrokerService: its recent-decision and
    Understand caches (core.cache.ByteLRU) and the decisions waiting for a group commit (0 before
    it has a log).
    Creates the per-strategy and per-method series at zero, so that they exist before traffic."""
    for strategy in service.strategies:
        STRATEGY_LATENCY.labels(strategy)
        QUOTA.labels(strategy)
        for status in CallStatus:
            STRATEGY_CALLS.labels(strategy, status.name)
        for counter in (HEDGES, FAILOVERS, REFETCHES, PARTIAL):
            counter.labels(strategy)
        for code in ("DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "UNAVAILABLE"):
            STRATEGY_FAILURES.labels(strategy, code)
    for method in ("Search", "Feedback"):
        REQUEST_LATENCY.labels(method)
        REQUESTS.labels(method, "OK")
    for name, cache in ((RECENT_CACHE, service.recent), (UNDERSTOOD_CACHE, service.understood)):
        for result in ("hit", "miss"):
            CACHE_LOOKUPS.labels(name, result)
        CACHE_ENTRIES.labels(name).set_function(cache.__len__)
        CACHE_BYTES.labels(name).set_function(functools.partial(getattr, cache, "bytes"))
    PENDING_DECISIONS.set_function(lambda: len(service.writer.pending) if service.writer is not None else 0)
    RECENT_BYTES.set_function(functools.partial(getattr, service.recent, "bytes"))
    BROKER.register(_BrokerAdmission(service))


# decorates BrokerService.Search and Feedback, and the Catalog service's rpcs
broker_observed = observed(REQUESTS, REQUEST_LATENCY, inflight=INFLIGHT)


def gauge_value(gauge: Gauge, **labels: str) -> float:
    """The gauge's value now (of its child with these labels; 0 if it has none yet). Reads this one
    gauge, not its registry: a registry's get_sample_value runs every collector, the shards'
    directory sizes among them."""
    for metric in gauge.collect():
        for sample in metric.samples:
            if sample.labels == labels:
                return sample.value
    return 0.0


CATALOG_WRITES = Counter("ltrr_broker_catalog_writes",
                         "Catalog writes (items of Catalog.Write batches) by outcome: applied, stale, invalid (the "
                         "batch was refused), failed (the store could not be reached)", ["outcome"], registry=BROKER)
CATALOG_WRITE_LATENCY = Histogram("ltrr_broker_catalog_write_latency_ms",
                                  "Catalog.Write batches: request in to durable and applied by the broker (ms), "
                                  "before any wait for the shards", buckets=LATENCY_BUCKETS_MS, registry=BROKER)
