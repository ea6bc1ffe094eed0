"""A live catalog: the shared entity table of one process, changed by writes while serving.

A write is an upsert of an entity (an id already live: its content is replaced, in place) or a
delete of an id. A new id (or one deleted before) gets the next ordinal, in write order; a deleted
ordinal is never reused, so ordinals only grow and a deleted entity is never returned again.
The live entities, in ordinal order, are therefore exactly the catalog a fresh offline build of
the final state would index, in the same relative order (a dict's insertion order with deletes:
`LiveCollection.catalog`), which is what the equivalence tests compare against.

LiveCollection is a core.collection.Collection (every strategy takes it unchanged): ids,
popularity, deletions and the categorical filter bitmaps follow the writes. Readers never lock:
`popularity`, `deleted` and each changed filter bitmap are replaced by new objects (copy on
write), never mutated in place, so a search holding the old ones sees a consistent state.
`apply` returns the Changes each live strategy applies in turn (core.semantic.live, ...).

Two ordinal modes. In place (the default; semantic, attribute, memory): an upsert of a live id
keeps its ordinal. Append (`in_place=False`; the lexical shard, core.live_lexical): an upsert of a
live id deletes its ordinal and appends a new one, as core.lexical.live.LiveLexicalIndex numbers
its copies, so the collection's ordinals, ids and filter bitmaps are the lexical index's own
(ids by ordinal never change: a dead copy keeps its id).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from pyroaring import BitMap

from core.catalog import Entity
from core.collection import Collection, filter_value


@dataclass(frozen=True, slots=True)
class Upsert:
    entity: Entity


@dataclass(frozen=True, slots=True)
class Delete:
    entity_id: str


Write = Upsert | Delete


@dataclass(frozen=True, slots=True)
class Change:
    """What one write did to one ordinal: old (its previous content, None when it is new) and new
    (its content now, None when deleted). A no-op write (deleting an absent id) makes no Change."""

    ordinal: int
    old: Entity | None
    new: Entity | None


class SupportsWrite(Protocol):
    """A strategy's live writer (core.semantic.live.LiveSemantic, core.attribute.live.LiveAttribute,
    core.memory.live.LiveMemory): applies, under its own lock, the Changes its strategy's
    LiveCollection returned, in order, while searches run."""

    def apply(self, changes: Sequence[Change]) -> object: ...


class LiveCollection(Collection):
    """A Collection that applies writes. entities: the content by ordinal (None once deleted); the
    constructor's may be None at the collection's deleted ordinals only (a checkpoint's:
    core.live_checkpoint)."""

    def __init__(self, entities: Sequence[Entity | None], collection: Collection, *, in_place: bool = True) -> None:
        if len(entities) != len(collection):
            raise ValueError(f"`entities` must hold the collection's {len(collection)} entities, "
                             f"but got {len(entities)}")
        if missing := [i for i, e in enumerate(entities) if e is None and i not in collection.deleted][:5]:
            raise ValueError(f"`entities` must be None at deleted ordinals only, but got None at {missing}")
        deleted = BitMap(collection.deleted)
        bitmaps = {f: {v: bits - deleted for v, bits in values.items() if bits - deleted}
                   for f, values in collection.bitmaps.items()}
        super().__init__(collection.ids, collection.popularity, deleted,
                         {f: values for f, values in bitmaps.items() if values}, collection.index_id)
        self.entities: list[Entity | None] = [None if i in collection.deleted else e
                                              for i, e in enumerate(entities)]
        self.live_ids = {e.id: i for i, e in enumerate(self.entities) if e is not None}
        self.in_place = in_place
        self.write_lock = threading.RLock()  # apply_writes holds it around the strategies' apply too
        # (popularity, deleted, max_popularity()): valid while both are those objects
        self._max_popularity: tuple[np.ndarray, BitMap, float] | None = None

    @classmethod
    def from_entities(cls, entities: Sequence[Entity], *, in_place: bool = True) -> LiveCollection:
        return cls(entities, Collection.build(entities), in_place=in_place)

    def catalog(self) -> list[Entity]:
        """The live entities in ordinal order: the catalog a fresh build of this state indexes."""
        return [e for e in self.entities if e is not None]

    def max_popularity(self) -> float:
        """The largest popularity of a live entity (0.0 when none is live); computed once per
        batch however many writers ask (O(catalog)). Keyed by the popularity array and the
        deletions, which every batch replaces (as `Collection._live` is)."""
        popularity, deleted, live = self.popularity, self.deleted, self._live()
        cache = self._max_popularity
        if cache is None or cache[0] is not popularity or cache[1] is not deleted:
            pop = popularity if live is None else popularity[live.to_array()]
            cache = (popularity, deleted, float(pop.max()) if pop.size else 0.0)
            self._max_popularity = cache
        return cache[2]

    def apply(self, writes: Sequence[Write]) -> list[Change]:
        """Apply `writes` in order (under the write lock); returns what each did, in order."""
        with self.write_lock:
            changes = [c for w in writes for c in self._one(w)]
            if changes:
                self._publish(changes)
            return changes

    def planned_new(self, writes: Sequence[Write]) -> dict[int, Entity]:
        """A dry run of apply(writes) now, in place mode: the new ordinals it would give (an id
        not live, or deleted earlier in the batch) and their content after the batch, for those
        still live at its end. What a live strategy may prepare outside the lock (core.semantic.live
        stages vectors under them); it must check them against apply's Changes."""
        if not self.in_place:
            raise ValueError("planned_new is for an in-place collection")
        following = len(self.entities)
        gone: set[str] = set()  # live ids the batch deleted
        new: dict[str, int] = {}  # id -> the new ordinal it holds in the batch so far
        content: dict[int, Entity | None] = {}
        for w in writes:
            if isinstance(w, Delete):
                if w.entity_id in new:
                    content[new.pop(w.entity_id)] = None
                elif w.entity_id in self.live_ids:
                    gone.add(w.entity_id)
                continue
            eid = w.entity.id
            if eid not in new and eid in self.live_ids and eid not in gone:
                continue  # replaced in place: an ordinal that exists already
            if eid not in new:
                new[eid], following = following, following + 1
            content[new[eid]] = w.entity
        return {o: e for o, e in content.items() if e is not None}

    def _one(self, write: Write) -> list[Change]:
        if isinstance(write, Delete):
            o = self.live_ids.pop(write.entity_id, None)
            if o is None:
                return []
            old = self.entities[o]
            self.entities[o] = None
            return [Change(o, old, None)]
        e = write.entity
        o = self.live_ids.get(e.id)
        if o is not None and self.in_place:
            old, self.entities[o] = self.entities[o], e
            return [Change(o, old, e)]
        gone = [] if o is None else self._one(Delete(e.id))
        o = len(self.entities)
        self.entities.append(e)
        self.live_ids[e.id] = o
        return [*gone, Change(o, None, e)]

    def _publish(self, changes: Sequence[Change]) -> None:
        """Make the state of `self.entities` visible: new ids and popularity first, then the
        filter bitmaps, then the deletions, each as a new object."""
        n = len(self.entities)
        popularity = np.zeros(n, dtype=np.float32)
        popularity[:len(self.popularity)] = self.popularity
        for c in changes:
            if c.new is not None:
                popularity[c.ordinal] = c.new.popularity
        for o in range(len(self.ids), n):
            entity = self.entities[o]
            # a new ordinal deleted in the same batch keeps the id it was written with
            self.ids.append(entity.id if entity is not None else self._written_id(changes, o))
            self.ordinal[self.ids[o]] = o
        for c in changes:
            if c.new is not None:
                self.ordinal[c.new.id] = c.ordinal
        self.popularity = popularity
        self._update_bitmaps(changes)
        deleted = BitMap(self.deleted)
        for c in changes:
            (deleted.add if c.new is None else deleted.discard)(c.ordinal)
        self.deleted = deleted  # a new object: the readers' caches are keyed by it (Collection._live)

    @staticmethod
    def _written_id(changes: Sequence[Change], ordinal: int) -> str:
        return next(e.id for c in changes if c.ordinal == ordinal for e in (c.old, c.new) if e is not None)

    def _update_bitmaps(self, changes: Sequence[Change]) -> None:
        """Copy on write: every (field, value) a change touches gets a new bitmap with the ordinal
        removed (old content) or added (new content); a value no entity has any more is dropped."""
        touched: dict[tuple[str, str], BitMap] = {}

        def bitmap(name: str, value: str) -> BitMap:
            key = (name, value)
            if key not in touched:
                touched[key] = BitMap(self.bitmaps.get(name, {}).get(value, BitMap()))
            return touched[key]

        for c in changes:
            for name, value in c.old.categorical() if c.old is not None else ():
                if folded := filter_value(value):
                    bitmap(name, folded).discard(c.ordinal)
            for name, value in c.new.categorical() if c.new is not None else ():
                if folded := filter_value(value):
                    bitmap(name, folded).add(c.ordinal)
        for (name, value), bits in touched.items():
            if bits:
                self.bitmaps.setdefault(name, {})[value] = bits
            else:
                self.bitmaps.get(name, {}).pop(value, None)
                if name in self.bitmaps and not self.bitmaps[name]:
                    del self.bitmaps[name]


def apply_writes(collection: LiveCollection, writers: Sequence[SupportsWrite], writes: Sequence[Write]) -> list[Change]:
    """Apply `writes` to the collection, then their Changes to every writer, under the collection's
    write lock, so concurrent batches reach every strategy in the order the collection took them."""
    with collection.write_lock:
        changes = collection.apply(writes)
        if changes:
            for w in writers:
                w.apply(changes)
        return changes
