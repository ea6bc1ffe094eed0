"""Parallel fan-out against real shard processes: deadlines, slow shards, dead shards."""

from __future__ import annotations

import asyncio
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
               "slow": spawn(shard_args("lexical", lexical_index_dir, extra=["--test-delay-ms", "4000"]))}
    yield servers
    for s in servers.values():
        s.stop()


def test_slow_shard_times_out_and_the_fast_one_answers(shards: dict[str, ServerProcess]) -> None:
    """Deadline behaviour by status, not by milliseconds: the fan-out gives up on the shard that
    takes 4 s at its 1 s deadline (reported TIMEOUT, the call cancelled) and keeps the answer of
    the one that was in time."""
    async def go() -> list[Answer]:
        pool = ShardPool({name: s.address for name, s in shards.items()})
        await fan_out(pool, common_pb2.Query(text="love"), {"fast": 5, "slow": 0}, 5.0)  # connect
        results = await fan_out(pool, common_pb2.Query(text="love"), {"fast": 5, "slow": 5}, 1.0)
        await pool.close()
        return results

    by_name = {r.strategy: r for r in asyncio.run(go())}
    fast = by_name["fast"]
    assert fast.status is CallStatus.OK and fast.hits is not None and len(fast.hits.entity_ids) == 5
    assert by_name["slow"].status is CallStatus.TIMEOUT and by_name["slow"].hits is None


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
