"""`ltrr index --partitions 2` served through the broker equals one index: real shard processes.

Lexical and attribute are split by documents (every partition asked, merged, refetched), memory by
query key (only the owner asked); core.partitioning gives the document partitions the whole
catalog's statistics. A forced plan of one strategy at quota 100 through a broker over the
partitions returns, for every query, the ids of one shard over the plain index, in its order
(`SearchResponse.candidates`: the merged list, before the ranker).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.catalog import Entity, demo_catalog_path, load_jsonl, write_jsonl
from core.indexing import build_index
from core.partitioning import build_partitioned, partition_dirs
from services.client import BrokerClient, ShardClient
from services.process import ServerProcess, shard_args, spawn

pytestmark = pytest.mark.slow
N_TRACKS = 1500
STRATEGIES = ("lexical", "attribute", "memory")
OPTIONS = {"lexical": {"fields": "title^2,artist^1.5,album^0.5", "progress": False}}


@dataclass
class Served:
    whole: dict[str, ServerProcess]
    broker: ServerProcess
    shards: list[ServerProcess]


def queries(tracks: list[Entity]) -> list[str]:
    out = ["love", "the night", "remix", "90s rock", "chill pop", "tayler swift", "latin", "acoustic love songs",
           "queen", "beatles yesterday"]
    for t in tracks[::150]:
        out += [t.fields.get("title", ""), f"{t.fields.get('title', '').split(' ')[0]} {t.fields.get('artist', '')}"]
    return [q for q in out if q.strip()]


@pytest.fixture(scope="module")
def tracks() -> list[Entity]:
    return load_jsonl(demo_catalog_path())[:N_TRACKS]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tracks: list[Entity]) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("partitioned-index")
    write_jsonl(tracks, root / "catalog.jsonl")
    build_index(tracks, root / "plain", STRATEGIES, OPTIONS)
    build_partitioned(tracks, root / "parts", STRATEGIES, OPTIONS, partitions=2, progress=False)
    started: list[ServerProcess] = []

    def shard(name: str, index: Path, state: str) -> ServerProcess:
        options = {"state_dir": str(root / "state" / state)} if name == "memory" else None
        started.append(spawn(shard_args(name, index, options)))
        return started[-1]

    try:
        whole = {name: shard(name, root / "plain", "whole") for name in STRATEGIES}
        flags = [f for name in STRATEGIES for p, d in enumerate(partition_dirs(root / "parts", name))
                 for f in ("--shard", f"{name}/{p}={shard(name, d, f'{name}-{p}').address}")]
        broker = spawn(["broker", *flags, "--state", str(root / "broker"), "--catalog", str(root / "catalog.jsonl"),
                        "--port", "0", "--set", "ranker=rrf"])
        started.append(broker)
        yield Served(whole, broker, started)
    finally:
        for server in reversed(started):
            server.stop()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_two_partitions_through_the_broker_equal_one_index(served: Served, tracks: list[Entity],
                                                           strategy: str) -> None:
    texts, found = queries(tracks), 0
    with ShardClient(served.whole[strategy].address) as whole, BrokerClient(served.broker.address) as broker:
        for text in texts:
            expected = [c.entity_id for c in whole.retrieve(text, 100).candidates]
            found += bool(expected)
            response = broker.search(text, k=10, budget_ms=5000, plan={strategy: 100}, return_candidates=True)
            (report,) = [r for r in response.strategies if r.strategy == strategy]
            assert [c.entity_id for c in response.candidates] == expected, text
            assert report.coverage == 1.0 and not response.degraded, text
            assert report.partition_quota == (100 if strategy == "memory" else 69), text
    assert found >= len(texts) // 2  # most queries find something: the comparison is not of empty lists


def test_describe_shows_memory_split_by_queries_and_the_others_by_documents(served: Served) -> None:
    with BrokerClient(served.broker.address) as client:
        got = client.describe()
    assert [(t.strategy, t.partitioned_by, len(t.partitions)) for t in got.strategies] == [
        ("lexical", "documents", 2), ("attribute", "documents", 2), ("memory", "queries", 2)]
