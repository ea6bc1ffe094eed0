"""The live collection: writes change ids, popularity, deletions and filter bitmaps like a fresh
build of the resulting catalog would have them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from pyroaring import BitMap

from core.catalog import Entity
from core.collection import Collection
from core.live import Delete, LiveCollection, Upsert
from core.query import Filter
from tests.conftest import synthetic_catalog
from tests.core.live_writes import final_catalog, random_writes


def live_state(c: Collection) -> tuple[list[str], list[float], dict[str, dict[str, list[str]]]]:
    """(live ids in ordinal order, their popularity, field -> value -> ids having it)."""
    live = [o for o in range(len(c)) if o not in c.deleted]
    bitmaps = {f: {v: [c.ids[o] for o in bits if o not in c.deleted] for v, bits in values.items()}
               for f, values in c.bitmaps.items()}
    return [c.ids[o] for o in live], [float(c.popularity[o]) for o in live], \
        {f: {v: ids for v, ids in values.items() if ids} for f, values in bitmaps.items()}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_writes_equal_a_fresh_build(seed: int) -> None:
    base, fresh = synthetic_catalog(200, seed=seed), synthetic_catalog(50, seed=100 + seed)
    writes = random_writes(base, fresh, 150, seed)
    live = LiveCollection.from_entities(base)
    for i in range(0, len(writes), 7):  # batches of 7
        live.apply(writes[i:i + 7])
    expected = final_catalog(base, writes)
    assert live.catalog() == expected
    assert live_state(live) == live_state(Collection.build(expected))
    assert live.max_popularity() == max(e.popularity for e in expected)


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_planned_new_is_what_apply_gives_new_ordinals(seed: int) -> None:
    """The dry run (what the semantic shard stages vectors under before its lock) foresees every
    new ordinal of a batch and its content at the batch's end, deletes and re-upserts included."""
    base, fresh = synthetic_catalog(60, seed=seed), synthetic_catalog(30, seed=50 + seed)
    writes = random_writes(base, fresh, 200, seed)
    live = LiveCollection.from_entities(base)
    for i in range(0, len(writes), 13):
        batch = writes[i:i + 13]
        planned, before = live.planned_new(batch), len(live)
        final = {c.ordinal: c.new for c in live.apply(batch)}
        assert planned == {o: e for o, e in final.items() if o >= before and e is not None}


def test_ordinals_only_grow_and_deleted_never_come_back() -> None:
    base = synthetic_catalog(5)
    live = LiveCollection.from_entities(base)
    changes = live.apply([Delete("t0001"), Upsert(dataclasses.replace(base[3], popularity=7.0)),
                          Upsert(dataclasses.replace(base[1], id="t0001")), Delete("absent")])
    assert [(c.ordinal, c.old is not None, c.new is not None) for c in changes] == \
        [(1, True, False), (3, True, True), (5, False, True)]
    assert live.ids[5] == "t0001" and live.ordinal["t0001"] == 5
    assert 1 in live.deleted and 5 not in live.deleted and len(live) == 6
    assert live.popularity[3] == 7.0
    allowed = live.allowed([])
    assert allowed is not None and list(allowed) == [0, 2, 3, 4, 5]


def test_a_value_no_live_entity_has_is_no_longer_a_filter_value() -> None:
    base = [Entity(id="a", attributes={"genre": "polka"}), Entity(id="b", attributes={"genre": "rock"})]
    live = LiveCollection.from_entities(base)
    live.apply([Upsert(Entity(id="c", attributes={"genre": "Zydeco"}))])
    allowed = live.allowed([Filter(field="genre", values=("zydeco",))])
    assert allowed is not None and list(allowed) == [2]
    live.apply([Delete("a")])
    assert "polka" not in live.bitmaps["genre"]
    with pytest.raises(ValueError, match="unknown value"):
        live.allowed([Filter(field="genre", values=("polka",))])


def test_readers_keep_the_objects_they_hold() -> None:
    """Copy on write: a search holding the popularity, deletions or a filter bitmap from before a
    write still sees them unchanged."""
    live = LiveCollection.from_entities(synthetic_catalog(20))
    pop, deleted, rock = live.popularity, live.deleted, live.bitmaps["genre"]["rock"]
    before = (pop.copy(), list(deleted), list(rock))
    live.apply([Delete(live.ids[int(next(iter(rock)))]), Upsert(Entity(id="x", attributes={"genre": "rock"}))])
    assert np.array_equal(pop, before[0]) and list(deleted) == before[1] and list(rock) == before[2]


def test_a_batch_published_while_a_reader_builds_the_live_set_is_seen_next(monkeypatch: pytest.MonkeyPatch) -> None:
    """The interleaving CI caught: a reader builds the live ordinals (and their mask) from the
    deletions it read, a batch deleting another entity is published before the reader stores them,
    and every later search must still exclude that entity (and the largest popularity must follow)."""
    live = LiveCollection.from_entities(synthetic_catalog(10))
    live.apply([Delete("t0000")])
    top = max(range(10), key=lambda o: float(live.popularity[o]))
    build = Collection._build_mask
    published: list[object] = []

    def writer_runs_meanwhile(allowed: BitMap, n: int) -> np.ndarray:
        if not published:
            published.append(live.apply([Delete(live.ids[top])]))
        return build(allowed, n)

    monkeypatch.setattr(Collection, "_build_mask", staticmethod(writer_runs_meanwhile))
    live.allowed([])  # built from the deletions before the batch
    assert published
    allowed = live.allowed([])
    assert allowed is not None and top not in allowed and 0 not in allowed
    assert live.mask(allowed)[top] == 0
    assert live.max_popularity() == max(float(live.popularity[o]) for o in allowed)
