"""Live writes for the semantic strategy: embed upserted entities into the usearch index, drop
deleted and replaced ones.

An upserted entity is embedded exactly as the offline build embeds it (core.semantic.index.
embed_entities: its `vector` if given, else the encoding of its text fields with the index's
encoder) and added under its ordinal; its previous vector (a replaced entity) goes first; an
entity with neither text nor vector is not indexed. A deleted ordinal's vector is removed, so
even a search without an `allowed` set never returns it. The HNSW graph of a live index differs
from a fresh build's (insertion order), so results agree within ANN tolerance, not exactly.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from core.catalog import Entity
from core.errors import InvalidArgumentError
from core.live import Change, LiveCollection, Upsert, Write
from core.semantic.index import SemanticStrategy, embed_entities


def final_contents(changes: Sequence[Change]) -> dict[int, Entity | None]:
    """ordinal -> its content after every change (None: deleted), for each ordinal changed."""
    return {c.ordinal: c.new for c in changes}


class LiveSemantic:
    """Applies Changes to a loaded SemanticStrategy (its collection must be the LiveCollection
    that produced them). Writes are serialised by a lock; searches run on while they apply
    (usearch adds and removes are thread-safe against searches, though a search waits inside
    usearch for an add call in progress: core.semantic.ann.STAGE_CHUNK)."""

    def __init__(self, strategy: SemanticStrategy) -> None:
        self.strategy = strategy
        strategy.vectors.make_writable()  # now, not at the first write while searches run
        self.lock = threading.Lock()
        # id(entity) -> (the entity, its unit vector or None when it has no content): prepare()'s
        # embeddings, used by the next apply (the entity is held so that its id is not reused)
        self._prepared: dict[int, tuple[Entity, np.ndarray | None]] = {}
        self._staged: dict[int, Entity] = {}  # ordinal -> the entity prepare() staged its vector for

    def prepare(self, writes: Sequence[Write]) -> None:
        """Embed the entities `writes` upsert now, and stage the vectors of the new entities
        under the ordinals the batch will give them (core.semantic.ann: in the graph, not
        searchable), so that the apply that follows (under a lock searches wait on:
        core.live_shard) only publishes them and adds the replaced ones. Replaces any earlier
        preparation (its staged vectors leave the index). The shard's collection must not change
        between the two (one writer)."""
        if self._staged:  # a preparation never applied
            self.strategy.vectors.publish(np.zeros(0, dtype=np.int64))
            self._staged = {}
        self._prepared = self._embedded([w.entity for w in writes if isinstance(w, Upsert)])
        collection = self.strategy.collection
        if not isinstance(collection, LiveCollection):
            return
        staged = [(o, e, vector) for o, e in collection.planned_new(writes).items()
                  if (vector := self._prepared[id(e)][1]) is not None]
        if staged:
            self.strategy.vectors.stage(np.array([o for o, _, _ in staged], dtype=np.int64),
                                        np.stack([v for _, _, v in staged]))
            self._staged = {o: e for o, e, _ in staged}

    def _embedded(self, entities: Sequence[Entity]) -> dict[int, tuple[Entity, np.ndarray | None]]:
        s = self.strategy
        keep, vectors = embed_entities(entities, s.config, s.encoder, None, progress=False)
        out: dict[int, tuple[Entity, np.ndarray | None]] = {id(e): (e, None) for e in entities}
        for row, i in enumerate(keep.tolist()):
            out[id(entities[i])] = (entities[i], vectors[row])
        return out

    def _embed(self, entities: Sequence[Entity]) -> tuple[np.ndarray, np.ndarray]:
        """embed_entities' (keep, vectors), prepare()'s where it embedded these very objects."""
        prepared, self._prepared = self._prepared, {}
        missing = [e for e in entities if prepared.get(id(e), (None, None))[0] is not e]
        if missing:
            prepared.update(self._embedded(missing))
        kept = [(i, v) for i, e in enumerate(entities) if (v := prepared[id(e)][1]) is not None]
        if not kept:
            return np.zeros(0, dtype=np.int64), np.zeros((0, self.strategy.vector_dim), dtype=np.float32)
        return np.array([i for i, _ in kept], dtype=np.int64), np.stack([v for _, v in kept])

    def check(self, writes: Sequence[Write]) -> None:
        """Refuse a batch before anything is applied (a batch is all or nothing): an upserted
        entity's `vector` must have the encoder's dimension and finite values.
        InvalidArgumentError names the item ("writes[3].entity.vector")."""
        dim = self.strategy.vector_dim
        for i, w in enumerate(writes):
            vector = w.entity.vector if isinstance(w, Upsert) else None
            if vector is None:
                continue
            where = f"writes[{i}].entity.vector"
            if len(vector) != dim:
                raise InvalidArgumentError(where, f"must have {dim} values, but got {len(vector)}")
            if not np.isfinite(np.asarray(vector, dtype=np.float64)).all():
                raise InvalidArgumentError(where, "must hold only finite values")

    def apply(self, changes: Sequence[Change]) -> int:
        """Embed and index the final content of each changed ordinal; returns the vectors added
        (published from prepare()'s stage, or added here)."""
        final = final_contents(changes)
        staged, self._staged = self._staged, {}
        ready = {o for o, e in staged.items() if final.get(o) is e}  # what prepare() foresaw
        upserted = [(o, e) for o, e in final.items() if e is not None and o not in ready]
        s = self.strategy
        ordinals, vectors = np.zeros(0, dtype=np.int64), np.zeros((0, s.vector_dim), dtype=np.float32)
        if upserted:  # encode outside the lock: the slow part (or prepare() did)
            keep, vectors = self._embed([e for _, e in upserted])
            ordinals = np.array([upserted[i][0] for i in keep.tolist()], dtype=np.int64)
        with self.lock:
            if staged:
                s.vectors.publish(np.array(sorted(ready), dtype=np.int64))
            stale = np.array(sorted(set(final) - set(ordinals.tolist()) - ready), dtype=np.int64)
            s.vectors.remove(stale)
            if ordinals.size:
                s.vectors.add(ordinals, vectors)
        return int(ordinals.size) + len(ready)
