"""The entity table every strategy of one index shares: ids, popularity, deletions, filters.

Entities are addressed inside an index by their ordinal (position in the catalog, 0..n-1);
catalog ids appear only at the edges. Filters are Roaring bitmaps of ordinals, one per
(attribute field, case-folded value) of the catalog's categorical attributes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from functools import cached_property

import numpy as np
from pyroaring import BitMap

from core.analysis import normalize
from core.catalog import Entity
from core.errors import IndexFormatError, InvalidArgumentError, NotFoundError
from core.query import Filter
from core.storage import ComponentReader, ComponentWriter

COMPONENT = "collection"


def filter_value(value: str) -> str:
    """The form attribute values are stored and matched in: NFKC, case- and accent-folded, trimmed."""
    return normalize(value).strip()


class Collection:
    """ids: catalog ids by ordinal; popularity: float32, shape (n,); deleted: ordinals never returned;
    bitmaps: field -> folded value -> ordinals having it."""

    def __init__(self, ids: Sequence[str], popularity: np.ndarray, deleted: BitMap,
                 bitmaps: dict[str, dict[str, BitMap]], index_id: str = "") -> None:
        if len(popularity) != len(ids):
            raise ValueError(f"`popularity` must have {len(ids)} values, but got {len(popularity)}")
        self.ids = list(ids)
        self.popularity = np.asarray(popularity, dtype=np.float32)
        self.deleted = deleted
        self.bitmaps = bitmaps
        self.index_id = index_id
        # (deleted, n, live ordinals, their mask): valid while `deleted` is that object and n ids
        self._live_cache: tuple[BitMap, int, BitMap, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @cached_property
    def ordinal(self) -> dict[str, int]:
        return {eid: i for i, eid in enumerate(self.ids)}

    @classmethod
    def build(cls, entities: Sequence[Entity]) -> Collection:
        bitmaps: dict[str, dict[str, BitMap]] = {}
        for i, e in enumerate(entities):
            for name, value in e.categorical():
                folded = filter_value(value)
                if folded:
                    bitmaps.setdefault(name, {}).setdefault(folded, BitMap()).add(i)
        popularity = np.array([e.popularity for e in entities], dtype=np.float32)
        return cls([e.id for e in entities], popularity, BitMap(), bitmaps)

    # -- filters -------------------------------------------------------------------------------

    @property
    def filter_fields(self) -> list[str]:
        return sorted(self.bitmaps)

    def allowed(self, filters: Sequence[Filter]) -> BitMap | None:
        """Ordinals satisfying every filter, deleted ones removed; None when nothing restricts."""
        if not filters:
            return self._live()
        allowed = BitMap(np.arange(len(self.ids), dtype=np.uint32))
        for i, f in enumerate(filters):
            values = self.bitmaps.get(f.field)
            if values is None:
                raise InvalidArgumentError(
                    f"query.filters[{i}].field",
                    f"unknown attribute field {f.field!r}; known fields: {', '.join(self.filter_fields)}")
            unknown = [v for v in f.values if filter_value(v) not in values]
            if unknown:
                raise InvalidArgumentError(f"query.filters[{i}].values",
                                           f"unknown value(s) {unknown} for attribute field {f.field!r}")
            match = BitMap.union(BitMap(), *(values[filter_value(v)] for v in f.values))
            allowed = allowed - match if f.exclude else allowed & match
        return allowed - self.deleted

    def _live(self) -> BitMap | None:
        """Every ordinal not deleted (None when nothing is), built once per set of deletions:
        unfiltered requests are the common case and must not pay O(n) each.

        The cache is keyed by the `deleted` object and the id count it was built from, never reset
        by a writer: a reader that built it from the old deletions while a batch was published
        would otherwise store it after the writer's reset and serve deleted entities until the
        next batch. Writers replace `deleted` (core.live), never mutate it."""
        n = len(self.ids)  # before `deleted`: a batch publishes its new ids first (core.live)
        deleted = self.deleted
        if not deleted:
            return None
        cache = self._live_cache
        if cache is None or cache[0] is not deleted or cache[1] != n:
            live = BitMap(np.arange(n, dtype=np.uint32)) - deleted
            cache = (deleted, n, live, self._build_mask(live, n))
            self._live_cache = cache
        return cache[2]

    def mask(self, allowed: BitMap | None) -> np.ndarray:
        """uint8 mask, shape (n,), 1 = may be returned; shape (0,) when `allowed` is None (no check)."""
        if allowed is None:
            return np.zeros(0, dtype=np.uint8)
        cache = self._live_cache
        if cache is not None and allowed is cache[2]:
            return cache[3]
        return self._build_mask(allowed, len(self.ids))

    @staticmethod
    def _build_mask(allowed: BitMap, n: int) -> np.ndarray:
        mask = np.zeros(n, dtype=np.uint8)
        mask[allowed.to_array()] = 1
        return mask

    # -- deletions ------------------------------------------------------------------------------

    def delete(self, entity_ids: Iterable[str]) -> int:
        """Mark entities deleted; returns how many were newly deleted. Unknown ids: NotFoundError."""
        ordinals = []
        for eid in entity_ids:
            if eid not in self.ordinal:
                raise NotFoundError(f"entity {eid!r} is not in the index")
            ordinals.append(self.ordinal[eid])
        before = len(self.deleted)
        self.deleted = self.deleted | BitMap(ordinals)  # a new object: the live cache is keyed by it
        return len(self.deleted) - before

    # -- storage --------------------------------------------------------------------------------

    def save(self, root: str | os.PathLike[str]) -> str:
        """Write the collection component under `root`; returns its content id (Collection.load's index_id)."""
        blob = bytearray()
        directory: dict[str, dict[str, list[int]]] = {}
        for name in sorted(self.bitmaps):
            for value in sorted(self.bitmaps[name]):
                data = self.bitmaps[name][value].serialize()
                directory.setdefault(name, {})[value] = [len(blob), len(data)]
                blob += data
        with ComponentWriter(root, COMPONENT, {"entities": len(self.ids)}) as w:
            w.write_bytes("ids.txt", "\n".join(self.ids).encode())
            w.write_array("popularity.npy", self.popularity)
            w.write_bytes("deleted.roaring", self.deleted.serialize())
            w.write_json("filters.json", directory)
            w.write_bytes("filters.roaring", bytes(blob))
        return w.content_id

    @classmethod
    def load(cls, root: str | os.PathLike[str]) -> Collection:
        r = ComponentReader(root, COMPONENT)
        ids = r.read_bytes("ids.txt").decode().split("\n") if r.files["ids.txt"]["bytes"] else []
        if len(ids) != r.params["entities"]:
            raise IndexFormatError(r.path("ids.txt"), f"holds {len(ids)} ids, manifest says {r.params['entities']}")
        blob = r.read_bytes("filters.roaring")
        bitmaps = {name: {value: BitMap.deserialize(blob[off:off + size]) for value, (off, size) in values.items()}
                   for name, values in r.read_json("filters.json").items()}
        deleted = BitMap.deserialize(r.read_bytes("deleted.roaring"))
        return cls(ids, np.array(r.read_array("popularity.npy")), deleted, bitmaps, r.content_id)
