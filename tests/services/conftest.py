"""Helpers for tests that talk to real servers: shard processes, and in-process grpc.aio servers."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.catalog import Entity, write_jsonl
from core.indexing import build_index
from ltrr.v1 import shard_pb2_grpc
from services.broker import BrokerService, add_services
from services.client import ShardClient
from services.cluster import ClusterConfig
from services.process import shard_args, spawn

ALL = ("lexical", "semantic", "attribute", "memory")
Series = dict[tuple[str, frozenset[tuple[str, str]]], float]  # (name, labels) -> value


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory, catalog: list[Entity]) -> Path:
    """The synthetic catalog as a file and an index of every strategy (hashing encoder)."""
    root = tmp_path_factory.mktemp("cluster")
    write_jsonl(catalog, root / "catalog.jsonl")
    build_index(catalog, root / "index", ALL, {"lexical": {"fields": "title^2,artist", "progress": False},
                                               "semantic": {"encoder": "hashing", "progress": False,
                                                            "cache": str(root / "cache")}})
    return root


def config(root: Path, state: str, **broker: object) -> ClusterConfig:
    """A cluster over `built` with its broker and memory state under root/state."""
    return ClusterConfig(catalog=str(root / "catalog.jsonl"), index=str(root / "index"), state=str(root / state),
                         strategies=ALL, run={"memory": {"state_dir": str(root / state / "memory")}},
                         broker=broker)


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


@asynccontextmanager
async def shard_servers(servicers: Sequence[shard_pb2_grpc.ShardServicer]
                        ) -> AsyncIterator[tuple[list[str], list[grpc.aio.Server]]]:
    """Each of `servicers` (a test's fake shard) behind its own real grpc.aio server on a free
    loopback port, on the running event loop: (their addresses, their servers, in order); every
    server is stopped on exit (a test may stop one earlier)."""
    servers, addresses = [], []
    try:
        for servicer in servicers:
            server = grpc.aio.server()
            shard_pb2_grpc.add_ShardServicer_to_server(servicer, server)
            addresses.append(f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}")
            await server.start()
            servers.append(server)
        yield addresses, servers
    finally:
        for server in servers:
            await server.stop(grace=None)


@asynccontextmanager
async def broker_serving(service: BrokerService, interceptors: Sequence[grpc.aio.ServerInterceptor] | None = None
                         ) -> AsyncIterator[tuple[grpc.aio.Channel, str]]:
    """`service` started in process behind a real grpc.aio server (Broker and Catalog, as
    services.broker.add_services serves them) on a free loopback port: (a channel to it, its
    address). On exit the server stops, then the service closes."""
    server = grpc.aio.server(interceptors=interceptors)
    add_services(service, server)
    address = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
    await server.start()
    await service.start()
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            yield channel, address
    finally:
        await server.stop(None)
        await service.close()


def wait_for_events(address: str, n: int, timeout_s: float = 60.0) -> int:
    """Poll the memory shard's event count until it reaches n (a bounded wait, not a timing check).
    Blocking: run it off the event loop the broker under test shares."""
    deadline = time.monotonic() + timeout_s
    with ShardClient(address) as client:
        while True:
            got = int(client.describe().params["events"])
            if got >= n or time.monotonic() > deadline:
                return got
            time.sleep(0.1)


def scrape(address: str) -> Series:
    """Every sample at http://address/metrics: (name, labels) -> value."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(series: Series, name: str, **labels: str) -> float:
    """The sample `name` with exactly `labels` (0 if absent)."""
    return series.get((name, frozenset(labels.items())), 0.0)


def ltrr(*args: str) -> subprocess.CompletedProcess[str]:
    """`ltrr ARGS...` in a child process (no standard input), its output captured."""
    return subprocess.run([sys.executable, "-m", "services.cli", *args], capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL, check=False)


@pytest.fixture(scope="module")
def catalog_file(tmp_path_factory: pytest.TempPathFactory, catalog: list[Entity]) -> Path:
    path = tmp_path_factory.mktemp("catalog") / "catalog.jsonl.gz"
    write_jsonl(catalog, path)
    return path
