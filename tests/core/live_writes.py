"""Random write sequences over a catalog, shared by the live-update tests of every strategy, and an
in-memory catalog log (the core.catalog_log.CatalogLog protocol) for the live shards' tests, and a
merge killed at one step."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pytest

from core import live_dir
from core.catalog import Entity
from core.catalog_log import CatalogRecord, CatalogWrite
from core.live import Delete, Upsert, Write
from core.live_base import LiveShard
from core.live_shard import catch_up
from tests.conftest import synthetic_catalog


def random_writes(base: list[Entity], fresh: list[Entity], n: int, seed: int) -> list[Write]:
    """`n` writes: new entities (taken from `fresh`, renamed to ids the base lacks), replacements of
    live ids by another entity's content (popularity changed too), deletes of live ids, and
    re-inserts of deleted ids, in a random order."""
    rng = np.random.default_rng(seed)
    live = [e.id for e in base]
    deleted: list[str] = []
    writes: list[Write] = []
    for i in range(n):
        kind = rng.choice(["new", "replace", "delete", "reinsert"], p=[0.4, 0.25, 0.25, 0.1])
        content = fresh[int(rng.integers(len(fresh)))]
        pop = float(rng.integers(0, 120))  # above the base's largest now and then
        if kind == "new" or (kind == "reinsert" and not deleted):
            eid = f"new{i:05d}"
            live.append(eid)
        elif kind == "delete":
            eid = live.pop(int(rng.integers(len(live))))
            deleted.append(eid)
            writes.append(Delete(eid))
            continue
        elif kind == "reinsert":
            eid = deleted.pop(int(rng.integers(len(deleted))))
            live.append(eid)
        else:
            eid = live[int(rng.integers(len(live)))]
        writes.append(Upsert(dataclasses.replace(content, id=eid, popularity=pop)))
    return writes


def final_catalog(base: list[Entity], writes: list[Write]) -> list[Entity]:
    """The catalog after `writes`, as a dict with insertion order: a replaced id keeps its place, a
    new or re-inserted id goes last."""
    state = {e.id: e for e in base}
    for w in writes:
        if isinstance(w, Delete):
            state.pop(w.entity_id, None)
        else:
            state[w.entity.id] = w.entity
    return list(state.values())


class ListLog:
    """A CatalogLog over a list: positions 1.., versions compared per id (deletes included), a batch
    read whole."""

    def __init__(self) -> None:
        self.records: list[CatalogRecord] = []
        self.batch_ends: list[int] = []  # per record, the last position of its batch
        self.newest: dict[str, int] = {}
        self.lock = threading.Lock()

    def append_catalog(self, writes: Sequence[CatalogWrite]) -> list[int]:
        with self.lock:
            positions = []
            for w in writes:
                if w.version <= self.newest.get(w.entity_id, 0):
                    positions.append(0)
                    continue
                self.newest[w.entity_id] = w.version
                self.records.append(CatalogRecord(len(self.records) + 1, w))
                positions.append(len(self.records))
            self.batch_ends += [len(self.records)] * (len(self.records) - len(self.batch_ends))
            return positions

    def catalog_after(self, position: int, limit: int) -> list[CatalogRecord]:
        with self.lock:
            page = self.records[position:position + limit]
            return self.records[position:self.batch_ends[page[-1].position - 1]] if page else []

    def last_catalog_position(self) -> int:
        return len(self.records)

    def read_until(self, end: int) -> Callable[[int, int], list[CatalogRecord]]:
        """A reader of the log as if position `end` were its newest: `limit` records at a time,
        batches split wherever `limit` or `end` falls (the log before batch ends existed; a test's
        cut of a log in the middle of a batch)."""
        def read(position: int, limit: int) -> list[CatalogRecord]:
            with self.lock:
                return self.records[position:max(position, min(position + limit, end))]
        return read

    def append(self, writes: Sequence[Write]) -> int:
        """Append core.live writes (versions: the next position); returns the last position."""
        batch = [CatalogWrite(w.entity_id, len(self.records) + i + 1) if isinstance(w, Delete)
                 else CatalogWrite(w.entity.id, len(self.records) + i + 1, w.entity) for i, w in enumerate(writes)]
        return max(self.append_catalog(batch))


def append_order(base: Sequence[Entity], writes: Sequence[Write]) -> list[Entity]:
    """The catalog after `writes` in the lexical shard's order: a replaced id goes last."""
    state = {e.id: e for e in base}
    for w in writes:
        state.pop(w.entity_id if isinstance(w, Delete) else w.entity.id, None)
        if isinstance(w, Upsert):
            state[w.entity.id] = w.entity
    return list(state.values())


def same_lists(a: list[list[tuple[str, float]]], b: list[list[tuple[str, float]]]) -> bool:
    """Lists of (id, score), best first: the same scores in each pair of lists, and the same ids at
    each score but the last one (the synthetic catalog's titles repeat, so many entities tie; the
    order among ties, and which of a tie at the cut make the list, follow usearch's slots: as
    faiss's check_ref_knn_with_draws)."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if [s for _, s in x] != [s for _, s in y]:
            return False
        cut = x[-1][1] if x else None
        if sorted((s, i) for i, s in x if s != cut) != sorted((s, i) for i, s in y if s != cut):
            return False
    return True


def merge_killed(monkeypatch: pytest.MonkeyPatch, module: object, name: str, shard: LiveShard) -> None:
    """shard.merge() with `module.name` raising OSError("killed") (a crash at that step); the patch
    is undone after."""

    def crash(*_: object, **__: object) -> None:
        raise OSError("killed")

    monkeypatch.setattr(module, name, crash)
    with pytest.raises(OSError, match="killed"):
        shard.merge()
    monkeypatch.undo()


def count_encodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of the entities core.live_dir encodes from now on (a list the caller may clear)."""
    encoded: list[str] = []
    real = live_dir.encode_entity

    def counting(entity: Entity) -> bytes:
        encoded.append(entity.id)
        return real(entity)

    monkeypatch.setattr(live_dir, "encode_entity", counting)
    return encoded


def merges_encoding_only_new(shard: LiveShard, reopen: Callable[[], LiveShard], log: ListLog,
                             monkeypatch: pytest.MonkeyPatch, seed: int) -> Iterator[LiveShard]:
    """Merge `shard` (its first base, from the offline index: every entity encoded), then twice more
    after 8 new upserts each, the second time after a restart (reopen()): each later merge encodes
    exactly the entities upserted since (core.live_dir.EntityLines). Yields the shard after each."""
    assert shard.merge()
    encoded = count_encodes(monkeypatch)
    for restart in (False, True):
        writes = [Upsert(dataclasses.replace(e, id=f"new-{restart}-{e.id}")) for e in synthetic_catalog(8, seed=seed)]
        log.append(writes)
        shard = reopen() if restart else shard
        catch_up(shard, log.catalog_after)
        encoded.clear()
        assert shard.merge()
        assert sorted(encoded) == sorted(w.entity.id for w in writes)
        yield shard
