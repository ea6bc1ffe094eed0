"""`ltrr up` with partitions = 2 and live = true: a write through the broker's Catalog service is
applied by every partition's live shard (each keeps what it owns), `wait` returns once all have
applied it, and a search then finds a new entity and no longer finds a deleted one."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from core.catalog import Entity, load_jsonl
from core.partitions import document_partition
from ltrr.v1 import catalog_pb2_grpc
from services.client import BrokerClient
from services.cluster import Cluster, ClusterConfig, build_missing
from tests.services.test_catalog_service import APPLIED, write

pytestmark = pytest.mark.slow
STRATEGIES = ("lexical", "attribute", "memory")
RELEASE = Entity(id="release-1", type="track", fields={"title": "quokka marmalade sunrise", "artist": "nobody yet"},
                 attributes={"genre": ("jazz",), "artist": "nobody yet"}, popularity=60.0)


def ids(client: BrokerClient, text: str) -> set[str]:
    return {r.entity_id for r in client.search(text, k=50, budget_ms=5000).results}


def test_ltrr_up_serves_live_writes_over_two_partitions(built: Path, tmp_path: Path) -> None:
    config = ClusterConfig(catalog=str(built / "catalog.jsonl"), index=str(tmp_path / "index"),
                           state=str(tmp_path / "state"), port=0, metrics_port=0, strategies=STRATEGIES,
                           build={"lexical": {"fields": "title^2,artist", "progress": False}}, partitions=2, live=True)
    build_missing(config)
    gone = next(e for e in load_jsonl(built / "catalog.jsonl")
                if document_partition(e.id, 2) != document_partition(RELEASE.id, 2))
    cluster = Cluster(config)
    try:
        cluster.start()
        address = cluster.status()["brokers"][0]["address"]
        with BrokerClient(address) as client, grpc.insecure_channel(address) as channel:
            catalog = catalog_pb2_grpc.CatalogStub(channel)
            assert RELEASE.id not in ids(client, RELEASE.fields["title"])
            assert gone.id in ids(client, gone.fields["title"])
            response = catalog.Write(write(RELEASE, gone.id, wait=True), timeout=30)
            assert [r.outcome for r in response.results] == [APPLIED, APPLIED] and response.visible
            found = client.search(RELEASE.fields["title"], budget_ms=5000)
            assert found.results[0].entity_id == RELEASE.id
            assert gone.id not in ids(client, gone.fields["title"])
    finally:
        cluster.stop()
