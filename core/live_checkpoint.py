"""Checkpoints of a live writer shard (semantic): its whole live state at one applied catalog
position, written as a base in its live directory (core.live_dir), so that a restart replays only
the log after it instead of re-encoding every upsert ever written (MiniLM int8: ~2.7 ms each).

A checkpoint holds what the next start needs to serve and to apply later writes: the strategy's
component (semantic: the usearch index, keys = ordinals, exactly as served), the collection (ids by
ordinal, dead ones included, popularity, deletions, filter bitmaps), the live entities in ordinal
order (a later write of one of them needs its old content) and base.json (the position and the
offline index it descends from).

Consistency: `take` runs under the shard's `applying` lock (core.live_base: no batch is applied
meanwhile; searches go on, since they only read what it reads) and copies only what later
batches would change in place: the usearch index's bytes (4.5-19 ms for the demo catalog's 28k x
384 f16, holding the GIL), the id list, the entity list and the filter dictionaries; popularity,
deletions and each bitmap are replaced, never changed, by a write (core.live: copy on write), so
they are held by reference. `write` (checksums, fsync, CURRENT) runs after it, holding no lock.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from core.catalog import Entity
from core.collection import Collection
from core.errors import IndexFormatError
from core.live import LiveCollection
from core.live_dir import (
    ENTITIES,
    EntityLines,
    finish_base,
    new_base_dir,
    publish_base,
    read_entities,
    usable_base,
    write_entities,
)
from core.strategies import entry_for
from core.types import Strategy, StrategyKind

# the kinds whose live shards write checkpoints (their strategies are SupportsCheckpoint); attribute and
# memory rebuild from the catalog and replay the log (analysis only, no encoding)
CHECKPOINTED = frozenset({StrategyKind.SEMANTIC})


class SupportsCheckpoint(Protocol):
    """A strategy that can copy its component's live state quickly (no batch applied meanwhile) and
    write the copy later (core.semantic.index.SemanticStrategy.snapshot_component)."""

    def snapshot_component(self) -> Callable[[str | os.PathLike[str]], None]: ...


@dataclass(frozen=True)
class Snapshot:
    """A live shard's state at catalog position `position`: write_component(root) writes the
    strategy's component; entities: content by ordinal (None: deleted)."""

    position: int
    write_component: Callable[[str | os.PathLike[str]], None]
    collection: Collection
    entities: list[Entity | None]


class Checkpoints:
    """The checkpoints of one live shard in `live_dir`, from the offline index `source_id`."""

    def __init__(self, live_dir: str | os.PathLike[str], source_id: str) -> None:
        self.live_dir = Path(live_dir)
        self.source_id = source_id
        self.entity_lines = EntityLines()  # the last checkpoint's entities file (core.live_dir.EntityLines)

    @staticmethod
    def take(strategy: SupportsCheckpoint, collection: LiveCollection, position: int) -> Snapshot:
        """The state at `position`; call it under the shard's `applying` lock (module docstring)."""
        bitmaps = {name: dict(values) for name, values in collection.bitmaps.items()}
        frozen = Collection(list(collection.ids), collection.popularity, collection.deleted, bitmaps,
                            collection.index_id)
        return Snapshot(position, strategy.snapshot_component(), frozen, list(collection.entities))

    def write(self, snapshot: Snapshot) -> Path:
        """Write `snapshot` as a new base, completely and fsync'd, then make it current and remove
        the older ones (core.live_dir); returns its directory. No lock needed."""
        root = new_base_dir(self.live_dir, snapshot.position)
        snapshot.write_component(root)
        snapshot.collection.save(root)
        live = [e for e in snapshot.entities if e is not None]
        write_entities(root, live, self.entity_lines)
        finish_base(self.live_dir, root, snapshot.position, len(live), self.source_id)
        publish_base(self.live_dir, root)
        return root

    def open(self, kind: StrategyKind, options: Mapping[str, Any]) -> tuple[Strategy, LiveCollection, int] | None:
        """(the strategy on its LiveCollection, the position) of the checkpoint CURRENT names, None
        when there is none from this offline index (every other base is removed: core.live_dir.usable_base)."""
        found = usable_base(self.live_dir, self.source_id)
        if found is None:
            return None
        root, position = found
        collection = restore_collection(root, self.source_id, self.entity_lines)
        _, entry = entry_for(kind.value)
        return entry.load(root, collection, options), collection, position


def restore_collection(root: Path, source_id: str, entity_lines: EntityLines | None = None) -> LiveCollection:
    """The live collection of the checkpoint at `root`: its collection (reporting the offline index's
    id `source_id`: the shard still serves a descendant of it) with its entities at their ordinals,
    checked against its ids. entity_lines: it remembers the entities file read."""
    saved = Collection.load(root)
    saved.index_id = source_id
    live = read_entities(root, entity_lines)
    ordinals = [o for o in range(len(saved)) if o not in saved.deleted]
    if len(ordinals) != len(live) or any(saved.ids[o] != e.id for o, e in zip(ordinals, live, strict=True)):
        raise IndexFormatError(root / ENTITIES, f"holds {len(live)} entities, but the collection has "
                               f"{len(ordinals)} live ones (or other ids)")
    entities: list[Entity | None] = [None] * len(saved)
    for o, e in zip(ordinals, live, strict=True):
        entities[o] = e
    return LiveCollection(entities, saved)
