"""Attribute and memory shards over gRPC: Understand, interpretations in Retrieve, Learn, errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from core.catalog import Entity
from core.indexing import build_index
from core.query import Filter
from core.types import EventType, FeedbackEvent
from services.client import ShardClient
from services.process import start_shard

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory, catalog: list[Entity]) -> Path:
    root = tmp_path_factory.mktemp("structured-index")
    build_index(catalog, root, ["attribute", "memory"])
    return root


@pytest.fixture(scope="module")
def attribute(index: Path) -> Iterator[ShardClient]:
    with start_shard("attribute", index) as server, ShardClient(server.address) as client:
        yield client


@pytest.fixture(scope="module")
def memory(index: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShardClient]:
    state = tmp_path_factory.mktemp("memory-state")
    with start_shard("memory", index, options={"state_dir": state}) as server, ShardClient(server.address) as client:
        yield client


def test_understand_and_retrieve_report_interpretations(attribute: ShardClient) -> None:
    readings = attribute.understand("1990s rok", 4).interpretations
    assert {(s.field, s.value) for s in readings[0].slots} == {("decade", "1990s"), ("genre", "rock")}
    response = attribute.retrieve("1990s rok", 20)
    assert response.strategy == "attribute" and response.candidates
    assert response.interpretations[0].slots[0].field in {"decade", "genre"}


def test_filters_and_their_errors(attribute: ShardClient) -> None:
    response = attribute.retrieve("rock", 50, filters=[Filter(field="decade", values=("1990s",))])
    assert response.candidates
    with pytest.raises(grpc.RpcError) as err:
        attribute.retrieve("rock", 5, filters=[Filter(field="colour", values=("red",))])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "query.filters[0].field" in (err.value.details() or "")


def test_attribute_does_not_learn(attribute: ShardClient) -> None:
    with pytest.raises(grpc.RpcError) as err:
        attribute.learn([FeedbackEvent(event_id="x", query_text="q", entity_id="t0000", type=EventType.CLICK)])
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_memory_learns_and_refuses_unknown_entities(memory: ShardClient) -> None:
    event = FeedbackEvent(event_id="m1", query_text="Brand New Query", entity_id="t0007", type=EventType.PLAY)
    assert (memory.learn([event]).accepted, memory.learn([event]).duplicates) == (1, 1)
    assert memory.retrieve("brand new query", 3).candidates[0].entity_id == "t0007"
    with pytest.raises(grpc.RpcError) as err:
        memory.learn([FeedbackEvent(event_id="m2", query_text="q", entity_id="nope", type=EventType.CLICK)])
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        memory.understand("rock")
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
