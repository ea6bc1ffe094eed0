"""Live writes to the semantic strategy: upsert then find, change then find the new content, delete
then never find, and after a random write sequence the results of a fresh build within ANN tolerance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.catalog import Entity
from core.errors import InvalidArgumentError
from core.indexing import build_index, open_strategy
from core.live import Delete, LiveCollection, Upsert, Write
from core.query import make_query
from core.semantic.index import SemanticStrategy
from core.semantic.live import LiveSemantic
from tests.conftest import synthetic_catalog
from tests.core.live_writes import final_catalog, random_writes

# exact_below=0: every search goes through the HNSW graph, the part a live index builds differently
OPTIONS = {"encoder": "hashing", "cache": "off", "progress": False, "exact_below": 0}


def semantic(entities: list[Entity], root: Path, *, exact: bool = False) -> tuple[LiveCollection, SemanticStrategy]:
    build_index(entities, root, ["semantic"], {"semantic": {**OPTIONS, "exact_below": 10**6} if exact else OPTIONS})
    strategy = open_strategy(root, "semantic")
    assert isinstance(strategy, SemanticStrategy)
    live = LiveCollection(entities, strategy.collection)
    strategy.collection = live
    return live, strategy


def top_ids(strategy: SemanticStrategy, text: str, k: int = 10) -> list[str]:
    allowed = strategy.collection.allowed([])
    hits = strategy.retrieve(make_query(text), k, allowed)
    return [strategy.collection.ids[o] for o in hits.ordinals.tolist()]


def test_upsert_change_delete(tmp_path: Path) -> None:
    live, strategy = semantic(synthetic_catalog(100), tmp_path)
    assert strategy.vectors.view
    writer = LiveSemantic(strategy)
    assert not strategy.vectors.view  # copied into memory by the writer, before its first write
    new = Entity(id="z1", fields={"title": "quixotic zeppelin"})
    writer.apply(live.apply([Upsert(new)]))
    assert top_ids(strategy, "quixotic zeppelin", 1) == ["z1"]
    writer.apply(live.apply([Upsert(Entity(id="z1", fields={"title": "marmalade harbour"}))]))
    assert top_ids(strategy, "marmalade harbour", 1) == ["z1"]
    assert "z1" not in top_ids(strategy, "quixotic zeppelin", 5)
    writer.apply(live.apply([Delete("z1")]))
    assert "z1" not in top_ids(strategy, "marmalade harbour", 100)
    hits = strategy.retrieve(make_query("marmalade harbour"), 200, None)  # no allowed set: the index itself
    assert live.ordinal["z1"] not in hits.ordinals.tolist()


def test_a_prepared_batch_is_searchable_only_once_applied(tmp_path: Path) -> None:
    """prepare() puts the new entities' vectors in the graph before the lock; no search finds
    them (with or without an allowed set) until apply() publishes them with the rest of the batch."""
    live, strategy = semantic(synthetic_catalog(100), tmp_path)
    writer = LiveSemantic(strategy)
    batch: list[Write] = [Upsert(Entity(id="z1", fields={"title": "quixotic zeppelin"})),
                          Upsert(Entity(id="z2", fields={"title": "marmalade harbour"})), Delete("t0003")]
    writer.prepare(batch)
    assert sorted(strategy.vectors.staged) == [100, 101]
    for allowed in (None, live.allowed([])):
        hits = strategy.retrieve(make_query("quixotic zeppelin"), 200, allowed).ordinals.tolist()
        assert 100 not in hits and 101 not in hits and len(hits) == 100
    writer.prepare(batch)  # again, as after a batch that was never applied: the first staging leaves
    assert sorted(strategy.vectors.staged) == [100, 101] and len(strategy.vectors.index) == 102
    writer.apply(live.apply(batch))
    assert top_ids(strategy, "quixotic zeppelin", 1) == ["z1"] and top_ids(strategy, "marmalade harbour", 1) == ["z2"]
    assert not strategy.vectors.staged and len(strategy.vectors) == 101


def test_vector_given_is_indexed_as_is(tmp_path: Path) -> None:
    live, strategy = semantic(synthetic_catalog(50), tmp_path)
    vec = np.zeros(strategy.vector_dim, dtype=np.float32)
    vec[3] = 1.0
    LiveSemantic(strategy).apply(live.apply([Upsert(Entity(id="v", vector=tuple(vec.tolist())))]))
    hits = strategy.retrieve(make_query("", vector=vec.tolist(), vector_dim=strategy.vector_dim), 1, None)
    assert live.ids[int(hits.ordinals[0])] == "v" and hits.scores[0] == pytest.approx(1.0, abs=1e-3)


def test_random_writes_recall_against_a_fresh_build(tmp_path: Path) -> None:
    """Recall@10 of the live index against a fresh build of the final catalog, over 60 queries
    (2,000 base entities, 1,200 writes in batches of 25), with tie tolerance: the synthetic titles
    repeat a 12-word vocabulary, so many entities tie with the 10th and either may be returned; a
    live hit counts when its similarity reaches the fresh build's 10th (as faiss's
    check_ref_knn_with_draws)."""
    base, fresh = synthetic_catalog(2000, seed=11), synthetic_catalog(300, seed=12)
    writes = random_writes(base, fresh, 1200, seed=13)
    live, strategy = semantic(base, tmp_path / "live")
    writer = LiveSemantic(strategy)
    for i in range(0, len(writes), 25):
        writer.apply(live.apply(writes[i:i + 25]))
    expected = final_catalog(base, writes)
    _, rebuilt = semantic(expected, tmp_path / "fresh")
    assert len(strategy.vectors) == len(expected)
    queries = [" ".join(e.fields["title"].split()[:2]) for e in expected[::len(expected) // 60]][:60]
    found = []
    for q in queries:
        got = strategy.retrieve(make_query(q), 10, strategy.collection.allowed([]))
        want = rebuilt.retrieve(make_query(q), 10, rebuilt.collection.allowed([]))
        found.append(float(np.mean(got.scores >= want.scores[-1] - 1e-3)) if len(got) == 10 else 0.0)
    assert np.mean(found) >= 0.95


@pytest.mark.parametrize(("vector", "match"), [((1.0, 2.0), "must have 256 values, but got 2"),
                                               ((float("nan"),) * 256, "finite")])
def test_check_refuses_a_bad_vector_naming_the_item(tmp_path: Path, vector: tuple[float, ...], match: str) -> None:
    _, strategy = semantic(synthetic_catalog(20), tmp_path)
    writes = [Upsert(Entity(id="ok", fields={"title": "fine"})), Upsert(Entity(id="bad", vector=vector))]
    with pytest.raises(InvalidArgumentError, match=match) as caught:
        LiveSemantic(strategy).check(writes)
    assert caught.value.field == "writes[1].entity.vector"


def test_prepared_embeddings_are_the_ones_apply_would_compute(tmp_path: Path) -> None:
    """prepare() (the live shard embeds, and stages new entities' vectors, before its lock) changes
    nothing but where the work runs; an entity not prepared (another object, or one the rest of the
    batch deleted or replaced) is embedded by apply itself, and a staged one it no longer wants
    leaves the index. Searched exactly: a staged vector enters the HNSW graph in another order."""
    base, fresh = synthetic_catalog(200, seed=61), synthetic_catalog(40, seed=62)
    writes = random_writes(base, fresh, 120, seed=63)
    plain_live, plain = semantic(base, tmp_path / "plain", exact=True)
    prepared_live, prepared = semantic(base, tmp_path / "prepared", exact=True)
    plain_writer, prepared_writer = LiveSemantic(plain), LiveSemantic(prepared)
    for i in range(0, len(writes), 10):
        batch = writes[i:i + 10]
        plain_writer.apply(plain_live.apply(batch))
        prepared_writer.prepare(batch[:7])
        prepared_writer.apply(prepared_live.apply(batch))
        for text in ["love night", "gold", "artist 7 dance"]:
            assert top_ids(prepared, text, 20) == top_ids(plain, text, 20)
    assert len(prepared.vectors) == len(plain.vectors) == len(prepared.vectors.index)
