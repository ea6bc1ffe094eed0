"""Live shards over partitions (core.live_partition): after random writes, P = 2 partitions merged as
the broker merges them (core.partitions.merge_partitions) give what one unpartitioned live shard
over the same log gives: lexical ids and scores exactly, semantic the same top lists, memory the
same pairs on the key's owner only; every partition returns only what it owns; a restarted
partition replays the log to the same results. Oracle: the unpartitioned live shard of the same
catalog (itself checked against fresh offline builds in tests/core/test_live.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.catalog import demo_catalog_path, load_jsonl, write_jsonl
from core.indexing import build_index, open_strategy
from core.lexical.index import LexicalIndex
from core.live import LiveCollection, Upsert
from core.live_partition import Ownership, outside_df, partition_of
from core.live_shard import LiveShard, LiveShardConfig, catch_up, open_live_shard
from core.memory.live import LiveMemory
from core.merge import StrategyList
from core.partitioning import build_partitioned
from core.partitions import document_partition, merge_partitions, query_partition
from core.query import make_query
from tests.core.live_writes import ListLog, random_writes

P = 2
QUOTA = 15
NEW_ARTIST = "Zorvanelle Quist"
TEXTS_EXTRA = ["zorvanele quist", "90s rock", "chill pop", "happy edm", "latin"]
STRATEGIES = ["lexical", "semantic", "attribute", "memory"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tracks = load_jsonl(demo_catalog_path())
    base, fresh = tracks[:500], tracks[500:620]
    root = tmp_path_factory.mktemp("live-partition")
    write_jsonl(base, root / "catalog.jsonl")
    options = {"lexical": {"fields": "title^2,artist^1.5,album^0.5", "progress": False},
               "semantic": {"encoder": "hashing", "cache": str(root / "embeddings"), "progress": False}}
    build_index(base, root / "plain", STRATEGIES, options)
    build_partitioned(base, root / "parts", STRATEGIES, options, partitions=P, progress=False)
    log = ListLog()
    log.append(random_writes(base, fresh, 400, seed=151))
    log.append([Upsert(dataclasses.replace(fresh[0], id="release-1", fields={**fresh[0].fields, "artist": NEW_ARTIST},
                                           attributes={**fresh[0].attributes, "artist": NEW_ARTIST}))])
    texts = [e.fields["title"] for e in fresh[:25]] + [e.fields["title"] for e in base[::40]] + \
        ["love", "the night", "remix", "live version", *TEXTS_EXTRA]
    return {"root": root, "log": log, "texts": texts}


def config(world: dict[str, Any], strategy: str, index: Path, live: str) -> LiveShardConfig:
    return LiveShardConfig(strategy=strategy, index=str(index), catalog=str(world["root"] / "catalog.jsonl"),
                           live_dir=str(world["root"] / "live" / live), merge_entities=0)


def shards(world: dict[str, Any], strategy: str, upto: int, tag: str = "") -> tuple[LiveShard, list[LiveShard]]:
    """(the unpartitioned shard, the P partitions' shards), each caught up with the log's first `upto` records."""
    root, log = world["root"], world["log"]
    folder = "memory-{}" if strategy == "memory" else "part-{}"
    read = log.read_until(upto)
    plain = open_live_shard(config(world, strategy, root / "plain", f"{strategy}-plain{tag}"))
    parts = [open_live_shard(config(world, strategy, root / "parts" / folder.format(p), f"{strategy}-{p}{tag}"))
             for p in range(P)]
    for shard in (plain, *parts):
        catch_up(shard, read, batch=37)
    return plain, parts


def top(shard: LiveShard, text: str) -> StrategyList:
    with shard.reading() as strategy:
        hits = strategy.retrieve(make_query(text), QUOTA, strategy.collection.allowed([]))
        ids = [strategy.collection.ids[o] for o in hits.ordinals.tolist()]
    return StrategyList("s", ids, np.asarray(hits.scores, dtype=np.float32))


def merged_and_whole(plain: LiveShard, parts: list[LiveShard], positions: dict[str, int], text: str
                     ) -> tuple[StrategyList, StrategyList]:
    """The partitions' lists for `text` (each holding only its own entities) merged as the broker
    merges them, and the unpartitioned shard's list."""
    lists = [top(shard, text) for shard in parts]
    for p, lst in enumerate(lists):
        assert all(document_partition(e, P) == p for e in lst.entity_ids), text
    return merge_partitions("s", lists, QUOTA, positions), top(plain, text)


def live_ids(shard: LiveShard) -> dict[str, int]:
    with shard.reading() as strategy:
        collection = strategy.collection
        assert isinstance(collection, LiveCollection)
        return dict(collection.live_ids)


@pytest.mark.parametrize("upto", [130, 400])
def test_lexical_partitions_merge_to_the_unpartitioned_live_shard_exactly(world: dict[str, Any], upto: int) -> None:
    plain, parts = shards(world, "lexical", upto)
    positions = live_ids(plain)  # append-mode ordinals: the unpartitioned shard's tie order
    for p, shard in enumerate(parts):
        assert set(live_ids(shard)) == {e for e in positions if document_partition(e, P) == p}
    for text in world["texts"]:
        merged, want = merged_and_whole(plain, parts, positions, text)
        assert merged.entity_ids == want.entity_ids, text
        assert merged.scores.tolist() == want.scores.tolist(), text


def catch_up_to(shard: LiveShard, log: ListLog, upto: int) -> None:
    catch_up(shard, log.read_until(upto))


def test_a_partition_merge_keeps_its_scores_and_a_restart_serves_the_merged_base(world: dict[str, Any]) -> None:
    plain, parts = shards(world, "lexical", 200, tag="-merge")
    before = [[top(shard, text) for text in world["texts"]] for shard in parts]
    for shard in parts:
        assert shard.merge() and shard.base_position == 200 and shard.pending_entities == 0
    after = [[top(shard, text) for text in world["texts"]] for shard in parts]
    for lists_before, lists_after in zip(before, after, strict=True):
        assert [x.entity_ids for x in lists_after] == [x.entity_ids for x in lists_before]
        assert [x.scores.tolist() for x in lists_after] == [x.scores.tolist() for x in lists_before]
    for shard in (plain, *parts):  # writes on top of the merged bases; the unpartitioned shard never merged
        catch_up_to(shard, world["log"], 10**9)
    positions = live_ids(plain)
    for text in world["texts"]:
        merged = merge_partitions("s", [top(shard, text) for shard in parts], QUOTA, positions)
        want = top(plain, text)
        assert merged.entity_ids == want.entity_ids and merged.scores.tolist() == want.scores.tolist(), text
    _, again = shards(world, "lexical", 10**9, tag="-merge")
    for a, b in zip(parts, again, strict=True):
        assert b.base_position == 200
        for text in world["texts"]:
            x, y = top(a, text), top(b, text)
            assert x.entity_ids == y.entity_ids and x.scores.tolist() == y.scores.tolist(), text


def test_a_term_only_other_partitions_hold_keeps_its_whole_catalog_df(world: dict[str, Any]) -> None:
    part = world["root"] / "parts" / "part-0"
    base, whole = open_strategy(part, "lexical", {}), open_strategy(world["root"] / "plain", "lexical", {})
    assert isinstance(base, LexicalIndex) and isinstance(whole, LexicalIndex)
    owner = partition_of(str(part))
    assert owner == Ownership(0, P)
    outside = outside_df(str(part), base, owner)
    assert outside and all(term not in base.vocab[g] for g, term in outside)
    for (g, term), df in outside.items():
        assert df == int(whole.df[whole.vocab[g][term]]), term


def test_semantic_partitions_hold_their_entities_and_merge_to_the_unpartitioned_lists(world: dict[str, Any]) -> None:
    plain, parts = shards(world, "semantic", 400)
    positions = live_ids(plain)
    for p, shard in enumerate(parts):
        assert set(live_ids(shard)) == {e for e in positions if document_partition(e, P) == p}
    for text in world["texts"]:
        merged, want = merged_and_whole(plain, parts, positions, text)
        assert merged.entity_ids == want.entity_ids, text
        np.testing.assert_allclose(merged.scores, want.scores, rtol=1e-5)


def test_attribute_partitions_return_their_entities_scored_as_the_whole_live_index(world: dict[str, Any]) -> None:
    plain, parts = shards(world, "attribute", 10**9)
    positions = live_ids(plain)  # in place: the same ordinals in every attribute shard (whole collections)
    for text in world["texts"]:
        merged, want = merged_and_whole(plain, parts, positions, text)
        assert merged.entity_ids == want.entity_ids, text
        assert merged.scores.tolist() == want.scores.tolist(), text
    owner = document_partition("release-1", P)
    assert "release-1" in top(parts[owner], "zorvanele quist").entity_ids  # a new artist, one typo
    assert "release-1" not in top(parts[1 - owner], "zorvanele quist").entity_ids


def pairs(shard: LiveShard, key: str) -> list[tuple[str, float]]:
    writer = shard.writer  # type: ignore[attr-defined]
    assert isinstance(writer, LiveMemory)
    ordinals, scores = writer.predicted.pairs(key)
    ids = shard.strategy.collection.ids
    return [(ids[o], s) for o, s in zip(ordinals.tolist(), scores.tolist(), strict=True)]


def test_memory_partitions_keep_the_predicted_queries_of_their_keys(world: dict[str, Any]) -> None:
    plain, parts = shards(world, "memory", 400)
    keys = set(plain.writer.predicted.by_key)  # type: ignore[attr-defined]
    assert keys == set().union(*(s.writer.predicted.by_key for s in parts))  # type: ignore[attr-defined]
    for key in sorted(keys):
        owner = query_partition(key, P)
        assert pairs(parts[owner], key) == pairs(plain, key), key
        assert pairs(parts[1 - owner], key) == [], key


@pytest.mark.parametrize("strategy", ["lexical", "semantic", "attribute"])
def test_a_restarted_partition_replays_to_the_same_results(world: dict[str, Any], strategy: str) -> None:
    _, parts = shards(world, strategy, 10**9)
    _, again = shards(world, strategy, 10**9)
    for text in world["texts"]:
        for a, b in zip(parts, again, strict=True):
            x, y = top(a, text), top(b, text)
            assert x.entity_ids == y.entity_ids and x.scores.tolist() == y.scores.tolist(), text
