"""The catalog's wire conversions: entities round-trip, and a batch is checked item by item with
errors naming the item and field, before anything is written."""

from __future__ import annotations

import pytest

from core.catalog import Entity
from core.catalog_log import MAX_WRITES_PER_BATCH, CatalogWrite
from core.errors import InvalidArgumentError
from ltrr.v1 import catalog_pb2
from services.convert_catalog import Clock, entity_from_proto, entity_to_proto, write_to_proto, writes_from_proto

ENTITY = Entity(id="t1", type="track", fields={"title": "Blue", "artist": "X"},
                attributes={"genre": ("pop", "rock"), "year": "2019", "energy": 0.75}, popularity=66.0,
                vector=(0.5, -1.0))


def test_an_entity_round_trips() -> None:
    assert entity_from_proto(entity_to_proto(ENTITY), "e") == ENTITY
    bare = entity_from_proto(catalog_pb2.Entity(id="d"), "e")
    assert (bare.type, bare.vector, bare.popularity) == ("doc", None, 0.0)


def test_writes_keep_their_versions_and_order() -> None:
    wire = [write_to_proto(ENTITY, 7), write_to_proto("gone", 9), write_to_proto(CatalogWrite("t1", 8))]
    assert writes_from_proto(wire, Clock()) == [CatalogWrite("t1", 7, ENTITY), CatalogWrite("gone", 9),
                                                 CatalogWrite("t1", 8)]


def test_version_zero_is_now_in_microseconds_and_increases_within_a_batch() -> None:
    clock = Clock()
    got = [w.version for w in writes_from_proto([write_to_proto("a"), write_to_proto("a"), write_to_proto("b")], clock)]
    assert got[0] < got[1] < got[2] and got[0] > 1_600_000_000 * 10**6


def bad_entity(**change: object) -> catalog_pb2.CatalogWrite:
    write = write_to_proto(ENTITY, 1)
    for name, value in change.items():
        if name == "vector":
            write.upsert.vector[:] = value
        elif name == "number":
            write.upsert.attributes["energy"].number = value
        elif name == "empty_attribute":
            write.upsert.attributes["mood"].CopyFrom(catalog_pb2.AttributeValue())
        else:
            setattr(write.upsert, name, value)
    return write


@pytest.mark.parametrize(("item", "match"), [
    (catalog_pb2.CatalogWrite(version=1), r"^writes\[1\]: must set an operation"),
    (catalog_pb2.CatalogWrite(delete_id="", version=1), r"^writes\[1\]\.delete_id: must be 1\.\.256"),
    (catalog_pb2.CatalogWrite(delete_id="x" * 257), r"^writes\[1\]\.delete_id: must be 1\.\.256"),
    (bad_entity(id=""), r"^writes\[1\]\.upsert\.id: must be 1\.\.256"),
    (bad_entity(id="two\nlines"), r"^writes\[1\]\.upsert\.id: must not contain a line break"),
    (catalog_pb2.CatalogWrite(delete_id="a\rb"), r"^writes\[1\]\.delete_id: must not contain a line break"),
    (bad_entity(popularity=float("nan")), r"^writes\[1\]\.upsert\.popularity: must be finite and >= 0"),
    (bad_entity(popularity=-1.0), r"^writes\[1\]\.upsert\.popularity: must be finite and >= 0, but got -1"),
    (bad_entity(vector=[0.0, float("inf")]), r"^writes\[1\]\.upsert\.vector\[1\]: must be finite"),
    (bad_entity(number=float("nan")), r"^writes\[1\]\.upsert\.attributes\['energy'\]: must be finite"),
    (bad_entity(empty_attribute=True), r"^writes\[1\]\.upsert\.attributes\['mood'\]: must hold a text"),
    (catalog_pb2.CatalogWrite(delete_id="x", version=2**63), r"^writes\[1\]\.version: must be at most"),
])
def test_a_bad_item_is_named(item: catalog_pb2.CatalogWrite, match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        writes_from_proto([write_to_proto("fine", 1), item], Clock())


@pytest.mark.parametrize("n", [0, MAX_WRITES_PER_BATCH + 1])
def test_the_batch_size_is_bounded(n: int) -> None:
    with pytest.raises(InvalidArgumentError, match=r"^writes: must hold 1\.\.1000 writes"):
        writes_from_proto([write_to_proto(f"e{i}", 1) for i in range(n)], Clock())
