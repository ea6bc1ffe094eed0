"""Fixtures of the core tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.eventstore import EventStore, open_store


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStore]:
    """An empty event store of each backend (PostgreSQL: a fresh database on the private server)."""
    url = str(tmp_path / "events.sqlite") if request.param == "sqlite" else request.getfixturevalue("pg_url")
    opened = open_store(url)
    assert opened.kind == request.param
    try:
        yield opened
    finally:
        opened.close()
