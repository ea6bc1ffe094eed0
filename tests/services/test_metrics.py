"""Prometheus metrics and JSON logs of a real cluster: every process serves /metrics, the series
exist, and searches and feedback move them by exactly what was sent."""

from __future__ import annotations

import dataclasses
import gc
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client import CollectorRegistry, Gauge

from core.errors import DeadlineExceededError, OverloadedError
from ltrr.v1 import broker_pb2
from services.admission import Deadline, Limiter
from services.client import BrokerClient
from services.cluster import Cluster, ClusterConfig, broker_args
from services.metrics import AUTO_PORT, BROKER, admission_metrics, gauge_value, port_arg
from services.process import spawn
from tests.services.conftest import ALL, Series, config, scrape, value

pytestmark = pytest.mark.slow
QUERIES = ("love night", "blue river", "dance fire", "summer rain", "gold city")


def total(series: Series, name: str, **labels: str) -> float:
    """The sum over every sample of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in series.items() if n == name and want <= ls)


@pytest.fixture(scope="module")
def cluster(built: Path) -> Iterator[Cluster]:
    c = Cluster(dataclasses.replace(config(built, "state-metrics"), log_format="json", log_level="DEBUG"))
    c.start(broker_port=0)
    yield c
    c.stop()


def test_every_process_serves_its_own_series(cluster: Cluster) -> None:
    assert cluster.broker is not None and cluster.broker.metrics_address
    broker = scrape(cluster.broker.metrics_address)
    for name in ("ltrr_broker_searches_total", "ltrr_broker_search_latency_ms_count",
                 "ltrr_broker_feedback_events_total", "ltrr_broker_shed_searches_total",
                 "ltrr_broker_shed_lagging_searches_total", "ltrr_broker_shed_queueing_searches_total",
                 "ltrr_broker_expired_searches_total",
                 "ltrr_broker_degraded_searches_total", "ltrr_broker_explored_searches_total",
                 "ltrr_broker_outbox_lag_events", "ltrr_broker_pending_decisions", "process_cpu_seconds_total"):
        assert any(n == name for n, _ in broker), name
    assert value(broker, "ltrr_cache_entries", cache="recent_decisions") >= 0
    assert not any(n.startswith("ltrr_shard_") for n, _ in broker)
    # the full collection of the start-up freeze (services.server.freeze_loaded), at least
    assert value(broker, "ltrr_gc_pause_ms_count", generation="2") >= 1
    for name in ALL:
        shard = scrape(cluster.shards[name].metrics_address)
        assert value(shard, "ltrr_gc_pause_ms_count", generation="2") >= 1
        # the synthetic catalog (tests/conftest.py) holds 300 tracks, none deleted
        assert value(shard, "ltrr_shard_index_entities", strategy=name) == 300
        assert value(shard, "ltrr_shard_index_deleted_entities", strategy=name) == 0
        assert value(shard, "ltrr_shard_index_bytes", strategy=name) > 0
        assert value(shard, "ltrr_shard_shed_requests_total", strategy=name) == 0
        assert value(shard, "ltrr_shard_expired_requests_total", strategy=name) == 0
        assert not any(n.startswith("ltrr_broker_") for n, _ in shard)


def test_searches_and_feedback_move_the_series(cluster: Cluster) -> None:
    assert cluster.broker is not None
    before = scrape(cluster.broker.metrics_address)
    shards_before = {name: scrape(s.metrics_address) for name, s in cluster.shards.items()}
    with BrokerClient(cluster.broker.address) as client:
        responses = [client.search(q, k=5, budget_ms=2000) for q in QUERIES]
        # a search may have explored an allocation that found nothing (memory alone, still empty)
        shown = next(r for r in responses if r.results)
        fb = client.feedback(shown.decision_id, shown.results[0].entity_id, "click")
        with pytest.raises(grpc.RpcError) as err:
            client.search("love", k=1000)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    after = scrape(cluster.broker.metrics_address)
    n = len(QUERIES)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("ltrr_broker_searches_total") == n
    assert moved("ltrr_broker_search_latency_ms_count") == n
    assert moved("ltrr_broker_requests_total", method="Search", code="OK") == n
    assert moved("ltrr_broker_requests_total", method="Search", code="INVALID_ARGUMENT") == 1
    assert moved("ltrr_broker_requests_total", method="Feedback", code="OK") == 1
    assert moved("ltrr_broker_feedback_events_total") == (0 if fb.duplicate else 1)
    assert moved("ltrr_cache_lookups_total", cache="recent_decisions", result="hit") == 1
    # one look-up of the broker's Understand cache per search that got as far as understanding
    assert (moved("ltrr_cache_lookups_total", cache="understood_queries", result="hit")
            + moved("ltrr_cache_lookups_total", cache="understood_queries", result="miss")) == n
    assert value(after, "ltrr_cache_entries", cache="understood_queries") >= 1
    assert moved("ltrr_broker_decision_propensity_count") == n
    assert total(after, "ltrr_broker_plans_total") - total(before, "ltrr_broker_plans_total") == n
    for s, name in enumerate(ALL):
        called = [r.strategies[s] for r in responses if r.strategies[s].quota > 0]
        statuses = {st: moved("ltrr_broker_strategy_calls_total", strategy=name, status=st)
                    for st in ("OK", "TIMEOUT", "ERROR", "SKIPPED")}
        assert statuses == {"OK": sum(r.status == broker_pb2.STRATEGY_STATUS_OK for r in called), "TIMEOUT": 0,
                            "ERROR": 0, "SKIPPED": n - len(called)}
        assert moved("ltrr_broker_quota_candidates_total", strategy=name) == sum(r.quota for r in called)
        assert moved("ltrr_broker_strategy_latency_ms_count", strategy=name) == len(called)
        # the shard saw exactly the calls the broker reports making, each answered OK
        shard = scrape(cluster.shards[name].metrics_address)
        shard_moved = (value(shard, "ltrr_shard_requests_total", strategy=name, method="Retrieve", code="OK")
                       - value(shards_before[name], "ltrr_shard_requests_total", strategy=name, method="Retrieve",
                               code="OK"))
        assert shard_moved == len(called)
        assert (value(shard, "ltrr_shard_request_latency_ms_count", strategy=name, method="Retrieve")
                - value(shards_before[name], "ltrr_shard_request_latency_ms_count", strategy=name,
                        method="Retrieve")) == len(called)
    # the attribute strategy's cache of readings holds the texts it analysed
    attribute = scrape(cluster.shards["attribute"].metrics_address)
    assert value(attribute, "ltrr_cache_entries", strategy="attribute", cache="attribute_readings") >= 1
    assert value(attribute, "ltrr_cache_bytes", strategy="attribute", cache="attribute_readings") > 0


def test_a_dead_shard_shows_as_failed_calls_and_degraded_searches(cluster: Cluster, built: Path,
                                                                 tmp_path: Path) -> None:
    """A broker whose semantic shard is gone (nothing listens on port 1): every call to it fails
    with UNAVAILABLE, and the search is served degraded from lexical alone."""
    shards = {"lexical": cluster.shards["lexical"].address, "semantic": "127.0.0.1:1"}
    args = broker_args(dataclasses.replace(config(built, "unused", policy="static"), state=str(tmp_path)), shards, 0)
    broker = spawn([*args, "--metrics-port", "auto"])
    try:
        before = scrape(broker.metrics_address)
        with BrokerClient(broker.address) as client:
            responses = [client.search(q, k=5, budget_ms=2000) for q in QUERIES[:3]]
        after = scrape(broker.metrics_address)
    finally:
        assert broker.stop() == 0, broker.log_text()
    assert all(r.degraded and r.results for r in responses)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("ltrr_broker_strategy_failures_total", strategy="semantic", code="UNAVAILABLE") == 3
    assert moved("ltrr_broker_strategy_calls_total", strategy="semantic", status="ERROR") == 3
    assert moved("ltrr_broker_strategy_calls_total", strategy="lexical", status="OK") == 3
    assert moved("ltrr_broker_degraded_searches_total") == 3


def json_lines(text: str) -> list[dict[str, str]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_json_logs_from_every_process(cluster: Cluster) -> None:
    assert cluster.broker is not None
    for server in [*cluster.shards.values(), cluster.broker]:
        lines = json_lines(server.log_text())
        assert lines, server.log_text()[-2000:]
        assert all({"ts", "level", "logger", "msg", "pid"} <= set(line) for line in lines)
        assert any(line["msg"].endswith("serving on " + server.address) for line in lines)


def test_the_broker_logs_carry_the_decision_id(cluster: Cluster) -> None:
    assert cluster.broker is not None
    with BrokerClient(cluster.broker.address) as client:
        response = client.search("dance fire", k=3, budget_ms=2000)
        client.feedback(response.decision_id, response.results[0].entity_id, "play")
    deadline = time.monotonic() + 10  # a bounded wait for the log file, not a timing check
    while True:
        mine = [line for line in json_lines(cluster.broker.log_text())
                if line.get("decision_id") == response.decision_id]
        if len(mine) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert [line["msg"].split()[0] for line in mine] == ["search", "feedback"]
    assert "'dance fire'" in mine[0]["msg"] and response.results[0].entity_id in mine[1]["msg"]


@pytest.mark.parametrize(("text", "port"), [("0", 0), ("9100", 9100), ("auto", AUTO_PORT)])
def test_port_arg_reads_ports_and_auto(text: str, port: int) -> None:
    assert port_arg(text) == port


@pytest.mark.parametrize("text", ["-1", "65536", "x", ""])
def test_port_arg_rejects_other_text(text: str) -> None:
    with pytest.raises(ValueError, match="`--metrics-port` must be a port in"):
        port_arg(text)


def test_a_cluster_base_metrics_port_numbers_the_processes() -> None:
    c = ClusterConfig(metrics_port=9100, strategies=("lexical", "memory"))
    assert c.metrics_ports() == (["9100"], ["9101", "9102"])
    assert ClusterConfig().metrics_ports()[0] == ["auto"]
    assert ClusterConfig(metrics_port=0).metrics_ports() == (["0"], ["0"] * len(ClusterConfig().strategies))


@pytest.mark.parametrize(("key", "bad", "match"), [("metrics_port", "free", "`metrics_port` must be"),
                                                   ("metrics_port", 65535, "`metrics_port` must be"),
                                                   ("log_format", "xml", "`log_format` must be text or json")])
def test_cluster_config_rejects(key: str, bad: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ClusterConfig(**{key: bad})  # type: ignore[arg-type]


K8S = Path(__file__).resolve().parents[2] / "k8s"


def dashboard_series() -> set[str]:
    """The metric names the Grafana dashboard's queries read (labels in `by (...)` left out)."""
    dashboard = json.loads((K8S / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs
    return {name for e in exprs for name in re.findall(r"\b(?:ltrr|process)_\w+", re.sub(r"by \([^)]*\)", "", e))}


def test_the_dashboard_reads_only_series_the_cluster_serves(cluster: Cluster) -> None:
    assert cluster.broker is not None
    with BrokerClient(cluster.broker.address) as client:
        response = client.search("love night", k=5, budget_ms=2000)
        client.feedback(response.decision_id, response.results[0].entity_id, "click")
    served = {name for s in [cluster.broker, *cluster.shards.values()] for name, _ in scrape(s.metrics_address)}
    assert dashboard_series() - served == set()


def test_every_scraped_pod_serves_metrics_on_its_annotated_port() -> None:
    yaml = pytest.importorskip("yaml")
    templates = [doc["spec"]["template"] for path in sorted(K8S.glob("*.yaml")) for doc in yaml.safe_load_all(
        path.read_text()) if doc and doc.get("kind") in ("Deployment", "StatefulSet")]
    ours = [t for t in templates if t["metadata"]["labels"].get("role") != "store"]  # PostgreSQL is not ltrr's
    scraped = [t for t in ours if t["metadata"].get("annotations", {}).get("prometheus.io/scrape") == "true"]
    # the broker and every partition of lexical, semantic, attribute and memory (2 each)
    assert len(scraped) == len(ours) == 1 + 4 * 2
    for template in scraped:
        port = template["metadata"]["annotations"]["prometheus.io/port"]
        (container,) = template["spec"]["containers"]
        args = container["args"]
        assert args[args.index("--metrics-port") + 1] == port
        assert args[:2] == ["--log-format", "json"]
        assert {"name": "metrics", "containerPort": int(port)} in container["ports"]


def test_a_collection_is_observed_as_a_pause_of_its_generation() -> None:
    def count(generation: str) -> float:
        return BROKER.get_sample_value("ltrr_gc_pause_ms_count", {"generation": generation}) or 0.0

    enabled = gc.isenabled()
    gc.disable()  # no automatic collection in between, from any thread (one made this flaky)
    try:
        before = count("2"), count("0")
        gc.collect()
        gc.collect(0)
        after = count("2"), count("0")
    finally:
        if enabled:
            gc.enable()
    assert after == (before[0] + 1, before[1] + 1)
    assert (BROKER.get_sample_value("ltrr_gc_pause_ms_sum", {"generation": "2"}) or 0.0) > 0


def test_gauge_value_reads_one_child_of_one_gauge() -> None:
    gauge = Gauge("in_flight", "a test gauge", ["strategy"], registry=CollectorRegistry())
    gauge.labels("lexical").inc(3)
    assert gauge_value(gauge, strategy="lexical") == 3
    assert gauge_value(gauge, strategy="memory") == 0  # no such child yet


def test_shed_and_expired_are_the_limiters_counts() -> None:
    """The admission Limiter is the one count of refused and expired work; metrics read it."""
    limiter = Limiter(1, name="a test queue")
    limiter.acquire()
    for _ in range(3):
        with pytest.raises(OverloadedError):
            limiter.acquire()
    with pytest.raises(DeadlineExceededError):
        limiter.check(Deadline(time.monotonic() - 1))
    got = {f.name: f.samples[0] for f in admission_metrics("ltrr_shard", "requests", limiter, ["lexical"])}
    assert got["ltrr_shard_shed_requests"].value == 3
    assert got["ltrr_shard_expired_requests"].value == 1
    assert got["ltrr_shard_shed_requests"].labels == {"strategy": "lexical"}
