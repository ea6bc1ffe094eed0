"""The memory index shared by the memory tests (built once per session from the synthetic catalog)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.catalog import Entity
from core.indexing import build_index


@pytest.fixture(scope="session")
def memory_index(tmp_path_factory: pytest.TempPathFactory, catalog: list[Entity]) -> Path:
    root = tmp_path_factory.mktemp("memory-index")
    build_index(catalog, root, ["memory"])
    return root
