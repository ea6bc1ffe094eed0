from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from core.catalog import (
    Entity,
    demo_catalog_path,
    load_beir_corpus,
    load_catalog,
    load_jsonl,
    load_spotify_csv,
    write_jsonl,
)
from core.errors import CatalogError

SPOTIFY_HEADER = ("track_id,track_name,track_artist,track_popularity,track_album_id,track_album_name,"
                  "track_album_release_date,playlist_name,playlist_id,playlist_genre,playlist_subgenre,danceability,"
                  "energy,key,loudness,mode,speechiness,acousticness,instrumentalness,liveness,valence,tempo,"
                  "duration_ms")


def test_canonical_jsonl_round_trip(tmp_path: Path) -> None:
    entities = [Entity(id="a", type="track", fields={"title": "Héllo"}, attributes={"genre": ("pop",), "x": 0.5},
                       popularity=3.0, vector=(0.1, 0.2))]
    for name in ("c.jsonl", "c.jsonl.gz"):
        write_jsonl(entities, tmp_path / name)
        assert load_catalog(tmp_path / name) == entities


def test_beir_corpus(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_text(json.dumps({"_id": "7", "title": "T", "text": "body", "metadata": {}}) + "\n")
    assert load_beir_corpus(path) == [Entity(id="7", type="doc", fields={"title": "T", "text": "body"})]
    assert load_catalog(tmp_path) == load_beir_corpus(path)  # a BEIR folder works too


def test_spotify_rows_are_deduplicated_by_track(tmp_path: Path) -> None:
    rows = [
        "t1,Song,Artist,50,a1,Album,1999-05-01,Chill Hits,p1,pop,dance pop,0.5,0.6,1,-5,1,0.1,0.2,0,0.1,0.7,120,200000",
        "t1,Song,Artist,50,a1,Album,1999-05-01,Rock On,p2,rock,hard rock,0.5,0.6,1,-5,1,0.1,0.2,0,0.1,0.7,120,200000",
        "t2,Other,B,10,a2,Al,2012,Rock On,p2,rock,hard rock,0.4,0.9,1,-5,1,0.1,0.2,0,0.1,0.2,170,100000",
    ]
    path = tmp_path / "songs.csv"
    path.write_text("\n".join([SPOTIFY_HEADER, *rows]) + "\n")
    t1, t2 = load_spotify_csv(path)
    assert t1.id == "t1" and t1.attributes["genre"] == ("pop", "rock")
    assert t1.attributes["playlist"] == ("Chill Hits", "Rock On")
    assert t1.attributes["decade"] == "1990s" and t1.attributes["year"] == "1999"
    assert t1.fields == {"title": "Song", "artist": "Artist", "album": "Album"}
    assert t2.attributes["decade"] == "2010s" and t2.popularity == 10.0
    assert t1.attributes["tempo"] == 120.0


@pytest.mark.parametrize(("content", "match"), [
    ('{"id": "a"}\nnot json\n', r":2: not valid JSON"),
    ('{"title": "no id"}\n', r":1: missing 'id'"),
    ('{"id": "a"}\n{"id": "a"}\n', "duplicate entity id"),
    ('{"id": "a", "popularity": -1}\n', "popularity"),
    ('{"id": "a", "attributes": {"g": [1, 2]}}\n', "attribute 'g'"),
    ('{"id": ""}\n', "entity id"),
    ('{"id": "a\\nb"}\n', "entity id must not contain a line break"),
])
def test_bad_catalog_lines_name_file_and_line(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(CatalogError, match=match):
        load_jsonl(path)


def test_missing_file_and_wrong_csv(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="no such catalog file"):
        load_catalog(tmp_path / "nope.jsonl")
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(CatalogError, match="missing columns"):
        load_catalog(tmp_path / "x.csv")


def test_bundled_demo_catalog_is_the_unique_tracks() -> None:
    path = demo_catalog_path()
    with gzip.open(path, "rt", encoding="utf-8") as f:
        first = json.loads(f.readline())
    assert first["type"] == "track" and {"title", "artist", "album"} <= set(first["fields"])
    entities = load_catalog(path)
    assert len(entities) == 28356
    assert len({e.id for e in entities}) == len(entities)
