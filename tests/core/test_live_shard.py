"""core.live_shard and core.live_lexical without a server: the append-mode collection is the lexical
index's ordinal space (filters right after upserts and deletes), and a crash at any point of a
merge leaves a base that a restart serves with the same results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core import live_lexical
from core.catalog import Entity, write_jsonl
from core.catalog_log import CatalogWrite
from core.collection import Collection
from core.errors import IndexFormatError
from core.eventlog import EventLog
from core.indexing import build_index
from core.live import Delete, LiveCollection, Upsert
from core.live_dir import CURRENT
from core.live_lexical import LiveLexicalShard
from core.live_shard import LiveShardConfig, catch_up, open_live_shard
from core.partitioning import build_partitioned
from core.query import Filter, make_query
from tests.conftest import synthetic_catalog
from tests.core.live_writes import ListLog, append_order, merge_killed, merges_encoding_only_new, random_writes

OPTIONS = {"fields": "title^2,artist", "progress": False}


def filtered_ids(collection: Collection, field: str, value: str) -> set[str]:
    allowed = collection.allowed([Filter(field=field, values=(value,))])
    return {collection.ids[o] for o in (allowed or [])}


def test_append_mode_numbers_an_upsert_anew_and_keeps_filters_right() -> None:
    base, fresh = synthetic_catalog(200, seed=31), synthetic_catalog(40, seed=32)
    writes = random_writes(base, fresh, 300, seed=33)
    live = LiveCollection.from_entities(base, in_place=False)
    for i in range(0, len(writes), 9):
        live.apply(writes[i:i + 9])
    final = append_order(base, writes)
    assert live.catalog() == final
    assert len(live.ids) == len(base) + sum(isinstance(w, Upsert) for w in writes)
    rebuilt = Collection.build(final)
    for field, values in rebuilt.bitmaps.items():
        for value in values:
            assert filtered_ids(live, field, value) == filtered_ids(rebuilt, field, value), (field, value)
    assert live.filter_fields == rebuilt.filter_fields and set(live.bitmaps["genre"]) == set(rebuilt.bitmaps["genre"])


@pytest.fixture
def setup(tmp_path: Path) -> tuple[LiveShardConfig, list[Entity], ListLog]:
    base = synthetic_catalog(300, seed=41)
    write_jsonl(base, tmp_path / "catalog.jsonl")
    build_index(base, tmp_path / "index", ["lexical"], {"lexical": OPTIONS})
    config = LiveShardConfig(strategy="lexical", index=str(tmp_path / "index"), catalog=str(tmp_path / "catalog.jsonl"),
                             live_dir=str(tmp_path / "live"), merge_entities=0)
    log = ListLog()
    log.append(random_writes(base, synthetic_catalog(50, seed=42), 120, seed=43))
    return config, base, log


def results(shard: Any) -> list[list[tuple[str, float]]]:
    out = []
    with shard.reading() as strategy:
        for text in ("love", "night", "artist 4", "gold dance", "blue"):
            hits = strategy.retrieve(make_query(text), 15, strategy.collection.allowed([]))
            out.append([(strategy.collection.ids[o], float(s)) for o, s in zip(hits.ordinals, hits.scores,
                                                                               strict=True)])
    return out


def opened(config: LiveShardConfig, log: ListLog) -> LiveLexicalShard:
    shard = open_live_shard(config)
    assert isinstance(shard, LiveLexicalShard)
    catch_up(shard, log.catalog_after)
    return shard


@pytest.mark.parametrize("fail_at", ["write_postings", "write_file_atomic"])
def test_a_merge_that_dies_leaves_the_last_base_serving(setup: Any, monkeypatch: pytest.MonkeyPatch,
                                                        fail_at: str) -> None:
    """A crash while the new base is written (write_postings) or just before CURRENT moves to it
    (write_file_atomic): the old base stays current, the half-made one is removed at the next start,
    and the restarted shard (old base + the log after it) answers as the one that failed."""
    config, base, log = setup
    shard = opened(config, log)
    assert shard.merge() and shard.base_position == len(log.records)
    first = (Path(config.live_dir) / CURRENT).read_text()
    log.append(random_writes(append_order(base, []), synthetic_catalog(20, seed=44), 60, seed=45))
    catch_up(shard, log.catalog_after)
    before = results(shard)
    merge_killed(monkeypatch, live_lexical, fail_at, shard)
    assert results(shard) == before  # still serving the old generation
    assert (Path(config.live_dir) / CURRENT).read_text() == first
    restarted = opened(config, log)
    assert restarted.base_position < len(log.records) and results(restarted) == before
    assert sorted(p.name for p in Path(config.live_dir).iterdir()) == sorted([CURRENT, first])


def test_a_merged_base_is_kept_across_restarts_and_replaced_by_the_next(setup: Any) -> None:
    config, base, log = setup
    shard = opened(config, log)
    assert shard.merge()
    position = shard.base_position
    restarted = opened(config, log)
    assert restarted.base_position == position and results(restarted) == results(shard)
    log.append([Delete(e.id) for e in append_order(base, [])[:5]])
    catch_up(restarted, log.catalog_after)
    assert restarted.merge() and restarted.base_position == len(log.records)
    assert len(list(Path(config.live_dir).glob("base-*"))) == 1


def test_a_partitioned_index_directory_itself_is_refused(tmp_path: Path) -> None:
    """The root of a partitioned index is no index (partitions: tests/core/test_live_partition.py)."""
    entities = synthetic_catalog(60, seed=51)
    write_jsonl(entities, tmp_path / "catalog.jsonl")
    build_partitioned(entities, tmp_path / "index", ["memory"], partitions=2, progress=False)
    config = LiveShardConfig(strategy="memory", index=str(tmp_path / "index"),
                             catalog=str(tmp_path / "catalog.jsonl"), live_dir=str(tmp_path / "live"))
    with pytest.raises(IndexFormatError, match="partition"):
        open_live_shard(config)


def test_a_batch_that_fails_stops_the_shard_applying(setup: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch that raises half-way may leave part of it applied: the shard refuses every later
    batch (a restart replays the log over the base) instead of applying over a torn state."""
    config, _, log = setup
    shard = opened(config, log)
    position = shard.applied_position
    monkeypatch.setattr(shard.generation.index, "add", lambda _: (_ for _ in ()).throw(OSError("disk")))
    log.append([Upsert(Entity(id="x1", fields={"title": "omega"}))])
    with pytest.raises(OSError, match="disk"):
        catch_up(shard, log.catalog_after)
    monkeypatch.undo()
    with pytest.raises(RuntimeError, match="restart the shard"):
        catch_up(shard, log.catalog_after)
    assert shard.applied_position == position
    assert not shard.merge() and not Path(config.live_dir, CURRENT).exists()  # a torn state never becomes a base
    restarted = opened(config, log)
    assert restarted.applied_position == len(log.records)


