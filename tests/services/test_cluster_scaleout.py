"""`ltrr up`'s scale-out path end to end: 2 brokers on a private PostgreSQL started by the cluster,
2 partitions x 2 replicas of lexical and memory, the status it reports, and feedback across brokers."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest

from services.client import BrokerClient
from services.cluster import Cluster, ClusterConfig, build_missing
from services.postgres import PG_ROOT, find_binaries

pytestmark = pytest.mark.skipif(find_binaries() is None, reason=f"no PostgreSQL server binaries under {PG_ROOT} "
                                "(apt-get install postgresql; CI installs it)")


def test_two_brokers_learn_as_one_over_partitions_and_replicas(built: Path, tmp_path: Path) -> None:
    config = ClusterConfig(catalog=str(built / "catalog.jsonl"), index=str(tmp_path / "index"),
                           state=str(tmp_path / "state"), port=0, metrics_port=0, strategies=("lexical", "memory"),
                           build={"lexical": {"fields": "title^2,artist", "progress": False}},
                           brokers=2, partitions=2, replicas=2, store={"url": "postgres"})
    build_missing(config)
    cluster = Cluster(config)
    try:
        cluster.start()
        status = cluster.status()
        assert status["store"]["url"].startswith("postgresql://")
        assert len(status["brokers"]) == 2
        assert sorted((s["strategy"], s["partition"], s["replica"]) for s in status["shards"]) == sorted(
            (name, p, r) for name in ("lexical", "memory") for p in (0, 1) for r in (0, 1))
        clients = [BrokerClient(b["address"]) for b in status["brokers"]]
        acked = 0
        for i, text in enumerate(["love", "night", "blue", "fire river", "love", "rain"] * 3):
            response = clients[i % 2].search(text, budget_ms=2000)
            assert {s.strategy: s.coverage for s in response.strategies if s.quota}.get("lexical", 1.0) == 1.0
            ack = clients[(i + 1) % 2].feedback(response.decision_id, response.results[0].entity_id, "play",
                                                value=1.0)  # at the other broker: NOT_FOUND would raise
            acked += not ack.duplicate
        assert acked == 18
        # the broker that took the last event has applied it; the other one tails the store (~0.15 s)
        deadline = time.monotonic() + 10.0
        caught_up = [c.describe() for c in clients]
        while {d.applied_events for d in caught_up} != {acked} and time.monotonic() < deadline:
            time.sleep(0.05)
            caught_up = [c.describe() for c in clients]
        assert all(d.store == "postgresql" for d in caught_up)
        assert [d.applied_events for d in caught_up] == [acked, acked]
        assert caught_up[0].policy_digest == caught_up[1].policy_digest
        parts = {t.strategy: [list(p.replicas) for p in t.partitions] for t in caught_up[0].strategies}
        assert [len(p) for p in parts["lexical"]] == [2, 2] and [len(p) for p in parts["memory"]] == [2, 2]
        with pytest.raises(grpc.RpcError) as err:
            clients[0].feedback("no-such-decision", response.results[0].entity_id, "play")
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        for c in clients:
            c.close()
    finally:
        cluster.stop()
    assert cluster.postgres is None  # stopped with the cluster
