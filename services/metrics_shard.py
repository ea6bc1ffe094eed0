"""A shard's Prometheus metrics: its own registry (services.metrics has the shared helpers), served
with `ltrr shard --metrics-port`. Every series carries the shard's `strategy` label, so one
Prometheus can sum or split the shards of a cluster.

Requests and latencies come from `observed` around the Shard rpcs; the index sizes and the
strategy's caches (SHARD_CACHES) are read when scraped (`watch_shard`), so the request path sets
nothing else. Shed and expired requests are the admission Limiter's counters, read at scrape time.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.metrics import LATENCY_BUCKETS_MS, admission_metrics, new_registry, observed

SHARD = new_registry()
REQUESTS = Counter("ltrr_shard_requests", "Shard rpcs by method and final gRPC status code",
                   ["strategy", "method", "code"], registry=SHARD)
REQUEST_LATENCY = Histogram("ltrr_shard_request_latency_ms", "Shard rpc time in the handler (ms), queueing included",
                            ["strategy", "method"], buckets=LATENCY_BUCKETS_MS, registry=SHARD)
INFLIGHT = Gauge("ltrr_shard_inflight_requests", "Shard rpcs being handled or queued for the worker thread",
                 ["strategy"], registry=SHARD)
CATALOG_APPLY_LATENCY = Histogram("ltrr_shard_catalog_apply_latency_ms",
                                  "Time to apply one batch of catalog log records (ms), live shards only",
                                  ["strategy"], buckets=LATENCY_BUCKETS_MS, registry=SHARD)
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


# (attribute, cache label) of the caches a strategy or its encoder may hold: an object with
# `__len__` and optionally integer `hits` and `misses` and a `bytes` estimate (core.cache.ByteLRU
# has `__len__` and `bytes`)
SHARD_CACHES = (("query_cache", QUERY_CACHE), ("embedding_cache", QUERY_CACHE), ("readings", "attribute_readings"))


def find_caches(strategy: Any) -> list[tuple[str, Any]]:
    """(label, cache) of every cache of SHARD_CACHES that `strategy` or its `encoder` holds."""
    found = []
    for owner in (strategy, getattr(strategy, "encoder", None)):
        for attr, label in SHARD_CACHES:
            cache = getattr(owner, attr, None)
            if cache is not None and hasattr(cache, "__len__"):
                found.append((label, cache))
    return found


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
        yield from _gauges(name, (("ltrr_shard_index_entities", "Entities in the served index", len(c)),
                                  ("ltrr_shard_index_deleted_entities", "Entities marked deleted", len(c.deleted)),
                                  ("ltrr_shard_index_bytes", "Bytes on disk of the strategy's and the "
                                   "collection's index files", self._bytes)))
        yield from _catalog_metrics(name, getattr(self.service, "live", None))
        yield from _cache_metrics(name, find_caches(strategy))
        yield from admission_metrics("ltrr_shard", "requests", self.service.admission, [name])


def _gauges(strategy: str, rows: Iterable[tuple[str, str, float]]) -> Iterator[Metric]:
    """A gauge family per (name, help, value) of `rows`, its one sample labelled with the shard's `strategy`."""
    for metric, doc, value in rows:
        family = GaugeMetricFamily(metric, doc, labels=["strategy"])
        family.add_metric([strategy], float(value))
        yield family


def _catalog_metrics(strategy: str, live: Any) -> Iterator[Metric]:
    """A live shard's catalog position, pending entities and merges (core.live_shard.LiveShard)."""
    if live is None:
        return
    yield from _gauges(strategy, (("ltrr_shard_catalog_applied_position", "Newest catalog log position applied",
                                   live.applied_position),
                                  ("ltrr_shard_catalog_base_position", "Catalog log position of the base index",
                                   live.base_position),
                                  ("ltrr_shard_catalog_pending_entities", "Entities written since the base index",
                                   live.pending_entities)))
    merges = CounterMetricFamily("ltrr_shard_catalog_merges", "Lexical merges into a new base", labels=["strategy"])
    merges.add_metric([strategy], float(live.merges))
    yield merges


def _cache_metrics(strategy: str, caches: list[tuple[str, Any]]) -> Iterator[Metric]:
    if not caches:
        return
    lookups = CounterMetricFamily("ltrr_cache_lookups", "Cache look-ups by cache and result (hit or miss)",
                                  labels=["strategy", "cache", "result"])
    entries = GaugeMetricFamily("ltrr_cache_entries", "Entries held, by cache", labels=["strategy", "cache"])
    held = GaugeMetricFamily("ltrr_cache_bytes", "Estimated bytes held, by cache", labels=["strategy", "cache"])
    for label, cache in caches:
        entries.add_metric([strategy, label], float(len(cache)))
        if isinstance(getattr(cache, "bytes", None), int | float):
            held.add_metric([strategy, label], float(cache.bytes))
        if hasattr(cache, "hits") and hasattr(cache, "misses"):
            lookups.add_metric([strategy, label, "hit"], float(cache.hits))
            lookups.add_metric([strategy, label, "miss"], float(cache.misses))
    yield from (family for family in (lookups, entries, held) if family.samples)


def watch_shard(service: Any) -> None:
    """Register the scrape-time collector of `service` (once per process), and create its labelled
    series at zero so that they exist (and rate() works) before the first request."""
    SHARD.register(ShardCollector(service))
    name = service.config.strategy
    INFLIGHT.labels(name)
    for method in ("Retrieve", "Understand", "Learn"):
        REQUEST_LATENCY.labels(name, method)
        REQUESTS.labels(name, method, "OK")