def test_a_merge_serves_the_collection_it_wrote_and_encodes_only_new_entities(setup: Any,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The new generation's collection is the one written, not read back: it equals
    Collection.load of the base, content id included. Each merge after the first encodes only the
    entities written since the last base (core.live_dir.EntityLines), after a restart too."""
    config, _, log = setup
    loads: list[Path] = []
    load = Collection.load.__func__  # type: ignore[attr-defined]

    def counted(cls: type[Collection], root: Path) -> Collection:
        loads.append(Path(root))
        return load(cls, root)

    monkeypatch.setattr(Collection, "load", classmethod(counted))
    first = opened(config, log)
    loads.clear()
    shards = merges_encoding_only_new(first, lambda: opened(config, log), log, monkeypatch, 46)
    for restart, shard in zip((False, True), shards, strict=True):
        assert restart or loads == []  # two merges, no collection read back (the restart reads one)
        root = Path(config.live_dir) / (Path(config.live_dir) / CURRENT).read_text()
        loaded, served = Collection.load(root), shard.strategy.collection
        assert served.index_id == loaded.index_id and served.ids == loaded.ids
        assert {f: {v: list(b) for v, b in values.items()} for f, values in served.bitmaps.items()} == \
            {f: {v: list(b) for v, b in values.items()} for f, values in loaded.bitmaps.items()}
        assert results(opened(config, log)) == results(shard)


def test_a_batch_straddling_a_read_is_applied_whole(setup: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                     ) -> None:
    """Two batches of 600 writes, read 1,000 records at a time (the tail's read): the shard applies
    both at once, never the first 1,000 (a search would see part of the second batch)."""
    config, _, _ = setup
    shard = opened(config, ListLog())
    fresh = synthetic_catalog(1200, seed=44)
    seen: list[int] = []
    with EventLog(tmp_path / "events.sqlite") as store:
        for i in (0, 600):
            store.append_catalog([CatalogWrite(e.id, 1, e) for e in fresh[i:i + 600]])
        real = shard.apply

        def apply(records: Any, *args: Any) -> int:
            applied = real(records, *args)
            seen.append(shard.applied_position)
            return applied

        monkeypatch.setattr(shard, "apply", apply)
        assert catch_up(shard, store.catalog_after, batch=1000) == 1200
    assert seen == [1200]
