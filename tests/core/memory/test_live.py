"""Live writes to the memory strategy: cold-start pairs for new entities at once, and after a
random write sequence exactly the predicted pairs of a fresh build of the resulting catalog."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.analysis import text_key
from core.catalog import Entity
from core.indexing import build_index, open_strategy
from core.live import Delete, LiveCollection, Upsert
from core.memory.index import MemoryStrategy
from core.memory.live import LiveMemory
from core.memory.predict import predict
from core.query import make_query
from tests.conftest import synthetic_catalog
from tests.core.live_writes import final_catalog, random_writes

MAX_PER_QUERY = 4  # small, so the cut at max_per_query matters


def memory(entities: list[Entity], root: Path) -> MemoryStrategy:
    build_index(entities, root, ["memory"], {"memory": {"max_per_query": MAX_PER_QUERY}})
    strategy = open_strategy(root, "memory", {"state_dir": str(root / "state")})
    assert isinstance(strategy, MemoryStrategy)
    return strategy


def live_memory(entities: list[Entity], root: Path) -> tuple[LiveCollection, MemoryStrategy, LiveMemory]:
    strategy = memory(entities, root)
    live = LiveCollection(entities, strategy.collection)
    strategy.collection = live
    return live, strategy, LiveMemory(strategy, MAX_PER_QUERY)


def answer(strategy: MemoryStrategy, text: str) -> list[tuple[str, float]]:
    hits = strategy.retrieve(make_query(text), 50, strategy.collection.allowed([]))
    return [(strategy.collection.ids[o], s) for o, s in zip(hits.ordinals.tolist(), hits.scores.tolist(), strict=True)]


def test_new_changed_deleted(tmp_path: Path) -> None:
    live, strategy, writer = live_memory(synthetic_catalog(50), tmp_path)
    writer.apply(live.apply([Upsert(Entity(id="n1", fields={"title": "Velvet Octopus", "artist": "Mira Q"},
                                          popularity=10.0))]))
    assert [eid for eid, _ in answer(strategy, "velvet octopus")] == ["n1"]
    assert [eid for eid, _ in answer(strategy, "Mira Q velvet octopus")] == ["n1"]
    writer.apply(live.apply([Upsert(Entity(id="n1", fields={"title": "Copper Lantern"}))]))
    assert answer(strategy, "velvet octopus") == []
    assert [eid for eid, _ in answer(strategy, "copper lantern")] == ["n1"]
    writer.apply(live.apply([Delete("n1")]))
    assert answer(strategy, "copper lantern") == []


@pytest.mark.parametrize("seed", [21, 22])
def test_random_writes_equal_a_fresh_build(tmp_path: Path, seed: int) -> None:
    base, fresh = synthetic_catalog(300, seed=seed), synthetic_catalog(60, seed=seed + 50)
    writes = random_writes(base, fresh, 250, seed)
    keys = set(predict(base, np.array([e.popularity for e in base])))
    live, strategy, writer = live_memory(base, tmp_path / "live")
    for i in range(0, len(writes), 10):
        writer.apply(live.apply(writes[i:i + 10]))
        for key in sorted(keys)[::7]:  # read between writes, so cached pairs must follow them
            answer(strategy, key)
    expected = final_catalog(base, writes)
    rebuilt = memory(expected, tmp_path / "fresh")
    keys |= set(predict(expected, np.array([e.popularity for e in expected])))
    assert {text_key(k) for k in keys} == keys  # a key reads back as itself
    assert len(keys) > 100
    for key in sorted(keys):
        assert answer(strategy, key) == answer(rebuilt, key), key
    assert strategy.describe()["predicted_pairs"] == rebuilt.describe()["predicted_pairs"]
