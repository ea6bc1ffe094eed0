"""The lexical shard as a real process on a free loopback port."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from core.indexing import open_strategy
from core.query import Filter, make_query
from core.types import EventType, FeedbackEvent
from ltrr.v1 import common_pb2, shard_pb2
from services.client import ShardClient
from services.process import shard_args, spawn
from tests.services.conftest import serving


@pytest.fixture(scope="module")
def client(lexical_index_dir: Path) -> Iterator[ShardClient]:
    with serving("lexical", lexical_index_dir) as c:
        yield c


def test_serving_with_health_and_reflection(client: ShardClient) -> None:
    assert client.health() == health_pb2.HealthCheckResponse.SERVING
    assert client.health("ltrr.v1.Shard") == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(client.channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"ltrr.v1.Shard", "grpc.health.v1.Health"} <= names


def test_describe(client: ShardClient, lexical_index_dir: Path) -> None:
    d = client.describe()
    assert d.strategy == "lexical" and d.num_entities == 300 and d.vector_dim == 0
    assert d.max_quota == 1000 and d.max_query_chars == 1024
    assert {"genre", "artist", "decade"} <= set(d.filter_fields)
    assert d.params["fields"] == "title^2,artist^1" and d.params["k1"] == "0.9"
    assert d.index_id == open_strategy(lexical_index_dir, "lexical").collection.index_id


def test_a_static_shard_reports_catalog_position_zero(client: ShardClient) -> None:
    position = client.stub.CatalogPosition(shard_pb2.CatalogPositionRequest(), timeout=10)
    assert (position.applied_position, position.base_position, position.pending_entities) == (0, 0, 0)
    assert not any(k.startswith("catalog.") for k in client.describe().params)


@pytest.mark.parametrize("text", ["love", "night dance", "blue river fire heart", "artist 3"])
def test_same_answer_as_in_process(client: ShardClient, lexical_index_dir: Path, text: str) -> None:
    local = open_strategy(lexical_index_dir, "lexical")
    hits = local.retrieve(make_query(text), 20, None)
    response = client.retrieve(text, 20)
    assert response.strategy == "lexical" and response.total_matches == hits.total_matches
    assert [c.entity_id for c in response.candidates] == [local.collection.ids[o] for o in hits.ordinals]
    assert [c.score for c in response.candidates] == pytest.approx(hits.scores.tolist())
    assert [c.rank for c in response.candidates] == list(range(1, len(hits) + 1))


def test_filters_over_the_wire(client: ShardClient) -> None:
    response = client.retrieve("love", 100, filters=[Filter(field="genre", values=("jazz",))])
    everything = client.retrieve("love", 100)
    assert 0 < len(response.candidates) < len(everything.candidates)


BAD_REQUESTS = [
    ("empty text", "", 10, (), "query.text"),
    ("white space", "   \t ", 10, (), "query.text"),
    ("over-long text", "a" * 1025, 10, (), "query.text"),
    ("quota 0", "love", 0, (), "quota"),
    ("quota above max", "love", 1001, (), "quota"),
    ("unknown filter field", "love", 10, (Filter(field="colour", values=("red",)),), "query.filters[0].field"),
    ("filter without values", "love", 10, (Filter(field="genre", values=()),), "query.filters[0].values"),
    ("unknown filter value", "love", 10, (Filter(field="genre", values=("rock", "polka")),),
     "query.filters[0].values"),
    ("empty filter field", "love", 10, (Filter(field=" ", values=("x",)),), "query.filters[0].field"),
]


@pytest.mark.parametrize(("case", "text", "quota", "filters", "field"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_requests_name_the_field_and_the_server_keeps_serving(
        client: ShardClient, case: str, text: str, quota: int, filters: tuple[Filter, ...], field: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        client.retrieve(text, quota, filters=filters)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, case
    assert (err.value.details() or "").startswith(field + ":"), err.value.details()
    assert len(client.retrieve("love", 5).candidates) > 0


def test_optional_rpcs_are_unimplemented_on_the_lexical_shard(client: ShardClient) -> None:
    with pytest.raises(grpc.RpcError) as err:
        client.understand("love")
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    event = FeedbackEvent(event_id="e1", query_text="love", entity_id="t0001", type=EventType.CLICK)
    with pytest.raises(grpc.RpcError) as err:
        client.learn([event])
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_raw_stub_with_max_quota(client: ShardClient) -> None:
    request = shard_pb2.RetrieveRequest(query=common_pb2.Query(text="love"), quota=1000)
    assert len(client.stub.Retrieve(request, timeout=5).candidates) > 0


def test_sigterm_stops_gracefully(lexical_index_dir: Path) -> None:
    server = spawn(shard_args("lexical", lexical_index_dir))
    assert server.stop() == 0
    assert "stopping" in server.log_text()


def test_corrupted_index_exits_naming_the_file(lexical_index_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "index"
    shutil.copytree(lexical_index_dir, copy)
    path = copy / "lexical" / "words.npy"
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(RuntimeError, match=r"words\.npy: expected \d+ bytes"):
        spawn(shard_args("lexical", copy), timeout=60)
