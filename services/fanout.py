"""Parallel Retrieve calls to the strategy shards under one deadline, over partitions and replicas.

Each chosen strategy is called at once with its quota; every call carries a gRPC deadline equal
to the time left, and the fan-out stops waiting then (plus STRAGGLER_S). What arrives in time is kept;
a strategy that misses the deadline is TIMEOUT, one that fails is ERROR (`shed` when its shards
refused the call under overload, RESOURCE_EXHAUSTED), one with quota 0 SKIPPED. With no time left
no shard is called: every strategy with a quota is TIMEOUT.

A strategy is served by partitions (services.topology), each by replicas (services.replicas:
balancing, failover, hedging). memory is split by query key: only the partition owning the query
is asked. A strategy split by documents asks every partition for core.partitions.partition_quota
(Vespa's top-k probability), merges their lists (core.partitions.merge_partitions, ties by catalog
position) and asks the partitions that may hold more of the merged top quota again for the whole
quota (refetch_needed), so the merged list equals one index's. It is OK when some partition
answered, with coverage = partitions answered / partitions asked (below 1: the search is degraded).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence

import grpc
import numpy as np

from core.merge import StrategyList
from core.partitions import DEFAULT_TOPK_PROBABILITY, merge_partitions, partition_quota, query_partition, refetch_needed
from core.pipeline import Answer, CallStatus
from core.types import StrategyKind
from ltrr.v1 import common_pb2, shard_pb2, shard_pb2_grpc
from services import metrics
from services.replicas import ReplicaConfig, ReplicaSet
from services.security import NO_SECURITY, SecurityConfig
from services.topology import QUERIES, Topology, normalise_shards, partitioned_by

__all__ = ["Answer", "CallStatus", "ShardPool", "fan_out", "understand"]

log = logging.getLogger("ltrr.fanout")
# Partitions of one strategy are given up this long before the fan-out's deadline, so that the
# strategy's merge of those that answered is done by then.
PARTIAL_MARGIN_S = 0.001
# Every strategy's call ends by itself at the deadline (its partitions' and replicas' waits and gRPC
# deadlines); the fan-out waits this much longer before it gives up on one, so that an answer ready
# at the deadline is not lost to the event loop's scheduling on a busy machine (a search with a
# partition's answer in hand must not report the strategy TIMEOUT).
STRAGGLER_S = 0.005


class ShardPool:
    """Per strategy, its partitions' ReplicaSets (one long-lived aio channel per replica; TLS and
    the write token when `security` configures them: services.security). shards: strategy ->
    address, or partitions -> replica addresses (services.topology)."""

    def __init__(self, shards: Mapping[str, str | Sequence[Sequence[str]]],
                 replicas: ReplicaConfig | None = None, security: SecurityConfig = NO_SECURITY) -> None:
        self.topology: Topology = normalise_shards(shards)
        self.partitions = {strategy: tuple(ReplicaSet(strategy, p, addresses, replicas, security=security)
                                           for p, addresses in enumerate(parts))
                           for strategy, parts in self.topology.items()}
        self._turn = 0

    def owner(self, strategy: str, text: str) -> int | None:
        """The one partition to ask for `text` when `strategy` is split by query key; else None."""
        parts = self.partitions[strategy]
        if partitioned_by(strategy) != QUERIES:
            return None
        return query_partition(text, len(parts)) if len(parts) > 1 else 0

    def next_partition(self, strategy: str) -> int:
        """Round robin over `strategy`'s partitions (for calls any partition can answer)."""
        self._turn += 1
        return self._turn % len(self.partitions[strategy])

    async def close(self) -> None:
        for parts in self.partitions.values():
            for replica_set in parts:
                await replica_set.close()


def _hits(strategy: str, response: shard_pb2.RetrieveResponse) -> StrategyList:
    candidates = list(response.candidates)  # one pass over the repeated field (upb), then plain reads
    return StrategyList(strategy, [c.entity_id for c in candidates],
                        np.array([c.score for c in candidates], dtype=np.float32))


async def _retrieve(part: ReplicaSet, query: common_pb2.Query, quota: int, deadline: float) -> StrategyList:
    """One partition's list (any replica's); grpc.aio.AioRpcError or TimeoutError when none answered."""
    request = shard_pb2.RetrieveRequest(query=query, quota=quota)

    async def invoke(stub: shard_pb2_grpc.ShardStub, timeout_s: float) -> shard_pb2.RetrieveResponse:
        return await stub.Retrieve(request, timeout=timeout_s)

    return _hits(part.strategy, await part.call(invoke, deadline))


def _failure(strategy: str, quota: int, errors: Sequence[BaseException], started: float) -> Answer:
    """The Answer of a strategy none of whose asked partitions answered: TIMEOUT when one ran out
    of time, else ERROR (shed when every one refused under overload)."""
    codes = [e.code() if isinstance(e, grpc.aio.AioRpcError) else grpc.StatusCode.DEADLINE_EXCEEDED for e in errors]
    for code in codes:
        metrics.count_failure(strategy, code)
    late = grpc.StatusCode.DEADLINE_EXCEEDED in codes
    if not late:
        log.debug("%s failed: %s", strategy, ", ".join(c.name for c in codes))
    return Answer(strategy, quota, CallStatus.TIMEOUT if late else CallStatus.ERROR,
                  (time.perf_counter() - started) * 1000, shed=bool(codes) and not late
                  and all(c == grpc.StatusCode.RESOURCE_EXHAUSTED for c in codes), coverage=0.0)


