"""Session-wide fixtures: small synthetic catalogs and the index directories built from them."""

from __future__ import annotations

import os

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from core.catalog import Entity
from core.indexing import build_index
from services.postgres import PG_ROOT, PostgresServer, find_binaries

GENRES = ("rock", "pop", "jazz", "latin")
WORDS = ("love", "night", "dance", "blue", "river", "fire", "heart", "summer", "rain", "gold", "city", "dream")


def synthetic_catalog(n: int = 300, seed: int = 7) -> list[Entity]:
    """Tracks with random titles from a small vocabulary (so terms repeat), artists, genres, decades."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        title = " ".join(rng.choice(WORDS, size=int(rng.integers(1, 5))))
        artist = f"artist {int(rng.integers(0, 20))}"
        genre = GENRES[int(rng.integers(0, len(GENRES)))]
        out.append(Entity(id=f"t{i:04d}", type="track",
                          fields={"title": title, "artist": artist},
                          attributes={"genre": (genre,), "artist": artist,
                                      "decade": f"{int(rng.choice([1970, 1980, 1990, 2000, 2010]))}s"},
                          popularity=float(rng.integers(0, 100))))
    return out


@pytest.fixture(scope="session")
def catalog() -> list[Entity]:
    return synthetic_catalog()


@pytest.fixture(scope="session")
def lexical_index_dir(tmp_path_factory: pytest.TempPathFactory, catalog: list[Entity]) -> Path:
    root = tmp_path_factory.mktemp("lexical-index")
    build_index(catalog, root, ["lexical"], {"lexical": {"fields": "title^2,artist", "progress": False}})
    return root


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A private PostgreSQL server for the session (services.postgres), from the installed binaries."""
    with private_postgres() as server:
        yield server


@contextmanager
def private_postgres() -> Iterator[PostgresServer]:
    """A private PostgreSQL server in a new temporary directory, removed on exit; the test is
    skipped, saying why, where the server binaries are not installed."""
    if find_binaries() is None:
        pytest.skip(f"no PostgreSQL server binaries under {PG_ROOT} (apt-get install postgresql; CI installs it)")
    server = PostgresServer(tempfile.mkdtemp(prefix="ltrr-pg-"))
    server.start()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def pg_url(postgres: PostgresServer) -> str:
    """The URL of a new, empty database on the session's server."""
    return postgres.create_database(f"t_{uuid.uuid4().hex[:12]}")
