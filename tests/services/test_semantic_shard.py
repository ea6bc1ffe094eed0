"""The semantic shard as a real process on a free loopback port (hashing encoder)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2

from core.catalog import Entity
from core.indexing import build_index, open_strategy
from core.query import Filter, make_query
from core.semantic.encoders import HashingEncoder
from services.client import ShardClient
from tests.services.conftest import serving

DIM = 256


@pytest.fixture(scope="module")
def semantic_dir(tmp_path_factory: pytest.TempPathFactory, catalog: list[Entity]) -> Path:
    root = tmp_path_factory.mktemp("semantic-index")
    options = {"encoder": "hashing", "cache": str(tmp_path_factory.mktemp("cache")), "progress": False}
    build_index(catalog, root, ["semantic"], {"semantic": options})
    return root


@pytest.fixture(scope="module")
def client(semantic_dir: Path) -> Iterator[ShardClient]:
    with serving("semantic", semantic_dir, {"expansion_search": 100}) as c:
        yield c


def test_serving_and_describe(client: ShardClient, semantic_dir: Path) -> None:
    assert client.health() == health_pb2.HealthCheckResponse.SERVING
    d = client.describe()
    assert d.strategy == "semantic" and d.vector_dim == DIM and d.num_entities == 300
    assert d.params["encoder"] == "hashing" and d.params["vectors"] == "300"
    assert d.params["expansion_search"] == "100"  # run-time option reached the strategy
    assert d.index_id == open_strategy(semantic_dir, "semantic").collection.index_id


@pytest.mark.parametrize("text", ["love", "night dance", "artist 3"])
def test_same_answer_as_in_process(client: ShardClient, semantic_dir: Path, text: str) -> None:
    local = open_strategy(semantic_dir, "semantic")
    hits = local.retrieve(make_query(text), 20, None)
    response = client.retrieve(text, 20)
    assert response.strategy == "semantic" and response.total_matches == hits.total_matches
    assert [c.entity_id for c in response.candidates] == [local.collection.ids[o] for o in hits.ordinals]
    assert [c.score for c in response.candidates] == pytest.approx(hits.scores.tolist())


def test_vector_query_and_filter(client: ShardClient, catalog: list[Entity]) -> None:
    vector = HashingEncoder().encode(["gold city summer"])[0].tolist()
    by_vector = client.retrieve("", 10, vector=vector)
    by_text = client.retrieve("gold city summer", 10)
    assert [c.entity_id for c in by_vector.candidates] == [c.entity_id for c in by_text.candidates]
    jazz = {e.id for e in catalog if e.attributes["genre"] == ("jazz",)}
    filtered = client.retrieve("love", 30, filters=[Filter(field="genre", values=("jazz",))])
    assert len(filtered.candidates) == 30 and {c.entity_id for c in filtered.candidates} <= jazz


@pytest.mark.parametrize(("text", "vector", "field"), [
    ("love", [float("nan")] * DIM, "query.vector"),
    ("love", [0.1] * (DIM - 1) + [float("inf")], "query.vector"),
    ("love", [0.1] * 3, "query.vector"),
    ("", [0.1] * (DIM + 1), "query.vector"),
    ("", [0.0] * DIM, "query.vector"),
    ("", None, "query.text"),
    ("   ", None, "query.text"),
])
def test_bad_queries_are_invalid_argument(client: ShardClient, text: str, vector: list[float] | None,
                                          field: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        client.retrieve(text, 5, vector=vector)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (err.value.details() or "")


def test_scores_are_cosines(client: ShardClient) -> None:
    scores = np.array([c.score for c in client.retrieve("blue river", 50).candidates])
    assert np.all(np.diff(scores) <= 0) and np.all(scores <= 1.0 + 1e-3) and np.all(scores >= -1.0 - 1e-3)
