"""Partitioned equals unpartitioned (issue 14): P partitions merged as the broker merges them give
one index's list over the whole catalog: lexical, attribute and memory exactly, semantic within ANN
tolerance. Oracle: an unpartitioned index of the same catalog, built by core.indexing.build_index."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from core.analysis import text_key
from core.catalog import Entity, demo_catalog_path, load_jsonl
from core.errors import IndexFormatError, NotFoundError
from core.indexing import build_index, open_strategy
from core.memory.index import MemoryStrategy
from core.merge import StrategyList
from core.partitioning import (
    PARTITIONS_FILE,
    build_partitioned,
    catalog_positions,
    delete_partitioned,
    partition_dirs,
    partition_info,
    read_partitions,
)
from core.partitions import document_partition, merge_partitions, partition_quota, query_partition, refetch_needed
from core.query import Filter, Query
from core.types import EventType, FeedbackEvent, Strategy

N_TRACKS = 2500
FIELDS = "title^2,artist^1.5,album^0.5"
QUOTAS = (10, 100)


@pytest.fixture(scope="module")
def tracks() -> list[Entity]:
    return load_jsonl(demo_catalog_path())[:N_TRACKS]


def options(scoring: str, cache: Path) -> dict[str, dict[str, object]]:
    return {"lexical": {"fields": FIELDS, "scoring": scoring, "progress": False},
            "semantic": {"encoder": "hashing", "cache": str(cache), "progress": False}}


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, tracks: list[Entity]) -> dict[tuple[str, int], Path]:
    """(scoring, P) -> index directory; P = 1: the plain index. bm25f builds every strategy, sum lexical only."""
    cache = tmp_path_factory.mktemp("embeddings")
    out = {}
    for scoring, names in (("bm25f", ["lexical", "attribute", "memory", "semantic"]), ("sum", ["lexical"])):
        root = tmp_path_factory.mktemp(f"plain-{scoring}")
        build_index(tracks, root, names, options(scoring, cache))
        out[scoring, 1] = root
        for p in (2, 3):
            root = tmp_path_factory.mktemp(f"part{p}-{scoring}")
            build_partitioned(tracks, root, names, options(scoring, cache), partitions=p, progress=False)
            out[scoring, p] = root
    return out


def queries(tracks: Sequence[Entity]) -> list[str]:
    """Titles, artists, title words with artists, genres with decades and moods, misspellings."""
    rng = np.random.default_rng(14)
    out = ["love", "the night", "remix", "90s rock", "chill pop", "happy edm", "tayler swift", "ed sheran",
           "rap 2010s", "latin", "acoustic love songs", "fast dance", "queen", "beatles yesterday"]
    for i in rng.choice(len(tracks), size=40, replace=False).tolist():
        f = tracks[i].fields
        words = f.get("title", "").split()
        out += [f.get("title", ""), f.get("artist", ""), " ".join(words[:2]) + " " + f.get("artist", "")]
    return [q for q in out if q.strip()]


def as_list(strategy: Strategy, query: Query, quota: int) -> StrategyList:
    hits = strategy.retrieve(query, quota, strategy.collection.allowed(query.filters))
    ids = strategy.collection.ids
    return StrategyList(strategy.kind.value, [ids[o] for o in hits.ordinals.tolist()], hits.scores)


def fan_out(parts: Sequence[Strategy], query: Query, quota: int, positions: dict[str, int]) -> StrategyList:
    """The broker's merge: each partition asked for partition_quota, merged, the partitions that
    may hold more of the top list asked again for the whole quota, merged again."""
    asked = [partition_quota(quota, len(parts))] * len(parts)
    lists: list[StrategyList | None] = [as_list(s, query, k) for s, k in zip(parts, asked, strict=True)]
    merged = merge_partitions(parts[0].kind.value, lists, quota, positions)
    again = refetch_needed(lists, asked, merged, quota)
    for p in again:
        lists[p], asked[p] = as_list(parts[p], query, quota), quota
    return merge_partitions(parts[0].kind.value, lists, quota, positions) if again else merged


def assert_same(merged: StrategyList, one: StrategyList, what: str) -> None:
    assert list(merged.entity_ids) == list(one.entity_ids), what
    assert np.array_equal(np.asarray(merged.scores, dtype=np.float32), np.asarray(one.scores, dtype=np.float32)), what


def open_all(built: dict[tuple[str, int], Path], scoring: str, p: int, name: str) -> tuple[Strategy, list[Strategy]]:
    return open_strategy(built[scoring, 1], name), [open_strategy(d, name) for d in
                                                    partition_dirs(built[scoring, p], name)]


# -- layout ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [2, 3])
def test_layout_partitions_every_entity_once_in_catalog_order(built: dict[tuple[str, int], Path],
                                                             tracks: list[Entity], p: int) -> None:
    root = built["bm25f", p]
    layout = read_partitions(root)
    assert layout is not None and layout.partitions == p and layout.entities == len(tracks)
    assert json.loads((root / PARTITIONS_FILE).read_text())["query"]["strategies"] == ["memory"]
    parts = [open_strategy(d, "lexical").collection for d in partition_dirs(root, "lexical")]
    for i, c in enumerate(parts):
        assert c.ids == [e.id for e in tracks if document_partition(e.id, p) == i]
    assert list(layout.counts) == [len(c) for c in parts]
    positions = catalog_positions(root)
    assert positions == {e.id: i for i, e in enumerate(tracks)}
    infos = [partition_info(d) for d in partition_dirs(root, "lexical")]
    assert [(i.partition, i.partitions, i.catalog_entities) for i in infos if i is not None] == \
        [(k, p, len(tracks)) for k in range(p)]
    assert partition_info(partition_dirs(root, "memory")[0]) is None and partition_info(built["bm25f", 1]) is None
    assert partition_dirs(built["bm25f", 1], "lexical") == [built["bm25f", 1]]


def test_a_partitioned_directory_is_not_served_or_rebuilt_as_one_index(built: dict[tuple[str, int], Path],
                                                                      tracks: list[Entity]) -> None:
    with pytest.raises(IndexFormatError, match=r"is a partitioned index \(2 partitions, .*cannot be served"):
        open_strategy(built["bm25f", 2], "lexical")
    with pytest.raises(IndexFormatError, match="cannot be built as one index"):
        build_index(tracks, built["bm25f", 2], ["lexical"])
    with pytest.raises(IndexFormatError, match="holds a plain index"):
        build_partitioned(tracks, built["bm25f", 1], ["lexical"], partitions=2)


# -- lexical: exactly --------------------------------------------------------------------------------


@pytest.mark.parametrize("scoring", ["bm25f", "sum"])
@pytest.mark.parametrize("p", [2, 3])
def test_lexical_partitions_merge_to_the_single_index_exactly(built: dict[tuple[str, int], Path],
                                                              tracks: list[Entity], scoring: str, p: int) -> None:
    one, parts = open_all(built, scoring, p, "lexical")
    positions = catalog_positions(built[scoring, p])
    filters = [(), (Filter(field="genre", values=("rock", "pop")),), (Filter(field="genre", values=("edm",),
                                                                              exclude=True),)]
    compared = 0
    for text in queries(tracks):
        for quota in QUOTAS:
            for f in filters:
                query = Query(text=text, filters=f)
                reference = as_list(one, query, quota)
                assert_same(fan_out(parts, query, quota, positions), reference, f"{text!r} q={quota} {f}")
                compared += len(reference.entity_ids) > 0
    assert compared > 200


@pytest.mark.parametrize("p", [2, 3])
def test_lexical_scores_of_every_document_equal_the_single_index(built: dict[tuple[str, int], Path],
                                                                 tracks: list[Entity], p: int) -> None:
    """Every matching document of a broad query, not only the top: df, N and avgdl are global."""
    one, parts = open_all(built, "bm25f", p, "lexical")
    query = Query(text="love the night remix you me")
    reference = as_list(one, query, len(tracks))
    scores = dict(zip(reference.entity_ids, reference.scores.tolist(), strict=True))
    got = {eid: s for part in parts for eid, s in zip(*_pairs(as_list(part, query, len(tracks))), strict=True)}
    assert len(scores) > 500 and got == scores


def _pairs(lst: StrategyList) -> tuple[list[str], list[float]]:
    return list(lst.entity_ids), lst.scores.tolist()


@pytest.mark.parametrize("p", [2, 3])
def test_deleted_entities_are_dropped_alike(built: dict[tuple[str, int], Path], tracks: list[Entity],
                                            p: int) -> None:
    one, parts = open_all(built, "bm25f", p, "lexical")
    positions = catalog_positions(built["bm25f", p])
    query = Query(text="love")
    victims = list(as_list(one, query, 30).entity_ids[::2])
    one.collection.delete(victims)
    for part in parts:  # in memory only: the shared fixture's files stay as built
        part.collection.delete([v for v in victims if v in part.collection.ordinal])
    for quota in QUOTAS:
        merged = fan_out(parts, query, quota, positions)
        assert not set(victims) & set(merged.entity_ids)
        assert_same(merged, as_list(one, query, quota), f"quota {quota}")


def test_delete_partitioned_marks_the_owner_and_every_memory_partition(tmp_path: Path, tracks: list[Entity]) -> None:
    root = tmp_path / "idx"
    build_partitioned(tracks[:300], root, ["lexical", "memory"], {"lexical": {"progress": False}}, partitions=2,
                      progress=False)
    victim = tracks[5].id
    assert delete_partitioned(root, [victim, victim]) == 1
    assert delete_partitioned(root, [victim]) == 0
    owner = document_partition(victim, 2)
    for d in partition_dirs(root, "lexical"):
        c = open_strategy(d, "lexical").collection
        assert (victim in c.ordinal and c.ordinal[victim] in c.deleted) == (d.name == f"part-{owner}")
    for d in partition_dirs(root, "memory"):
        c = open_strategy(d, "memory", {"state_dir": str(tmp_path / d.name)}).collection
        assert c.ordinal[victim] in c.deleted
    with pytest.raises(NotFoundError, match="'nope' is not in the index"):
        delete_partitioned(root, ["nope"])


# -- attribute: exactly ------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [2, 3])
def test_attribute_partitions_understand_alike_and_merge_exactly(built: dict[tuple[str, int], Path],
                                                                 tracks: list[Entity], p: int) -> None:
    one, parts = open_all(built, "bm25f", p, "attribute")
    positions = catalog_positions(built["bm25f", p])
    compared = 0
    for text in queries(tracks):
        query = Query(text=text)
        readings = one.understand(query, 4)  # type: ignore[attr-defined]
        assert all(part.understand(query, 4) == readings for part in parts), text  # type: ignore[attr-defined]
        for quota in QUOTAS:
            for f in ((), (Filter(field="decade", values=("2010s",)),)):
                q = Query(text=text, filters=f)
                reference = as_list(one, q, quota)
                assert_same(fan_out(parts, q, quota, positions), reference, f"{text!r} q={quota} {f}")
                compared += len(reference.entity_ids) > 0
    assert compared > 150


# -- memory: the owner alone, exactly ----------------------------------------------------------------


@pytest.mark.parametrize("p", [2, 3])
def test_memory_owner_partition_equals_the_single_memory(built: dict[tuple[str, int], Path], tracks: list[Entity],
                                                         tmp_path: Path, p: int) -> None:
    now = 1.9e9
    one = open_strategy(built["bm25f", 1], "memory", {"state_dir": str(tmp_path / "one")})
    parts = [open_strategy(d, "memory", {"state_dir": str(tmp_path / d.name)})
             for d in partition_dirs(built["bm25f", p], "memory")]
    for s in (one, *parts):
        assert isinstance(s, MemoryStrategy)
        s.clock = lambda: now
    texts = queries(tracks)
    rng = np.random.default_rng(3)
    events = [FeedbackEvent(event_id=f"e{i}", query_text=texts[int(rng.integers(len(texts)))],
                            entity_id=tracks[int(rng.integers(len(tracks)))].id,
                            type=EventType.CLICK if i % 3 else EventType.SKIP, timestamp=now - 60 * i,
                            context={"affinity.genre": "rock"} if i % 2 else {})
              for i in range(400)]
    one.learn(events)  # type: ignore[attr-defined]
    for i, s in enumerate(parts):
        s.learn([e for e in events if query_partition(e.query_text, p) == i])  # type: ignore[attr-defined]
    for text in texts:
        for context in ({}, {"affinity.genre": "rock"}):
            query = Query(text=text, context=context)
            owner = parts[query_partition(text, p)]
            assert_same(as_list(owner, query, 100), as_list(one, query, 100), f"{text!r} {context}")
    for s in (one, *parts):
        s.close()  # type: ignore[attr-defined]


def test_memory_partitions_split_the_predicted_queries_by_owner(built: dict[tuple[str, int], Path],
                                                                tmp_path: Path) -> None:
    one = open_strategy(built["bm25f", 1], "memory", {"state_dir": str(tmp_path / "one")})
    keys = set(one.predicted.rows)  # type: ignore[attr-defined]
    owned = []
    for i, d in enumerate(partition_dirs(built["bm25f", 3], "memory")):
        part = open_strategy(d, "memory", {"state_dir": str(tmp_path / d.name)})
        mine = set(part.predicted.rows)  # type: ignore[attr-defined]
        assert all(query_partition(k, 3) == i and text_key(k) == k for k in mine)
        owned.append(mine)
    assert set().union(*owned) == keys and sum(map(len, owned)) == len(keys)


# -- semantic: within ANN tolerance ------------------------------------------------------------------


@pytest.mark.parametrize("p", [2, 3])
def test_semantic_partitions_merge_to_the_single_index_within_ann_tolerance(
        built: dict[tuple[str, int], Path], tracks: list[Entity], p: int) -> None:
    """recall@q of the merged list against one index's list, every index searched by HNSW
    (exact_below = 0: at this size the partitions would be searched exactly, the single index
    not), hashing encoder; the figures are printed (-s)."""
    one = open_strategy(built["bm25f", 1], "semantic", {"exact_below": 0})
    parts = [open_strategy(d, "semantic", {"exact_below": 0}) for d in partition_dirs(built["bm25f", p], "semantic")]
    positions = catalog_positions(built["bm25f", p])
    for quota in QUOTAS:
        recalls = []
        for text in queries(tracks):
            query = Query(text=text)
            reference = set(as_list(one, query, quota).entity_ids)
            if reference:
                recalls.append(len(reference & set(fan_out(parts, query, quota, positions).entity_ids))
                               / len(reference))
        print(f"semantic P={p} q={quota}: mean recall@q {np.mean(recalls):.4f} over {len(recalls)} queries")
        assert np.mean(recalls) >= 0.95


def test_rebuilding_with_fewer_partitions_removes_the_extra_directories(tmp_path: Path,
                                                                         tracks: list[Entity]) -> None:
    root = tmp_path / "idx"
    for p in (3, 2):
        build_partitioned(tracks[:200], root, ["lexical", "memory"], {"lexical": {"progress": False}}, partitions=p,
                          progress=False)
    layout = read_partitions(root)
    assert layout is not None and layout.partitions == 2
    assert sorted(d.name for d in root.iterdir()) == ["memory-0", "memory-1", "part-0", "part-1", PARTITIONS_FILE]
