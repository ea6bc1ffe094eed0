"""Brokers that learn as one (services.learning) on a real PostgreSQL store, in process: the live
path, snapshots kept in the store, and replay give one policy; policy versions on decisions."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg
import pytest

from core.eventlog_pg import PgEventLog
from core.types import EventType
from ltrr.v1 import broker_pb2, broker_pb2_grpc
from services.snapshots import POLICY_FILE
from tests.services.test_broker_state import broker, search, shard

pytestmark = pytest.mark.slow
N = 40


async def crosswise(stubs: tuple[broker_pb2_grpc.BrokerStub, broker_pb2_grpc.BrokerStub], n: int) -> list[int]:
    """n searches alternating between the two brokers, each clicked at the other; the policy versions."""
    versions = []
    for i in range(n):
        at, to = (stubs[0], stubs[1]) if i % 2 else (stubs[1], stubs[0])
        response = await at.Search(search("love night" if i % 3 else "blue river"))
        versions.append(response.policy_version)
        entity = response.results[0].entity_id if response.results else "t0000"
        await to.Feedback(broker_pb2.FeedbackRequest(decision_id=response.decision_id, entity_id=entity,
                                                     type=int(EventType.CLICK), event_id=f"e{i}"))
    return versions


async def described(stub: broker_pb2_grpc.BrokerStub, events: int) -> broker_pb2.BrokerDescribeResponse:
    """Describe, polled until `events` are applied (a bounded wait for the tail, not a timing check)."""
    for _ in range(200):
        got = await stub.Describe(broker_pb2.BrokerDescribeRequest())
        if got.applied_events >= events:
            return got
        await asyncio.sleep(0.05)
    return got


def test_live_learning_snapshots_in_the_store_and_replay_agree(built: Path, tmp_path: Path, pg_url: str) -> None:
    """Two brokers take searches and feedback crosswise and converge (same applied_events and
    digest); each decision records the version of the policy that made it. A broker started from
    an older snapshot in the store and one started from no snapshot at all replay to the same
    digest: the live path and the replay path are one."""

    async def go() -> None:
        with shard("lexical", built) as lexical:
            shards = {"lexical": lexical.address}
            async with broker(shards, tmp_path / "a", built, store=pg_url, save_every=7) as (_, sa), \
                    broker(shards, tmp_path / "b", built, store=pg_url, save_every=7) as (_, sb):
                untaught = await sa.Describe(broker_pb2.BrokerDescribeRequest())
                versions = await crosswise((sa, sb), N)
                da, db = await described(sa, N), await described(sb, N)
        assert (da.applied_events, da.policy_digest) == (db.applied_events, db.policy_digest) == \
            (N, da.policy_digest)
        assert da.policy_digest != untaught.policy_digest and da.store == "postgresql"
        assert versions[0] == 0 and all(v >= i - 1 for i, v in enumerate(versions))  # each ack taught its broker
        with PgEventLog(pg_url) as store:
            assert store.latest_snapshot() is not None
            with psycopg.connect(pg_url, autocommit=True) as conn:  # keep only a snapshot older than the last events
                conn.execute("DELETE FROM snapshots WHERE position > (SELECT min(position) FROM snapshots)")
            older = store.latest_snapshot()
            assert older is not None and 0 < older[1] < N
        for start in ("an older snapshot", "no snapshot"):
            async with broker({"lexical": "127.0.0.1:1"}, tmp_path / start, built, store=pg_url) as (_, sc):
                dc = await sc.Describe(broker_pb2.BrokerDescribeRequest())
            assert (dc.applied_events, dc.policy_digest) == (N, da.policy_digest), start
            with psycopg.connect(pg_url, autocommit=True) as conn:
                conn.execute("DELETE FROM snapshots")

    asyncio.run(go())


def test_one_sqlite_broker_live_snapshot_and_replay_agree(built: Path, tmp_path: Path) -> None:
    """The default store: Describe shows the SQLite store, every acknowledged event applied, and
    the same digest after a restart from the snapshot file and after a replay of the whole log."""

    async def go() -> None:
        state = tmp_path / "state"
        with shard("lexical", built) as lexical:
            async with broker({"lexical": lexical.address}, state, built, save_every=7) as (service, stub):
                versions = await crosswise((stub, stub), N)
                live = await stub.Describe(broker_pb2.BrokerDescribeRequest())
                assert service.writer is not None
                stored = (await service.writer.run(service.writer.log.counts))[1]
        assert (live.store, live.policy, live.applied_events, stored) == ("sqlite", "thompson", N, N)
        assert versions == list(range(N))  # one broker: each search sees every earlier acknowledged event
        assert [(s.strategy, s.partitioned_by, [list(p.replicas) for p in s.partitions]) for s in live.strategies] \
            == [("lexical", "documents", [[lexical.address]])]
        for start in ("the snapshot file", "the whole log"):
            async with broker({"lexical": "127.0.0.1:1"}, state, built) as (_, again):
                got = await again.Describe(broker_pb2.BrokerDescribeRequest())
            assert (got.applied_events, got.policy_digest) == (N, live.policy_digest), start
            (state / POLICY_FILE).unlink()

    asyncio.run(go())
