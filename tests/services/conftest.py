"""Helpers for tests that talk to real server processes."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from services.client import ShardClient
from services.process import shard_args, spawn


@contextmanager
def serving(name: str, index_dir: Path, options: Mapping[str, Any] | None = None) -> Iterator[ShardClient]:
    """A shard process on a free loopback port and a client of it; on exit the process must stop
    cleanly (exit code 0) on SIGTERM."""
    server = spawn(shard_args(name, index_dir, options))
    try:
        with ShardClient(server.address) as client:
            yield client
    finally:
        assert server.stop() == 0, server.log_text()
