"""Cold start: the queries an entity is likely to be found by, predicted from its metadata.

A doc2query-style expansion without a model: each entity gets the query keys (core.analysis.
text_key) of its title, its short title (before " - ", "(" or "["), artist, "artist title",
"title artist", album, each genre and subgenre, "decade genre" ("90s rock"), and its mood phrases
("chill", "chill pop"; moods from core.attribute.buckets). A predicted score in (0, 1) is
KIND_SCORES[kind] * (0.5 + 0.5 * popularity / largest popularity): specific phrases (a title) predict
a click more strongly than broad ones (a genre), and popular entities more than obscure ones.
It is the prior mean of the pair's Beta (core.memory.store); each query keeps its `max_per_query`
best-scored entities.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from core.analysis import text_key
from core.attribute.buckets import derived_values
from core.attribute.index import short_title
from core.catalog import Entity

DEFAULT_MAX_PER_QUERY = 1000
KIND_SCORES = {
    "artist title": 0.6, "title artist": 0.5, "title": 0.5, "short title": 0.45, "artist": 0.3, "album": 0.25,
    "decade genre": 0.1, "mood genre": 0.1, "genre": 0.08, "subgenre": 0.08, "mood": 0.05,
}


def _strings(entity: Entity, name: str) -> list[str]:
    value = entity.attributes.get(name)
    if isinstance(value, str):
        return [value]
    return list(value) if isinstance(value, tuple) else []


def phrases(entity: Entity) -> Iterator[tuple[str, str]]:
    """(kind, query text) pairs predicted for one entity."""
    title, artist = entity.fields.get("title", ""), entity.fields.get("artist", "")
    short = short_title(title)
    yield "title", title
    yield "short title", short
    yield "artist", artist
    yield "album", entity.fields.get("album", "")
    if artist:
        yield "artist title", f"{artist} {short}"
        yield "title artist", f"{short} {artist}"
    genres = _strings(entity, "genre")
    for g in genres:
        yield "genre", g
    for g in _strings(entity, "subgenre"):
        yield "subgenre", g
    for decade in _strings(entity, "decade"):
        for g in genres:
            yield "decade genre", f"{decade[2:]} {g}"
    for field, mood in derived_values(entity.attributes):
        if field == "mood":
            yield "mood", mood
            for g in genres:
                yield "mood genre", f"{mood} {g}"


def key_scores(entity: Entity) -> dict[str, float]:
    """query key -> the best KIND_SCORES of the entity's phrases with that key (before the
    popularity share: max(k1, k2) * share equals max(k1 * share, k2 * share) exactly, since
    rounding is monotonic, so the split changes no predicted score)."""
    out: dict[str, float] = {}
    for kind, text in phrases(entity):
        key = text_key(text)
        if key:
            out[key] = max(out.get(key, 0.0), KIND_SCORES[kind])
    return out


def popularity_share(popularity: float, top: float) -> float:
    """0.5 + 0.5 * popularity / top (the catalog's largest popularity); 0.5 when top is 0."""
    return 0.5 + 0.5 * popularity / top if top > 0 else 0.5


def predict(entities: Sequence[Entity], popularity: np.ndarray, max_per_query: int = DEFAULT_MAX_PER_QUERY
            ) -> dict[str, list[tuple[int, float]]]:
    """query key -> [(ordinal, predicted score)], best first (ties: lower ordinal), at most
    `max_per_query` each. popularity: float, shape (len(entities),)."""
    if max_per_query < 1:
        raise ValueError(f"`max_per_query` must be >= 1, but got {max_per_query}")
    top = float(popularity.max()) if popularity.size else 0.0
    out: dict[str, dict[int, float]] = {}
    for i, e in enumerate(entities):
        share = popularity_share(float(popularity[i]), top)
        for key, kind_score in key_scores(e).items():
            out.setdefault(key, {})[i] = kind_score * share
    return {key: sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[:max_per_query]
            for key, pairs in out.items()}
