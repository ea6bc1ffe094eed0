"""The broker over a partitioned lexical strategy with replicas, all real processes on loopback.

Until `ltrr index --partitions` builds partitions with the whole catalog's statistics, the
partitions here are built by filtering the catalog with core.partitions.document_partition, each
indexed on its own. The corpus is made so that this does not matter for one-term queries: both
partitions hold the same number of documents, the same number containing the query term and the
same total length, so every partition's BM25 idf and average length are equal to one another and
the average length to the whole index's; scores then order documents as one index over
everything does (only their scale differs), and the merged ids must be that index's, in its order.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from core.catalog import Entity, write_jsonl
from core.indexing import build_index
from core.partitions import document_partition, partition_quota
from ltrr.v1 import broker_pb2
from services.client import BrokerClient, ShardClient
from services.process import ServerProcess, shard_args, spawn
from tests.services.conftest import scrape, value

pytestmark = pytest.mark.slow
OPTIONS = {"fields": "title", "progress": False}
FILLER = ("amber", "cobalt", "delta", "ember", "fjord", "garnet")
MATCHING = 90  # documents with "love" per partition: more than partition_quota(100, 2) = 69


def corpus() -> list[Entity]:
    """Partition 0: 90 x "love love" and 40 six-word fillers; partition 1: 90 x "love zebra quartz
    vivid" and 40 fillers of 1 or 2 words. Each: 130 documents, 90 with "love", 420 words. Catalog
    order interleaves the partitions (ids are assigned in order; their hash picks the partition)."""
    wanted = {0: ["love love"] * MATCHING + [" ".join(FILLER)] * 40,
              1: ["love zebra quartz vivid"] * MATCHING + ["amber"] * 20 + ["amber cobalt"] * 20}
    out: list[Entity] = []
    i = 0
    while any(wanted.values()):
        eid = f"d{i:05d}"
        i += 1
        texts = wanted[document_partition(eid, 2)]
        if texts:
            out.append(Entity(id=eid, type="track", fields={"title": texts.pop(0), "artist": f"artist {eid}"}))
    return out


@dataclass
class Built:
    catalog: Path
    whole: Path
    parts: tuple[Path, Path]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("partitioned")
    entities = corpus()
    write_jsonl(entities, root / "catalog.jsonl")
    build_index(entities, root / "whole", ["lexical"], {"lexical": OPTIONS})
    for p in (0, 1):
        build_index([e for e in entities if document_partition(e.id, 2) == p], root / f"part{p}", ["lexical"],
                    {"lexical": OPTIONS})
    return Built(root / "catalog.jsonl", root / "whole", (root / "part0", root / "part1"))


@dataclass
class Cluster:
    replicas: list[list[ServerProcess]]  # per partition, per replica
    broker: ServerProcess

    def stop(self) -> None:
        for server in [self.broker, *(r for part in self.replicas for r in part)]:
            server.stop()


def start(built: Built, state: Path, slow: tuple[int, int] | None = None, delay_ms: int = 3000,
          settings: tuple[str, ...] = ()) -> Cluster:
    """2 partitions x 2 replicas of lexical and a broker over them; `slow`: (partition, replica)
    of a replica that sleeps `delay_ms` in every Retrieve; settings: the broker's extra `--set`s."""
    replicas = [[spawn(shard_args("lexical", built.parts[p], extra=["--test-delay-ms", str(delay_ms)]
                                  if (p, r) == slow else [])) for r in (0, 1)] for p in (0, 1)]
    flags = [f for p, part in enumerate(replicas)
             for f in ("--shard", f"lexical/{p}=" + ",".join(r.address for r in part))]
    broker = spawn(["broker", *flags, "--state", str(state), "--catalog", str(built.catalog), "--port", "0",
                    "--set", "ranker=rrf", "--set", "policy=static", "--metrics-port", "auto",
                    *(f for kv in settings for f in ("--set", kv))])
    return Cluster(replicas, broker)


@pytest.fixture
def cluster(built: Built, tmp_path: Path) -> Iterator[Cluster]:
    c = start(built, tmp_path / "state")
    yield c
    c.stop()


def lexical(response: broker_pb2.SearchResponse) -> broker_pb2.StrategyReport:
    (report,) = [r for r in response.strategies if r.strategy == "lexical"]
    return report


@pytest.fixture(scope="module")
def whole(built: Built) -> Iterator[ShardClient]:
    """One lexical shard over the whole corpus: what the partitions must add up to."""
    server = spawn(shard_args("lexical", built.whole))
    with ShardClient(server.address) as client:
        yield client
    server.stop()


def test_describe_shows_the_topology(cluster: Cluster) -> None:
    with BrokerClient(cluster.broker.address) as client:
        got = client.describe()
    (strategy,) = got.strategies
    assert strategy.strategy == "lexical" and strategy.partitioned_by == "documents"
    assert [list(p.replicas) for p in strategy.partitions] == [[r.address for r in part] for part in cluster.replicas]
    assert got.policy == "static"


