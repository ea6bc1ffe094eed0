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
from tests.services.test_broker_state import broker, search, shard

pytestmark = pytest.mark.slow
N = 40


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
                versions = []
                for i in range(N):
                    at, to = (sa, sb) if i % 2 else (sb, sa)
                    response = await at.Search(search("love night" if i % 3 else "blue river"))
                    versions.append(response.policy_version)
                    entity = response.results[0].entity_id if response.results else "t0000"
                    await to.Feedback(broker_pb2.FeedbackRequest(decision_id=response.decision_id, entity_id=entity,
                                                                 type=int(EventType.CLICK), event_id=f"e{i}"))
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
