"""The catalog: one entity model and loaders for the formats ltrr reads.

Formats:
- canonical JSONL (optionally gzip'd), one entity per line::

    {"id": "t1", "type": "track", "fields": {"title": "...", "artist": "..."},
     "attributes": {"genre": ["pop"], "year": "2019", "energy": 0.8}, "popularity": 66}

  `fields` are free text (indexed by the lexical and semantic strategies); `attributes` are
  categorical (a string or a list of strings: filterable, used by structured search) or numeric
  (a number: features such as audio energy). `vector` (a list of floats) is optional.
- BEIR `corpus.jsonl` (`_id`, `title`, `text`): type "doc", fields title and text.
- the TidyTuesday Spotify songs CSV (one row per track and playlist): deduplicated by track id.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import IO, Any, cast

from core.errors import CatalogError

AttributeValue = str | float | tuple[str, ...]
MAX_ID_BYTES = 256
DEMO_CATALOG = "music_demo.jsonl.gz"


def id_problem(entity_id: object) -> str | None:
    """Why `entity_id` cannot be an entity id ("must ..."), None when it can: 1..MAX_ID_BYTES
    UTF-8 bytes and no line break (an index stores its ids one per line)."""
    if not isinstance(entity_id, str) or not entity_id or len(entity_id.encode()) > MAX_ID_BYTES:
        return f"must be 1..{MAX_ID_BYTES} UTF-8 bytes, but got {entity_id!r}"
    if "\n" in entity_id or "\r" in entity_id:
        return f"must not contain a line break, but got {entity_id!r}"
    return None


@dataclass(frozen=True, slots=True)
class Entity:
    """One searchable thing (a track, a document...).

    id: catalog id, 1..256 UTF-8 bytes without a line break, unique within a catalog.
    fields: text fields by name; empty strings are allowed and index as nothing.
    attributes: categorical (str or tuple of str) or numeric (float) values by name.
    popularity: a non-negative prior, in the catalog's own unit (Spotify: 0..100).
    vector: an optional precomputed embedding.
    """

    id: str
    type: str = "doc"
    fields: Mapping[str, str] = field(default_factory=dict)
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)
    popularity: float = 0.0
    vector: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if problem := id_problem(self.id):
            raise CatalogError(f"entity id {problem}")
        if not (math.isfinite(self.popularity) and self.popularity >= 0):
            raise CatalogError(f"entity {self.id!r}: popularity must be finite and >= 0, got {self.popularity}")
        for name, text in self.fields.items():
            if not isinstance(text, str):
                raise CatalogError(f"entity {self.id!r}: field {name!r} must be text, got {type(text).__name__}")

    def categorical(self) -> Iterator[tuple[str, str]]:
        """(attribute, value) pairs of the categorical attributes, one per value."""
        for name, value in self.attributes.items():
            if isinstance(value, str):
                yield name, value
            elif isinstance(value, tuple):
                for v in value:
                    yield name, v

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "type": self.type, "fields": dict(self.fields)}
        out["attributes"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.attributes.items()}
        out["popularity"] = self.popularity
        if self.vector is not None:
            out["vector"] = list(self.vector)
        return out


def _attribute(name: str, value: Any, where: str) -> AttributeValue:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise CatalogError(f"{where}: attribute {name!r} must be a string, a list of strings or a number")


def entity_from_json(obj: Any, where: str) -> Entity:
    """Build an Entity from one decoded canonical JSON object; `where` names file:line for errors."""
    if not isinstance(obj, dict):
        raise CatalogError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if "id" not in obj:
        raise CatalogError(f"{where}: missing 'id'")
    fields = obj.get("fields", {})
    attributes = obj.get("attributes", {})
    if not isinstance(fields, dict) or not isinstance(attributes, dict):
        raise CatalogError(f"{where}: 'fields' and 'attributes' must be objects")
    vector = obj.get("vector")
    try:
        return Entity(
            id=str(obj["id"]),
            type=str(obj.get("type", "doc")),
            fields={str(k): v for k, v in fields.items()},
            attributes={str(k): _attribute(k, v, where) for k, v in attributes.items()},
            popularity=float(obj.get("popularity", 0.0)),
            vector=tuple(float(x) for x in vector) if vector is not None else None,
        )
    except CatalogError as err:
        raise CatalogError(f"{where}: {err}") from None
    except (TypeError, ValueError) as err:
        raise CatalogError(f"{where}: {err}") from None


def open_text(path: Path) -> IO[str]:
    """A catalog file as UTF-8 text (.gz read through gzip); CatalogError when it is missing."""
    if not path.exists():
        raise CatalogError(f"{path}: no such catalog file")
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return path.open(encoding="utf-8", newline="")


def _json_lines(path: Path) -> Iterator[tuple[str, Any]]:
    with open_text(path) as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as err:
                raise CatalogError(f"{where}: not valid JSON ({err.msg})") from None


def load_jsonl(path: str | os.PathLike[str]) -> list[Entity]:
    """Entities of a canonical JSONL catalog (.jsonl or .jsonl.gz), in file order."""
    return _unique([entity_from_json(obj, where) for where, obj in _json_lines(Path(path))], Path(path))


def load_beir_corpus(path: str | os.PathLike[str]) -> list[Entity]:
    """Entities of a BEIR corpus.jsonl: type "doc", fields title and text."""
    out = []
    for where, obj in _json_lines(Path(path)):
        if not isinstance(obj, dict) or "_id" not in obj:
            raise CatalogError(f"{where}: a BEIR corpus line needs '_id'")
        fields = {"title": str(obj.get("title") or ""), "text": str(obj.get("text") or "")}
        out.append(Entity(id=str(obj["_id"]), type="doc", fields=fields))
    return _unique(out, Path(path))


SPOTIFY_FEATURES = (
    "danceability", "energy", "key", "loudness", "mode", "speechiness", "acousticness",
    "instrumentalness", "liveness", "valence", "tempo", "duration_ms",
)
SPOTIFY_COLUMNS = ("track_id", "track_name", "track_artist", "track_popularity", "track_album_name",
                   "track_album_release_date", "playlist_name", "playlist_genre", "playlist_subgenre")


def _spotify_entity(rows: list[dict[str, str]]) -> Entity:
    first = rows[0]

    def collect(column: str) -> tuple[str, ...]:
        return tuple(sorted({r[column] for r in rows if r[column]}))

    attributes: dict[str, AttributeValue] = {
        "genre": collect("playlist_genre"),
        "subgenre": collect("playlist_subgenre"),
        "playlist": collect("playlist_name"),
    }
    for name, column in (("artist", "track_artist"), ("album", "track_album_name")):
        if first[column]:
            attributes[name] = first[column]
    date = first["track_album_release_date"]
    if date[:4].isdigit():
        attributes["release_date"] = date
        attributes["year"] = date[:4]
        attributes["decade"] = f"{date[:3]}0s"
    for name in SPOTIFY_FEATURES:
        try:
            attributes[name] = float(first[name])
        except (KeyError, ValueError):
            continue
    return Entity(
        id=first["track_id"],
        type="track",
        fields={"title": first["track_name"], "artist": first["track_artist"],
                "album": first["track_album_name"]},
        attributes=attributes,
        popularity=float(first["track_popularity"] or 0),
    )


def load_spotify_csv(path: str | os.PathLike[str]) -> list[Entity]:
    """Unique tracks of the TidyTuesday spotify_songs.csv, in order of first appearance.

    Genres, subgenres and playlist names are collected over every row of a track.
    """
    by_track: dict[str, list[dict[str, str]]] = {}
    with open_text(Path(path)) as f:
        reader = csv.DictReader(f)
        missing = [c for c in SPOTIFY_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise CatalogError(f"{path}: not a Spotify songs CSV (missing columns {missing})")
        for row in reader:
            by_track.setdefault(row["track_id"], []).append(row)
    return [_spotify_entity(rows) for rows in by_track.values()]


def _unique(entities: list[Entity], path: Path) -> list[Entity]:
    seen: set[str] = set()
    for e in entities:
        if e.id in seen:
            raise CatalogError(f"{path}: duplicate entity id {e.id!r}")
        seen.add(e.id)
    return entities


def detect_format(path: Path) -> str:
    """"spotify", "beir" or "jsonl", from the file name and its first record."""
    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        return "spotify"
    for _, obj in _json_lines(path):
        return "beir" if isinstance(obj, dict) and "_id" in obj else "jsonl"
    return "jsonl"


LOADERS = {"jsonl": load_jsonl, "beir": load_beir_corpus, "spotify": load_spotify_csv}


def load_catalog(path: str | os.PathLike[str], fmt: str = "auto") -> list[Entity]:
    """Load a catalog in any supported format; `fmt` is "auto", "jsonl", "beir" or "spotify"."""
    p = Path(path)
    if p.is_dir() and (p / "corpus.jsonl").exists():
        p = p / "corpus.jsonl"
    kind = detect_format(p) if fmt == "auto" else fmt
    if kind not in LOADERS:
        raise CatalogError(f"unknown catalog format {fmt!r}; expected one of auto, {', '.join(LOADERS)}")
    return LOADERS[kind](p)


def write_jsonl(entities: Iterable[Entity], path: str | os.PathLike[str]) -> None:
    """Write a canonical JSONL catalog (gzip'd when the name ends in .gz), atomically."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    raw = cast(IO[bytes], gzip.GzipFile(tmp, "wb", mtime=0) if p.suffix == ".gz" else tmp.open("wb"))
    with raw:
        for e in entities:
            raw.write(json.dumps(e.to_json(), ensure_ascii=False, sort_keys=True).encode() + b"\n")
    os.replace(tmp, p)


def demo_catalog_path() -> Path:
    """Path of the bundled demo music catalog (see core/data/README.md for its origin)."""
    return Path(str(resources.files("core") / "data" / DEMO_CATALOG))
