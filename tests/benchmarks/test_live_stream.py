"""benchmarks.live_stream's new tracks: new ids, titles no catalog track has, and one-typo names;
channels connected before a measured step."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from benchmarks.live_stream import new_artist_track, new_tracks, one_typo, ready
from core.catalog import demo_catalog_path, load_catalog


def test_new_tracks_have_new_ids_and_titles_unique_in_the_catalog() -> None:
    catalog = load_catalog(demo_catalog_path())
    tracks = new_tracks(300, seed=5)
    titles = {e.fields.get("title", "").lower() for e in catalog}
    assert len({t.id for t in tracks}) == 300
    assert not {t.id for t in tracks} & {e.id for e in catalog}
    assert len({t.fields["title"].lower() for t in tracks}) == 300
    assert not {t.fields["title"].lower() for t in tracks} & titles
    assert all(t.vector is None and t.fields.get("artist") for t in tracks)


def test_new_tracks_are_the_same_for_a_seed() -> None:
    assert new_tracks(20, seed=3) == new_tracks(20, seed=3)
    assert new_tracks(20, seed=3) != new_tracks(20, seed=4)


def test_new_artist_is_not_in_the_catalog() -> None:
    track = new_artist_track()
    artists = {str(e.fields.get("artist", "")).lower() for e in load_catalog(demo_catalog_path())}
    assert track.fields["artist"].lower() not in artists
    assert track.attributes["artist"] == track.fields["artist"]


def test_one_typo_changes_exactly_one_character() -> None:
    for name in ("Kalovi Tordrafen", "Abc", "Mozu Quilbelyun"):
        typo = one_typo(name)
        assert len(typo) == len(name)
        assert sum(a != b for a, b in zip(typo, name, strict=True)) == 1


def test_ready_waits_for_a_connection_and_gives_up_where_nothing_listens() -> None:
    server = grpc.server(ThreadPoolExecutor(1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        assert ready(channel, 10.0) is channel
        channel.close()
    finally:
        server.stop(None).wait()
    silent = grpc.insecure_channel(f"127.0.0.1:{port}")  # the server is gone: nothing listens on the port
    try:
        with pytest.raises(grpc.FutureTimeoutError):
            ready(silent, 0.3)
    finally:
        silent.close()
