"""The live lexical shard: core.lexical.live.LiveLexicalIndex beside an append-mode LiveCollection,
merged in the background into new bases in the shard's live directory.

Ordinals: the collection is core.live.LiveCollection with `in_place=False`, so an upsert of a live
id deletes its ordinal and appends a new one, exactly as LiveLexicalIndex numbers its copies; ids,
popularity, deletions and filter bitmaps are therefore in the lexical index's own ordinal space
(`allowed` and the ids of hits are right after upserts and deletes). The pair is one
`LexicalGeneration`; a merge renumbers ordinals, so it builds a NEW generation (new base, new
collection) and the shard swaps the whole object under its lock: a search holds one generation
from its filters to its ids.

Live directory (one per replica; core.live_dir): CURRENT and base-<position>-<ns>/ holding the
"collection" and "lexical" components, entities.jsonl.gz and base.json. A merge writes a new base
completely, fsyncs it, then replaces CURRENT, then swaps in memory and removes the other bases.
Start: the base CURRENT names (or the offline index at position 0 when there is none, or when it
was merged from another offline index), then the log replayed after the base's position.

The merged base's lexical files equal a fresh offline build of the live catalog (core.lexical.
live_merge), and so do its searches (a live search before a merge counts dead copies in its
statistics, as Lucene does: it equals a fresh build of every copy written, dead ones masked).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pyroaring import BitMap

from core.catalog import Entity
from core.collection import Collection
from core.indexing import open_strategy
from core.lexical.build import Postings
from core.lexical.index import LexicalIndex, write_postings
from core.lexical.live import LiveLexicalIndex
from core.lexical.live_merge import merged_postings
from core.lexical.segments import View
from core.lexical.stats import CorpusStats
from core.live import Delete, LiveCollection, Write
from core.live_base import LiveShard, LiveShardConfig, catalog_entities
from core.live_dir import (
    CURRENT,
    EntityLines,
    finish_base,
    new_base_dir,
    read_entities,
    remove_bases,
    source_index_id,
    usable_base,
    write_entities,
)
from core.query import Query
from core.storage import write_file_atomic
from core.types import Hits, StrategyKind

# a partition's merge: merged postings -> (the whole catalog's statistics and df per term, more files)
PartitionHook = Callable[[Postings], tuple[tuple[CorpusStats, np.ndarray], Mapping[str, bytes]]]
# a partition's df of the terms only its sibling partitions hold: (a base's directory, its index) -> (group, term) -> df
OutsideDf = Callable[[Path, LexicalIndex], Mapping[tuple[int, str], int]]


class LexicalGeneration:
    """One lexical base with its delta and the collection in its ordinal space; a core Strategy."""

    kind = StrategyKind.LEXICAL
    vector_dim = 0

    def __init__(self, index: LiveLexicalIndex, collection: LiveCollection,
                 owns: Callable[[str], bool] | None = None) -> None:
        if collection.in_place:
            raise ValueError("`collection` must number upserts as new ordinals (in_place=False)")
        self.owns = owns  # a document partition's (core.live_partition): the ids it keeps searchable
        self.index = index
        self.live = collection
        self.collection: Collection = collection  # the Strategy protocol's type; `live` is the same object

    def retrieve(self, query: Query, quota: int, allowed: BitMap | None) -> Hits:
        return self.index.retrieve(query, quota, allowed)

    def warm_up(self) -> None:
        self.index.warm_up()

    def describe(self) -> dict[str, str]:
        return self.index.describe()

    def apply(self, writes: Sequence[Write]) -> None:
        """Apply `writes` to the collection, then to the index, in one ordinal space (a partition:
        core.live_partition.owned_writes of them)."""
        if self.owns is not None:
            writes = owned_writes(writes, self.owns)
        expected = len(self.live.ids)  # the collection appends one ordinal per upsert, in order
        self.live.apply(writes)
        for w in writes:
            if isinstance(w, Delete):
                if w.entity_id in self.index:
                    self.index.delete(w.entity_id)
                continue
            ordinal = self.index.add(w.entity)
            if ordinal != expected:
                raise RuntimeError(f"lexical ordinal {ordinal} of {w.entity.id!r} differs from the collection's "
                                   f"{expected}")
            expected += 1


def owned_writes(writes: Sequence[Write], owns: Callable[[str], bool]) -> list[Write]:
    """The writes a lexical partition applies: an upsert of an entity it does not own is added
    (so its statistics count it, like every partition's and an unpartitioned index's) and deleted
    at once (so it is never found here); a delete of one it does not own changes nothing (a dead
    copy keeps counting until a merge), so it is dropped."""
    out: list[Write] = []
    for w in writes:
        if isinstance(w, Delete):
            if owns(w.entity_id):
                out.append(w)
        else:
            out.append(w)
            if not owns(w.entity.id):
                out.append(Delete(w.entity.id))
    return out


def open_lexical(root: str | os.PathLike[str], options: Mapping[str, Any]) -> LexicalIndex:
    """The lexical index at `root` (an offline index or a merged base), its collection loaded."""
    base = open_strategy(root, "lexical", options)
    if not isinstance(base, LexicalIndex):
        raise TypeError(f"expected a LexicalIndex, got {type(base).__name__}")
    return base


def open_generation(root: Path, base: LexicalIndex, entities: Sequence[Entity], outside: OutsideDf | None = None,
                    owns: Callable[[str], bool] | None = None) -> LexicalGeneration:
    """The generation over `base` (the index at `root`) whose live entities are `entities`, in its
    ordinal order; a lexical partition's: `outside` gives the df of the terms only its sibling
    partitions hold, `owns` the ids it keeps searchable (core.live_partition)."""
    known = None if outside is None else outside(root, base)
    return LexicalGeneration(LiveLexicalIndex(base, known), LiveCollection(entities, base.collection, in_place=False),
                             owns)


class LiveLexicalShard(LiveShard):
    """See the module docstring. merge() runs on the caller's thread (the shard server's merge
    thread); writes keep being applied while it runs and are carried into the new generation."""

    def __init__(self, config: LiveShardConfig, generation: LexicalGeneration, position: int,
                 source_index_id: str, outside: OutsideDf | None = None,
                 entity_lines: EntityLines | None = None) -> None:
        super().__init__(position)
        # the entities file this shard last wrote or read (core.live_dir.EntityLines)
        self.entity_lines = entity_lines or EntityLines()
        self.config = config
        self.outside = outside  # a partition's (open_generation); every generation it opens gets it
        self.live_dir = Path(config.live_dir)
        self.source_index_id = source_index_id  # the offline index's id, recorded in every merged base
        self._strategy = generation
        self._carry: list[Write] | None = None  # writes applied since a running merge's snapshot

    @property
    def generation(self) -> LexicalGeneration:
        gen = self.strategy
        if not isinstance(gen, LexicalGeneration):
            raise TypeError("the live lexical shard serves a LexicalGeneration")
        return gen

    @property
    def pending_entities(self) -> int:
        return self.generation.index.delta_size

    def _apply(self, writes: Sequence[Write]) -> None:
        self.generation.apply(writes)
        if self._carry is not None:
            self._carry.extend(writes)

    def _write_base(self, view: View, catalog: Sequence[Entity], bitmaps: Mapping[str, Mapping[str, BitMap]],
                    position: int) -> tuple[Path, Collection]:
        return write_base(self.live_dir, view, catalog, bitmaps, position, self.source_index_id,
                          self.entity_lines)

    def _open(self, root: Path, collection: Collection, catalog: Sequence[Entity]) -> LexicalGeneration:
        """The generation of the base just written at `root`, over its `collection` as written (not
        read back: its filter directory's JSON alone holds the GIL for 15-60 ms to parse)."""
        base = LexicalIndex.load(root, collection, self.config.options)
        return open_generation(root, base, catalog, self.outside, self.generation.owns)

    def _merge_limit(self) -> int:
        return self.config.merge_entities

    def _merge(self) -> bool:
        try:
            return self._fold()
        except BaseException:
            with self.applying:  # a batch may be carrying writes this very moment
                self._carry = None
            raise

    def _fold(self) -> bool:
        """The merge (module docstring): the delta and base as of now folded into a new base,
        the writes applied meanwhile carried into it, swapped in."""
        with self.lock:
            if self._unmergeable():
                return False
            gen = self.generation
            view, position, catalog = gen.index.view(), self.applied_position, gen.live.catalog()
            # bitmaps are replaced, never changed (copy on write): a shallow copy is a snapshot
            bitmaps = {name: dict(values) for name, values in gen.live.bitmaps.items()}
            self._carry = []
        root, collection = self._write_base(view, catalog, bitmaps, position)
        new = self._open(root, collection, catalog)
        new.warm_up()
        with self.lock:
            done = len(self._carry)
            carried = list(self._carry)
        new.apply(carried)  # most of the carried writes outside the lock
        write_file_atomic(self.live_dir / CURRENT, root.name.encode())
        with self.lock:
            new.apply(self._carry[done:])
            self._strategy = new
            self.base_position = position
            self._carry = None
            self.merges += 1
        remove_bases(self.live_dir, keep=root.name)
        return True


def write_base(live_dir: Path, view: View, catalog: Sequence[Entity], bitmaps: Mapping[str, Mapping[str, BitMap]],
               position: int, source_index_id: str, entity_lines: EntityLines,
               partition: PartitionHook | None = None
               ) -> tuple[Path, Collection]:
    """Write the merged base of `view` (whose live documents are `catalog`, in order, and whose
    collection's filter bitmaps, over the view's ordinals, are `bitmaps`) as a new base directory
    under live_dir, every file fsync'd; returns it and its collection. CURRENT is not touched. The
    collection is the live one renumbered (what Collection.build of `catalog` makes, without
    re-reading every entity).
    A partition's (core.live_partition): partition(postings) gives the whole catalog's statistics
    and df stored with them, and more files of the base (name -> bytes). entity_lines: the
    shard's (core.live_dir.EntityLines: the unchanged entities' lines are copied from it)."""
    postings, ids, popularity, new_of_old = merged_postings(view)
    if ids != [e.id for e in catalog]:
        raise RuntimeError("the merged lexical documents differ from the live collection's entities")
    root = new_base_dir(live_dir, position)
    corpus, extra = (None, {}) if partition is None else partition(postings)
    write_postings(postings, view.segments.base.config, root, progress=False, corpus=corpus)
    for name, data in extra.items():
        write_file_atomic(root / name, data)
    renumbered = {name: {value: BitMap(new_of_old[np.asarray(bits.to_array(), dtype=np.int64)].tolist())
                         for value, bits in values.items()} for name, values in bitmaps.items()}
    collection = Collection(ids, popularity, BitMap(), renumbered)
    collection.index_id = collection.save(root)  # as Collection.load of it reports
    write_entities(root, catalog, entity_lines)
    finish_base(live_dir, root, position, len(catalog), source_index_id)
    return root, collection


def open_lexical_shard(config: LiveShardConfig, owns: Callable[[str], bool] | None = None,
                       outside: OutsideDf | None = None, shard: type[LiveLexicalShard] = LiveLexicalShard
                       ) -> LiveLexicalShard:
    """The lexical shard at its newest complete base (see the module docstring). A lexical
    partition's (core.live_partition): `owns` its ids, `outside` its sibling partitions' df, `shard`
    its class."""
    source_id = source_index_id(config.index)
    found = usable_base(Path(config.live_dir), source_id)
    root, position = (Path(config.index), 0) if found is None else found
    base = open_lexical(root, config.options)
    lines = EntityLines()
    entities = catalog_entities(config, base.collection.ids, owns) if found is None else read_entities(root, lines)
    return shard(config, open_generation(root, base, entities, outside, owns), position, source_id, outside, lines)
