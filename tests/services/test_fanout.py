"""Parallel fan-out against real shard processes: deadlines, slow shards, dead shards."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.pipeline import Answer, CallStatus
from ltrr.v1 import common_pb2
from services.fanout import ShardPool, fan_out
from services.process import ServerProcess, shard_args, spawn


@pytest.fixture(scope="module")
def shards(lexical_index_dir: Path) -> Iterator[dict[str, ServerProcess]]:
    servers = {"fast": spawn(shard_args("lexical", lexical_index_dir)),
               "slow": spawn(shard_args("lexical", lexical_index_dir, extra=["--test-delay-ms", "300"]))}
    yield servers
    for s in servers.values():
        s.stop()


def test_slow_shard_times_out_and_the_fast_one_answers(shards: dict[str, ServerProcess]) -> None:
    async def go() -> tuple[list[Answer], float]:
        pool = ShardPool({name: s.address for name, s in shards.items()})
        await fan_out(pool, common_pb2.Query(text="love"), {"fast": 5, "slow": 0}, 5.0)  # connect
        started = time.perf_counter()
        results = await fan_out(pool, common_pb2.Query(text="love"), {"fast": 5, "slow": 5}, 0.05)
        elapsed = time.perf_counter() - started
        await pool.close()
        return results, elapsed

    results, elapsed = asyncio.run(go())
    by_name = {r.strategy: r for r in results}
    fast = by_name["fast"]
    assert fast.status is CallStatus.OK and fast.hits is not None and len(fast.hits.entity_ids) == 5
    assert by_name["slow"].status is CallStatus.TIMEOUT
    assert elapsed < 0.2  # the 300 ms shard is not waited for (generous bound: loaded CI machines)


def test_skipped_and_dead_shards(shards: dict[str, ServerProcess], lexical_index_dir: Path) -> None:
    doomed = spawn(shard_args("lexical", lexical_index_dir))
    doomed.kill()

    async def go() -> list[Answer]:
        pool = ShardPool({"fast": shards["fast"].address, "dead": doomed.address, "off": shards["fast"].address})
        results = await fan_out(pool, common_pb2.Query(text="love"), {"fast": 3, "dead": 3, "off": 0}, 2.0)
        await pool.close()
        return results

    statuses = [r.status for r in asyncio.run(go())]
    assert statuses == [CallStatus.OK, CallStatus.ERROR, CallStatus.SKIPPED]