@pytest.mark.parametrize(("text", "refetched"), [("love", 1), ("zebra", 1), ("cobalt", 0)])
def test_partitioned_lexical_through_the_broker_equals_one_index(whole: ShardClient, cluster: Cluster,
                                                                 text: str, refetched: int) -> None:
    """A forced plan of lexical 100 over 2 partitions returns the ids of one shard over the whole
    corpus, in its order. "love": partition 0 holds the 90 best, so the 69 first asked of each
    partition are not enough and partition 0 is asked again for 100; "zebra": only partition 1
    holds any (90), and is asked again; "cobalt": 40 + 20 matches, every one returned at once."""
    expected = [c.entity_id for c in whole.retrieve(text, 100).candidates]
    assert expected  # every query matches something
    with BrokerClient(cluster.broker.address) as client:
        response = client.search(text, k=100, budget_ms=5000, plan={"lexical": 100}, return_candidates=True)
    assert response.forced and response.propensity == 1.0
    assert [c.entity_id for c in response.candidates] == expected
    assert [r.entity_id for r in response.results] == expected  # RRF over one list keeps its order
    report = lexical(response)
    assert report.coverage == 1.0 and report.partition_quota == partition_quota(100, 2) == 69
    assert report.refetched == refetched and not response.degraded


def searches(address: str, n: int) -> list[broker_pb2.SearchResponse]:
    with BrokerClient(address) as client:
        return [client.search(t, k=20, budget_ms=2000, plan={"lexical": 100})
                for t in (["love", "cobalt", "zebra", "amber"] * n)[:n]]


class Stream:
    """Searches one after another from a thread until stopped; every response (a failed search
    raises in `stop`)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.got: list[broker_pb2.SearchResponse] = []
        self.error: grpc.RpcError | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with BrokerClient(self.address) as client:
            for text in itertools.cycle(["love", "cobalt", "zebra", "amber"]):
                if self.done.is_set():
                    return
                try:
                    self.got.append(client.search(text, k=20, budget_ms=2000, plan={"lexical": 100}))
                except grpc.RpcError as err:
                    self.error = err
                    return

    def wait_for(self, n: int) -> None:
        """Until `n` more searches were answered (bounded: 60 s)."""
        want, deadline = len(self.got) + n, time.monotonic() + 60
        while len(self.got) < want and self.error is None and time.monotonic() < deadline:
            time.sleep(0.01)

    def stop(self) -> list[broker_pb2.SearchResponse]:
        self.done.set()
        self.thread.join(60)
        if self.error is not None:
            raise self.error
        return self.got


def test_replicas_fail_over_and_a_lost_partition_degrades_with_its_coverage(built: Built, cluster: Cluster) -> None:
    """Under a stream of searches, SIGKILL one replica of every partition: no search fails and
    none is degraded. Then SIGKILL the other replica of partition 1 too: no search fails, every one
    after it is degraded with lexical's coverage 0.5, and only partition 0's documents come back."""
    stream = Stream(cluster.broker.address)
    stream.wait_for(8)
    cluster.replicas[0][0].kill()
    cluster.replicas[1][1].kill()
    stream.wait_for(24)
    got = stream.stop()
    assert all(lexical(r).status == broker_pb2.STRATEGY_STATUS_OK and lexical(r).coverage == 1.0 for r in got)
    assert not any(r.degraded for r in got) and len(got) >= 32
    assert metric(cluster.broker, "ltrr_broker_failovers_total", "lexical") >= 2  # one per dead replica at least
    cluster.replicas[1][0].kill()
    got = searches(cluster.broker.address, 24)
    assert all(r.degraded and lexical(r).status == broker_pb2.STRATEGY_STATUS_OK for r in got)
    assert {lexical(r).coverage for r in got} == {0.5}
    assert metric(cluster.broker, "ltrr_broker_partial_strategy_calls_total", "lexical") >= len(got)
    assert all(document_partition(x.entity_id, 2) == 0 for r in got for x in r.results)


def test_a_slow_replica_is_hedged_through_the_broker(built: Built, tmp_path: Path) -> None:
    """Partition 0's replica 0 sleeps 3 s in every Retrieve; searches have 1 s. Calls it gets
    before the partition has 8 latency samples (`--set hedge_min_samples=8`) time out (a degraded
    search, coverage 0.5); once it has them, a call stuck on it is hedged to the other replica
    after the recent p95, and the search is whole: the broker counts hedges and the last searches
    are not degraded."""
    c = start(built, tmp_path / "state", slow=(0, 0), settings=("hedge_min_samples=8",))
    try:
        with BrokerClient(c.broker.address) as client:
            got = [client.search("love", k=10, budget_ms=1000, plan={"lexical": 100}) for _ in range(40)]
        hedges = metric(c.broker, "ltrr_broker_hedged_calls_total", "lexical")
    finally:
        c.stop()
    assert hedges >= 1
    assert all(lexical(r).status == broker_pb2.STRATEGY_STATUS_OK for r in got)
    degraded = [(i, lexical(r).coverage) for i, r in enumerate(got) if r.degraded]
    assert not [i for i, _ in degraded if i >= len(got) - 15], f"degraded (search, coverage): {degraded}; {hedges=}"


def metric(server: ServerProcess, name: str, strategy: str) -> float:
    """The value of `name`{strategy="..."} on the server's Prometheus endpoint (0 if absent)."""
    return value(scrape(server.metrics_address), name, strategy=strategy)
