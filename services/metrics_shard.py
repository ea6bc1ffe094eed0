"""A shard's Prometheus metrics: its own registry (services.metrics has the shared helpers), served
with `ltrr shard --metrics-port`. Every series carries the shard's `strategy` label, so one
Prometheus can sum or split the shards of a cluster.

Requests and latencies come from `observed` around the Shard rpcs; the index sizes and the query
cache (when the strategy has one) are read when scraped (`watch_shard`), so the request path sets
nothing else. SHED and EXPIRED are for admission control and deadline checks to increment.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.metrics import LATENCY_BUCKETS_MS, new_registry, observed

SHARD = new_registry()
REQUESTS = Counter("ltrr_shard_requests", "Shard rpcs by method and final gRPC status code",
                   ["strategy", "method", "code"], registry=SHARD)
REQUEST_LATENCY = Histogram("ltrr_shard_request_latency_ms", "Shard rpc time in the handler (ms), queueing included",
                            ["strategy", "method"], buckets=LATENCY_BUCKETS_MS, registry=SHARD)
INFLIGHT = Gauge("ltrr_shard_inflight_requests", "Shard rpcs being handled or queued for the worker thread",
                 ["strategy"], registry=SHARD)
SHED = Counter("ltrr_shard_shed_requests", "Requests refused with RESOURCE_EXHAUSTED (the shard's queue was full)",
               ["strategy"], registry=SHARD)
EXPIRED = Counter("ltrr_shard_expired_requests", "Requests dropped because their deadline passed while they queued",
                  ["strategy"], registry=SHARD)
QUERY_CACHE = "query_embeddings"


# decorates the ShardService rpcs, labelled with the shard's strategy
shard_observed = observed(REQUESTS, REQUEST_LATENCY, lambda service: (service.config.strategy,), INFLIGHT)


def directory_bytes(path: Path) -> int:
    """Bytes of the regular files under `path` (0 if it does not exist)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # removed while walking (a rebuild swapping directories)
                total += (Path(root) / name).stat().st_size
    return total


def find_query_cache(strategy: Any) -> Any:
    """The strategy's query-embedding cache, if it has one: an object with integer `hits` and
    `misses` (and optionally `__len__`, `bytes`), as `query_cache` or `cache` on the strategy or its
    encoder; None otherwise."""
    for owner in (strategy, getattr(strategy, "encoder", None)):
        for name in ("query_cache", "cache"):
            cache = getattr(owner, name, None)
            if cache is not None and hasattr(cache, "hits") and hasattr(cache, "misses"):
                return cache
    return None


class ShardCollector(Collector):
    """Read at scrape time from a services.shard.ShardService: index sizes (entities, deleted,
    bytes on disk of the strategy's and the collection's directories) and the query cache. Nothing
    before the index is loaded."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self._bytes: int | None = None  # the index does not change while it is served

    def collect(self) -> Iterator[Metric]:
        strategy = self.service.strategy
        if strategy is None:
            return
        name = self.service.config.strategy
        c = strategy.collection
        if self._bytes is None:
            root = Path(self.service.config.index)
            self._bytes = directory_bytes(root / name) + directory_bytes(root / "collection")
        for metric, doc, value in (("ltrr_shard_index_entities", "Entities in the served index", len(c)),
                                   ("ltrr_shard_index_deleted_entities", "Entities marked deleted", len(c.deleted)),
                                   ("ltrr_shard_index_bytes", "Bytes on disk of the strategy's and the "
                                    "collection's index files", self._bytes)):
            family = GaugeMetricFamily(metric, doc, labels=["strategy"])
            family.add_metric([name], float(value))
            yield family
        yield from _cache_metrics(name, find_query_cache(strategy))


def _cache_metrics(strategy: str, cache: Any) -> Iterator[Metric]:
    if cache is None:
        return
    lookups = CounterMetricFamily("ltrr_cache_lookups", "Cache look-ups by cache and result (hit or miss)",
                                  labels=["strategy", "cache", "result"])
    lookups.add_metric([strategy, QUERY_CACHE, "hit"], float(cache.hits))
    lookups.add_metric([strategy, QUERY_CACHE, "miss"], float(cache.misses))
    yield lookups
    if hasattr(cache, "__len__"):
        entries = GaugeMetricFamily("ltrr_cache_entries", "Entries held, by cache", labels=["strategy", "cache"])
        entries.add_metric([strategy, QUERY_CACHE], float(len(cache)))
        yield entries
    if isinstance(getattr(cache, "bytes", None), int | float):
        held = GaugeMetricFamily("ltrr_cache_bytes", "Estimated bytes held, by cache", labels=["strategy", "cache"])
        held.add_metric([strategy, QUERY_CACHE], float(cache.bytes))
        yield held


def watch_shard(service: Any) -> None:
    """Register the scrape-time collector of `service` (once per process), and create its labelled
    series at zero so that they exist (and rate() works) before the first request."""
    SHARD.register(ShardCollector(service))
    name = service.config.strategy
    for metric in (SHED, EXPIRED, INFLIGHT):
        metric.labels(name)
    for method in ("Retrieve", "Understand", "Learn"):
        REQUEST_LATENCY.labels(name, method)
        REQUESTS.labels(name, method, "OK")
