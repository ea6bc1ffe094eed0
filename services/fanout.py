"""Parallel Retrieve calls to the strategy shards under one deadline.

Each chosen strategy is called at once with its quota; the call carries a gRPC deadline equal to
the time left, and the fan-out stops waiting at that same moment. What arrives in time is kept;
a strategy that misses the deadline is TIMEOUT, one that fails is ERROR (`shed` when its shard
refused the call under overload, RESOURCE_EXHAUSTED), one with quota 0 SKIPPED. With no time left
no shard is called: every strategy with a quota is TIMEOUT.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

import grpc
import numpy as np

from core.merge import StrategyList
from core.pipeline import Answer, CallStatus
from ltrr.v1 import common_pb2, shard_pb2, shard_pb2_grpc
from services import metrics
from services.security import NO_SECURITY, SecurityConfig, open_aio_channel

__all__ = ["Answer", "CallStatus", "ShardPool", "fan_out"]

log = logging.getLogger("ltrr.fanout")


class ShardPool:
    """One long-lived aio channel and stub per strategy shard; TLS and the write token when
    `security` configures them (services.security)."""

    def __init__(self, addresses: Mapping[str, str], security: SecurityConfig = NO_SECURITY) -> None:
        self.addresses = dict(addresses)
        # round_robin: behind a headless Service (Kubernetes) DNS yields every replica, and calls
        # are balanced per request instead of pinning one long-lived connection to one pod.
        options = [("grpc.lb_policy_name", "round_robin")]
        self.channels = {name: open_aio_channel(addr, security, options)
                         for name, addr in self.addresses.items()}
        self.stubs = {name: shard_pb2_grpc.ShardStub(ch) for name, ch in self.channels.items()}

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close(grace=None)


async def _call(stub: shard_pb2_grpc.ShardStub, strategy: str, query: common_pb2.Query, quota: int,
                timeout_s: float) -> Answer:
    started = time.perf_counter()
    try:
        response = await stub.Retrieve(shard_pb2.RetrieveRequest(query=query, quota=quota), timeout=timeout_s)
    except grpc.aio.AioRpcError as err:
        metrics.count_failure(strategy, err.code())
        status = CallStatus.TIMEOUT if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED else CallStatus.ERROR
        if status is CallStatus.ERROR:
            log.debug("%s failed: %s %s", strategy, err.code(), err.details())
        return Answer(strategy, quota, status, (time.perf_counter() - started) * 1000,
                      shed=err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED)
    ids = [c.entity_id for c in response.candidates]
    scores = np.fromiter((c.score for c in response.candidates), dtype=np.float32, count=len(ids))
    return Answer(strategy, quota, CallStatus.OK, (time.perf_counter() - started) * 1000,
                  StrategyList(strategy, ids, scores))


async def fan_out(pool: ShardPool, query: common_pb2.Query, quotas: Mapping[str, int], timeout_s: float
                  ) -> list[Answer]:
    """Call every strategy with a positive quota in parallel; one result per entry of `quotas`, in order."""
    started = time.perf_counter()
    tasks = {name: asyncio.create_task(_call(pool.stubs[name], name, query, q, timeout_s))
             for name, q in quotas.items() if q > 0 and timeout_s > 0}
    try:
        if tasks:
            await asyncio.wait(tasks.values(), timeout=timeout_s)
    except asyncio.CancelledError:  # the search was abandoned (its caller left): so are its calls
        for pending in tasks.values():
            pending.cancel()
        raise
    results = []
    for name, quota in quotas.items():
        task = tasks.get(name)
        if task is None:
            results.append(Answer(name, quota, CallStatus.TIMEOUT, 0.0) if quota > 0
                           else Answer(name, 0, CallStatus.SKIPPED, 0.0))
        elif task.done():
            results.append(task.result())
        else:
            task.cancel()
            results.append(Answer(name, quota, CallStatus.TIMEOUT, (time.perf_counter() - started) * 1000))
    return results
