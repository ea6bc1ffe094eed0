"""Checkpoints of the live semantic shard (core.live_checkpoint): a shard restarted from its newest
checkpoint answers as the one that never restarted (ids and scores) and re-encodes only the upserts
after it; a crash while a checkpoint is written restarts from the previous one; a delete before
the checkpoint stays deleted. Oracle: the shard that applied the whole log without restarting."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core import live_checkpoint
from core.catalog import Entity, write_jsonl
from core.indexing import build_index
from core.live import Delete, LiveCollection, Upsert, Write
from core.live_dir import BASE_FILE, CURRENT
from core.live_shard import LiveShardConfig, WriterShard, catch_up, open_live_shard
from core.query import Filter, make_query
from core.semantic.encoders import HashingEncoder
from tests.conftest import synthetic_catalog
from tests.core.live_writes import (
    ListLog,
    final_catalog,
    merge_killed,
    merges_encoding_only_new,
    random_writes,
    same_lists,
)

OPTIONS = {"encoder": "hashing", "cache": "off", "progress": False}
TEXTS = ("love", "night dance", "artist 4", "gold", "blue river", "quiet storm")


@pytest.fixture
def world(tmp_path: Path) -> tuple[LiveShardConfig, list[Entity], ListLog]:
    base = synthetic_catalog(300, seed=61)
    write_jsonl(base, tmp_path / "catalog.jsonl")
    build_index(base, tmp_path / "index", ["semantic"], {"semantic": OPTIONS})
    config = LiveShardConfig(strategy="semantic", index=str(tmp_path / "index"),
                             catalog=str(tmp_path / "catalog.jsonl"), live_dir=str(tmp_path / "live"), merge_entities=0)
    log = ListLog()
    log.append(random_writes(base, synthetic_catalog(60, seed=62), 150, seed=63))
    return config, base, log


@pytest.fixture
def encoded(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every text the hashing encoder encodes from now on, in order."""
    texts: list[str] = []
    encode = HashingEncoder.encode

    def counting(self: HashingEncoder, batch: Sequence[str], **kwargs: Any) -> np.ndarray:
        texts.extend(batch)
        return encode(self, batch, **kwargs)

    monkeypatch.setattr(HashingEncoder, "encode", counting)
    yield texts


def opened(config: LiveShardConfig, log: ListLog, batch: int = 23) -> WriterShard:
    """The shard at its base, caught up with `log` exactly `batch` records at a time, whatever the
    log's batches (ListLog.read_until; a read encodes each distinct text once: reads of 1 encode
    one text per upsert)."""
    shard = open_live_shard(config)
    assert isinstance(shard, WriterShard)
    catch_up(shard, log.read_until(log.last_catalog_position()), batch=batch)
    return shard


def results(shard: WriterShard, quota: int = 20) -> list[list[tuple[str, float]]]:
    """Top `quota` (id, score) per text: unfiltered, live only, and filtered on a genre."""
    out = []
    with shard.reading() as strategy:
        for text in TEXTS:
            for allowed in (None, strategy.collection.allowed([]),
                            strategy.collection.allowed([Filter(field="genre", values=("rock",))])):
                hits = strategy.retrieve(make_query(text), quota, allowed)
                out.append([(strategy.collection.ids[o], float(s)) for o, s in zip(hits.ordinals, hits.scores,
                                                                                   strict=True)])
    return out


def state(collection: LiveCollection) -> tuple[Any, ...]:
    return (collection.ids, collection.entities, collection.popularity.tolist(), collection.deleted.to_array().tolist(),
            {f: {v: b.to_array().tolist() for v, b in values.items()} for f, values in collection.bitmaps.items()})


def upserts(writes: Sequence[Write]) -> int:
    return sum(isinstance(w, Upsert) for w in writes)


@pytest.mark.parametrize("exact_below", [0, 2048])  # 0: the HNSW graph; 2048: brute force over the stored vectors
def test_a_restart_from_a_checkpoint_answers_the_same_and_encodes_only_later_writes(
        world: Any, encoded: list[str], exact_below: int) -> None:
    config, base, log = world
    config = dataclasses.replace(config, options={"exact_below": exact_below})
    shard = opened(config, log)
    assert shard.merge() and shard.base_position == len(log.records) and shard.merges == 1
    assert shard.pending_entities == 0 and not shard.merge()  # nothing new since
    restarted = opened(config, log)
    assert restarted.base_position == len(log.records) and same_lists(results(restarted), results(shard))
    later = random_writes(final_catalog(base, [r.write.as_write() for r in log.records]),
                          synthetic_catalog(40, seed=64), 80, seed=65)
    log.append(later)
    catch_up(shard, log.catalog_after, batch=23)
    encoded.clear()
    again = opened(config, log, batch=1)
    assert len(encoded) == upserts(later)  # the writes after the checkpoint only
    assert state(again.collection) == state(shard.collection)
    if exact_below:  # exact scores over the same vectors; the graph grows differently after a restart
        assert same_lists(results(again), results(shard))


