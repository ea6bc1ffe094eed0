"""The bundled demo music catalog indexed for the attribute strategy, once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.attribute.index import AttributeStrategy
from core.catalog import Entity, demo_catalog_path, load_jsonl
from core.indexing import build_index, open_strategy


@pytest.fixture(scope="session")
def music() -> list[Entity]:
    return load_jsonl(demo_catalog_path())


@pytest.fixture(scope="session")
def music_index(tmp_path_factory: pytest.TempPathFactory, music: list[Entity]) -> Path:
    root = tmp_path_factory.mktemp("music-attribute")
    build_index(music, root, ["attribute"])
    return root


@pytest.fixture(scope="session")
def music_attribute(music_index: Path) -> AttributeStrategy:
    s = open_strategy(music_index, "attribute")
    if not isinstance(s, AttributeStrategy):
        raise TypeError(type(s).__name__)
    s.warm_up()
    return s
