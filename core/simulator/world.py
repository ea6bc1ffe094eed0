"""The simulator's view of the catalog: per-entity arrays and the facets users search by.

Entities are addressed by their position in the `entities` sequence the world was built from
(the same order `Collection.build` gives them ordinals, so a world over the entities an index was
built from shares its ordinals). Facets map a (field, value) pair to the ordinals having it:

- "genre", "subgenre", "playlist", "decade": the catalog's categorical attributes (lists allowed);
- "mood": derived from valence and energy by core.attribute.buckets.moods (happy, sad, chill,
  energetic, intense), so a mood phrase means what the attribute strategy understands by it;
- "artist": the `artist` text field.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.attribute.buckets import moods
from core.catalog import Entity

FACET_FIELDS = ("genre", "subgenre", "playlist", "decade")


def _values(entity: Entity, name: str) -> tuple[str, ...]:
    value = entity.attributes.get(name)
    if isinstance(value, str):
        return (value,)
    if isinstance(value, tuple | list):
        return tuple(str(v) for v in value)
    return ()


@dataclass(frozen=True, kw_only=True)
class MusicWorld:
    """ids: entity ids by ordinal; titles, artists: str per ordinal; popularity: float64 (n,);
    genre_of: int32 (n,), index into `genres` of the entity's first genre (-1 = none);
    facets: {(field, value): int64 ordinals, ascending}."""

    ids: tuple[str, ...]
    titles: tuple[str, ...]
    artists: tuple[str, ...]
    popularity: np.ndarray
    genres: tuple[str, ...]
    genre_of: np.ndarray
    facets: dict[tuple[str, str], np.ndarray]

    def __post_init__(self) -> None:
        n = len(self.ids)
        if n == 0:
            raise ValueError("`ids` must not be empty: the simulator needs a catalog")
        for name in ("titles", "artists"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"`{name}` must have {n} entries (one per id), but got {len(getattr(self, name))}")
        if self.popularity.shape != (n,) or self.genre_of.shape != (n,):
            raise ValueError(f"`popularity` and `genre_of` must have shape ({n},), but got "
                             f"{self.popularity.shape} and {self.genre_of.shape}")

    def __len__(self) -> int:
        return len(self.ids)

    def facet_values(self, name: str, min_size: int = 1) -> list[str]:
        """Values of facet `name` held by at least `min_size` entities, sorted."""
        return sorted(v for (f, v), o in self.facets.items() if f == name and len(o) >= min_size)

    def facet(self, name: str, value: str) -> np.ndarray:
        """int64 ordinals having `value` in facet `name` (empty when none)."""
        return self.facets.get((name, value), np.zeros(0, dtype=np.int64))

    @classmethod
    def from_entities(cls, entities: Sequence[Entity]) -> MusicWorld:
        """Build the world from catalog entities (tracks with title/artist fields; others get "")."""
        facets: dict[tuple[str, str], list[int]] = defaultdict(list)
        genre_names: dict[str, int] = {}
        genre_of = np.full(len(entities), -1, dtype=np.int32)
        for i, e in enumerate(entities):
            for name in FACET_FIELDS:
                for v in _values(e, name):
                    facets[(name, v)].append(i)
            g = _values(e, "genre")
            if g:
                genre_of[i] = genre_names.setdefault(g[0], len(genre_names))
            valence, energy = e.attributes.get("valence"), e.attributes.get("energy")
            if isinstance(valence, float | int) and isinstance(energy, float | int):
                for m in moods(float(valence), float(energy)):
                    facets[("mood", m)].append(i)
            if e.fields.get("artist"):
                facets[("artist", e.fields["artist"])].append(i)
        return cls(ids=tuple(e.id for e in entities), titles=tuple(e.fields.get("title", "") for e in entities),
                   artists=tuple(e.fields.get("artist", "") for e in entities),
                   popularity=np.array([e.popularity for e in entities], dtype=np.float64),
                   genres=tuple(genre_names), genre_of=genre_of,
                   facets={k: np.array(sorted(set(v)), dtype=np.int64) for k, v in facets.items()})
