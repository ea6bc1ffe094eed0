"""Random write sequences over a catalog, shared by the live-update tests of every strategy."""

from __future__ import annotations

import dataclasses

import numpy as np

from core.catalog import Entity
from core.live import Delete, Upsert, Write


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