def test_a_search_runs_while_a_checkpoint_is_taken(world: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The snapshot (the usearch index's bytes: tens of ms on a real catalog) holds batches off,
    not searches: one runs to the end in the middle of it, and the checkpoint is the state at the
    position it names (a restart from it answers as the shard did then)."""
    config, _, log = world
    shard = opened(config, log)
    seen: list[list[list[tuple[str, float]]]] = []
    take = live_checkpoint.Checkpoints.take

    def searching_meanwhile(*args: Any) -> Any:
        assert shard.applying.locked() and not shard.lock.locked()
        seen.append(results(shard))  # would wait forever if the snapshot held the searches' lock
        return take(*args)

    monkeypatch.setattr(live_checkpoint.Checkpoints, "take", staticmethod(searching_meanwhile))
    assert shard.merge() and len(seen) == 1
    assert same_lists(results(opened(config, log)), seen[0])


def test_without_a_live_dir_a_restart_replays_the_whole_log(world: Any, encoded: list[str]) -> None:
    """An empty live_dir keeps the behaviour before checkpoints: none is written, every start
    re-encodes every upsert of the log."""
    config, _, log = world
    config = dataclasses.replace(config, live_dir="", merge_entities=10)
    shard = opened(config, log)
    assert not shard.merge_wanted() and not shard.merge()
    encoded.clear()
    again = opened(config, log, batch=1)
    assert again.base_position == 0 and len(encoded) == upserts([r.write.as_write() for r in log.records])
    assert same_lists(results(again), results(shard))


def test_a_checkpoint_is_wanted_after_merge_entities_writes(world: Any) -> None:
    config, _, log = world
    config = dataclasses.replace(config, merge_entities=100)
    shard = open_live_shard(config)
    assert isinstance(shard, WriterShard)
    catch_up(shard, log.read_until(100))
    assert shard.writes == 100 and not shard.merge_wanted()  # more than 100 start one, as a lexical merge
    catch_up(shard, log.catalog_after)
    assert shard.merge_wanted() and shard.merge() and not shard.merge_wanted() and shard.writes == 0


@pytest.mark.parametrize("fail_at", ["write_entities", "publish_base"])
def test_a_checkpoint_that_dies_leaves_the_previous_one_current(world: Any, monkeypatch: pytest.MonkeyPatch,
                                                                fail_at: str) -> None:
    """A crash half-way through a checkpoint's files (write_entities: no entities, no base.json) or
    once complete but before CURRENT names it (publish_base): the previous checkpoint stays current,
    the half-made one is removed at the next start, and the restarted shard (previous checkpoint +
    the log after it) answers as the one that failed."""
    config, base, log = world
    shard = opened(config, log)
    assert shard.merge()
    first, position = (Path(config.live_dir) / CURRENT).read_text(), shard.base_position
    log.append(random_writes(final_catalog(base, [r.write.as_write() for r in log.records]),
                             synthetic_catalog(30, seed=66), 60, seed=67))
    catch_up(shard, log.catalog_after)
    before = results(shard)
    merge_killed(monkeypatch, live_checkpoint, fail_at, shard)
    made = sorted(p.name for p in Path(config.live_dir).glob("base-*") if p.name != first)
    assert len(made) == 1 and (fail_at == "publish_base") == (Path(config.live_dir) / made[0] / BASE_FILE).is_file()
    assert shard.base_position == position and same_lists(results(shard), before)
    assert (Path(config.live_dir) / CURRENT).read_text() == first
    restarted = opened(config, log)
    assert restarted.base_position == position and same_lists(results(restarted), before)
    assert sorted(p.name for p in Path(config.live_dir).iterdir()) == sorted([CURRENT, first])


def test_a_delete_before_the_checkpoint_stays_deleted(world: Any) -> None:
    """Deleted entities (offline ones and written ones) are neither live in the restored collection
    nor returned by a search, even one without an allowed set (their vectors are not in the saved index)."""
    config, base, log = world
    gone = [base[3], base[40]]
    log.append([Upsert(Entity(id="w1", fields={"title": "crimson lighthouse"})), *(Delete(e.id) for e in gone),
                Delete("w1")])
    shard = opened(config, log)
    assert shard.merge()
    restarted = opened(config, log)
    assert restarted.base_position == len(log.records)
    dead = {"w1", *(e.id for e in gone)}
    assert not dead & set(restarted.collection.live_ids)
    with restarted.reading() as strategy:
        for text in ("crimson lighthouse", *(e.fields["title"] for e in gone)):
            hits = strategy.retrieve(make_query(text), 400, None)
            assert not dead & {strategy.collection.ids[o] for o in hits.ordinals.tolist()}, text


def test_a_checkpoint_of_another_offline_index_is_not_used(world: Any, tmp_path: Path) -> None:
    """A rebuilt offline index (another catalog) starts from itself; the old checkpoints are removed."""
    config, _, log = world
    assert opened(config, log).merge()
    other = synthetic_catalog(200, seed=68)
    write_jsonl(other, tmp_path / "catalog.jsonl")
    build_index(other, tmp_path / "index", ["semantic"], {"semantic": OPTIONS})
    fresh = ListLog()
    shard = opened(config, fresh)
    assert shard.base_position == 0 and shard.collection.catalog() == other
    assert not list(Path(config.live_dir).glob("base-*")) and not (Path(config.live_dir) / CURRENT).exists()


def test_a_shard_whose_batch_failed_writes_no_checkpoint(world: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch that raised may be half-applied: that torn state must never become a checkpoint
    (a restart would then skip the batch's other writes)."""
    config, _, log = world
    shard = opened(config, log)
    monkeypatch.setattr(shard.writer, "apply", lambda _: (_ for _ in ()).throw(OSError("disk")))
    log.append([Upsert(Entity(id="x1", fields={"title": "omega"}))])
    with pytest.raises(OSError, match="disk"):
        catch_up(shard, log.catalog_after)
    assert not shard.merge() and not (Path(config.live_dir) / CURRENT).exists()


def test_a_checkpoint_encodes_only_the_entities_written_since_the_last(world: Any,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint copies the entities-file lines of the entities the last one held (core.live_dir.
    EntityLines), after a restart too; the restored collection is what it was."""
    config, _, log = world
    for shard in merges_encoding_only_new(opened(config, log), lambda: opened(config, log), log, monkeypatch, 68):
        assert isinstance(shard, WriterShard)
        assert opened(config, log).collection.entities == shard.collection.entities