async def _gather(parts: Sequence[ReplicaSet], query: common_pb2.Query, quota: int, deadline: float
                  ) -> list[StrategyList | BaseException]:
    """Each partition's list, or why it has none, by `deadline` (the late ones cancelled)."""
    tasks = [asyncio.ensure_future(_retrieve(p, query, quota, deadline)) for p in parts]
    try:
        await asyncio.wait(tasks, timeout=max(deadline - time.perf_counter(), 0.0))
    finally:
        for task in tasks:
            task.cancel()
    out = [(t.exception() or t.result()) if t.done() and not t.cancelled() else TimeoutError() for t in tasks]
    for got in out:
        if isinstance(got, BaseException) and not isinstance(got, grpc.aio.AioRpcError | TimeoutError):
            raise got  # a bug, not a partition's failure: do not report it as one
    return out


async def _strategy(pool: ShardPool, strategy: str, query: common_pb2.Query, quota: int, deadline: float,
                    positions: Mapping[str, int] | None, probability: float) -> Answer:
    """One strategy's Answer: its owning partition's list, or the merge of every partition's."""
    started = time.perf_counter()
    parts = pool.partitions[strategy]
    owner = pool.owner(strategy, query.text)
    if owner is not None or len(parts) == 1:
        try:
            hits = await _retrieve(parts[owner or 0], query, quota, deadline)
        except (grpc.aio.AioRpcError, TimeoutError) as err:
            return _failure(strategy, quota, [err], started)
        return Answer(strategy, quota, CallStatus.OK, (time.perf_counter() - started) * 1000, hits,
                      partition_quota=quota)
    first = partition_quota(quota, len(parts), probability)
    got = await _gather(parts, query, first, deadline - PARTIAL_MARGIN_S)
    lists = [g if isinstance(g, StrategyList) else None for g in got]
    if not any(lst is not None for lst in lists):
        return _failure(strategy, quota, [g for g in got if isinstance(g, BaseException)], started)
    merged = merge_partitions(strategy, lists, quota, positions)
    again = refetch_needed(lists, [first] * len(parts), merged, quota)
    short = set(again)  # partitions that may hold more of the top `quota` than they gave
    if again and time.perf_counter() < deadline - PARTIAL_MARGIN_S:
        metrics.count_replica_event(metrics.REFETCHES, strategy, len(again))
        more = await _gather([parts[p] for p in again], query, quota, deadline - PARTIAL_MARGIN_S)
        for p, lst in zip(again, more, strict=True):
            if isinstance(lst, StrategyList):
                lists[p] = lst
                short.discard(p)
        merged = merge_partitions(strategy, lists, quota, positions)
    else:
        again = []  # no time to ask again: the merge of the first answers is what there is
    # a partition short of a needed second answer is not counted as answered: the merged list may
    # miss some of its candidates, so the search is reported degraded, never silently inexact
    coverage = sum(lst is not None and p not in short for p, lst in enumerate(lists)) / len(parts)
    return Answer(strategy, quota, CallStatus.OK, (time.perf_counter() - started) * 1000, merged,
                  coverage=coverage, partition_quota=first, refetched=len(again))


async def fan_out(pool: ShardPool, query: common_pb2.Query, quotas: Mapping[str, int], timeout_s: float, *,
                  positions: Mapping[str, int] | None = None,
                  probability: float = DEFAULT_TOPK_PROBABILITY) -> list[Answer]:
    """Call every strategy with a positive quota in parallel; one result per entry of `quotas`, in
    order. positions: entity id -> catalog position, the merge's tie-break (core.partitions);
    probability: the top-k probability of each document partition's quota."""
    started = time.perf_counter()
    deadline = started + timeout_s
    tasks = {name: asyncio.ensure_future(_strategy(pool, name, query, q, deadline, positions, probability))
             for name, q in quotas.items() if q > 0 and timeout_s > 0}
    try:
        if tasks:
            await asyncio.wait(tasks.values(), timeout=timeout_s + STRAGGLER_S)
    except asyncio.CancelledError:  # the search was abandoned (its caller left): so are its calls
        for pending in tasks.values():
            pending.cancel()
        raise
    results = []
    for name, quota in quotas.items():
        task = tasks.get(name)
        if task is None:
            results.append(Answer(name, quota, CallStatus.TIMEOUT, 0.0, coverage=0.0) if quota > 0
                           else Answer(name, 0, CallStatus.SKIPPED, 0.0, coverage=0.0))
        elif task.done():
            results.append(task.result())
        else:
            task.cancel()
            results.append(Answer(name, quota, CallStatus.TIMEOUT, (time.perf_counter() - started) * 1000,
                                  coverage=0.0))
    return results


async def understand(pool: ShardPool, query: common_pb2.Query, timeout_s: float
                     ) -> shard_pb2.UnderstandResponse | None:
    """The attribute strategy's Understand from any of its partitions (each holds the whole
    catalog's vocabulary), round robin, with each partition's failover and hedging; None when the
    pool has no attribute strategy or none answered in `timeout_s`."""
    name = StrategyKind.ATTRIBUTE.value
    if name not in pool.partitions or timeout_s <= 0:
        return None
    parts = pool.partitions[name]
    deadline = time.perf_counter() + timeout_s
    request = shard_pb2.UnderstandRequest(query=query)

    async def invoke(stub: shard_pb2_grpc.ShardStub, timeout: float) -> shard_pb2.UnderstandResponse:
        return await stub.Understand(request, timeout=timeout)

    first = pool.next_partition(name)
    for i in range(len(parts)):
        if time.perf_counter() >= deadline:
            break
        try:
            return await parts[(first + i) % len(parts)].call(invoke, deadline)
        except (grpc.aio.AioRpcError, TimeoutError):
            continue
    return None
