"""A small index over a slice of the bundled catalog (real playlists, genres and moods) with the
hashing encoder, shared by the simulator tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.catalog import Entity, demo_catalog_path, load_catalog
from core.indexing import build_index

SLICE = 600
STRATEGIES = ("lexical", "semantic", "attribute", "memory")


@pytest.fixture(scope="session")
def music_slice() -> list[Entity]:
    return load_catalog(demo_catalog_path())[:SLICE]


@pytest.fixture(scope="session")
def music_index(tmp_path_factory: pytest.TempPathFactory, music_slice: list[Entity]) -> Path:
    root = tmp_path_factory.mktemp("sim-index")
    cache = tmp_path_factory.mktemp("sim-embeddings")
    build_index(music_slice, root, STRATEGIES,
                {"lexical": {"fields": "title^2,artist^1.5,album^0.5", "progress": False},
                 "semantic": {"encoder": "hashing", "cache": str(cache), "progress": False}})
    return root
