"""Several broker processes on one PostgreSQL event store (issue 14): feedback at any broker,
convergence to one policy, a broker SIGKILLed during a feedback stream, a restart of the server.
Real processes and a real server (tests/conftest.py `postgres`; skipped only without the binaries)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from core.eventlog_pg import PgEventLog
from ltrr.v1 import broker_pb2
from services.client import BrokerClient
from services.cluster import broker_args
from services.postgres import PostgresServer
from services.process import ServerProcess, shard_args, spawn
from tests.conftest import private_postgres
from tests.services.conftest import config, wait_for_events

pytestmark = pytest.mark.slow
CONVERGE_S = 5.0  # the bound: both brokers agree within 5 s of the last feedback


@pytest.fixture(scope="module")
def shards(built: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServerProcess]]:
    memory_state = tmp_path_factory.mktemp("memory-state")
    running = {"lexical": spawn(shard_args("lexical", built / "index")),
               "memory": spawn(shard_args("memory", built / "index", {"state_dir": memory_state}))}
    yield running
    for server in running.values():
        server.stop()


def start_broker(built: Path, shards: dict[str, ServerProcess], url: str, state: str,
                 **settings: object) -> ServerProcess:
    args = broker_args(config(built, state, policy="thompson", **settings),
                       {name: s.address for name, s in shards.items()}, 0)
    return spawn([*args, "--store", url])


def search_and_feedback(at: BrokerClient, to: BrokerClient, i: int) -> str:
    """A search at one broker, a click at the other; the acknowledged event id."""
    response = at.search("love night" if i % 2 else "blue river", k=5, budget_ms=2000)
    event_id = f"ev-{i}-{response.decision_id[:8]}"
    assert not to.feedback(response.decision_id, acted_on(response, i), "click", event_id=event_id).duplicate
    return event_id


def acted_on(response: broker_pb2.SearchResponse, i: int) -> str:
    """A result of the search, or a catalog entity when it has none (feedback need not name a result)."""
    return response.results[i % len(response.results)].entity_id if response.results else f"t{i % 300:04d}"


def converged(clients: list[BrokerClient], events: int, within_s: float = CONVERGE_S) -> list[tuple[int, str]]:
    """Poll every broker's Describe until all show `events` applied (bounded wait); their (applied, digest)."""
    deadline = time.monotonic() + within_s
    while True:
        got = [(int(d.applied_events), d.policy_digest) for d in (c.describe() for c in clients)]
        if all(n == events for n, _ in got) or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def test_feedback_at_the_other_broker_and_one_policy(built: Path, shards: dict[str, ServerProcess],
                                                     pg_url: str) -> None:
    """Feedback sent to the broker that did not decide is joined (0 NOT_FOUND); both brokers apply
    every event and hold equal policies; a third broker started afterwards replays the store to
    the same parameters (the replay path equals the live one); the memory shard gets each
    satisfying event once, forwarded by the one broker holding the outbox lease."""
    a, b = start_broker(built, shards, pg_url, "shared-a"), start_broker(built, shards, pg_url, "shared-b")
    c: ServerProcess | None = None
    try:
        with BrokerClient(a.address) as ca, BrokerClient(b.address) as cb:
            untaught = ca.describe()
            assert untaught.applied_events == 0
            acked = [search_and_feedback(*((ca, cb) if i % 2 == 0 else (cb, ca)), i) for i in range(60)]
            views = converged([ca, cb], len(acked))
            assert views[0] == views[1] and views[0][0] == len(acked), views
            assert views[0][1] != untaught.policy_digest  # it learned something
            described = ca.describe()
            assert described.store == "postgresql" and described.policy == "thompson"
            assert [s.strategy for s in described.strategies] == ["lexical", "memory"]
            assert ca.search("love night", k=3, budget_ms=2000).policy_version == len(acked)
            c = start_broker(built, shards, pg_url, "shared-c")
            with BrokerClient(c.address) as cc:
                assert converged([cc], len(acked))[0] == views[0]
        assert wait_for_events(shards["memory"].address, len(acked)) >= len(acked)
    finally:
        for broker in (a, b, c):
            if broker is not None:
                broker.stop()
    with PgEventLog(pg_url) as store:
        assert store.counts()[1] == len(acked)


def test_a_broker_killed_during_a_feedback_stream_loses_nothing_acknowledged(
        built: Path, shards: dict[str, ServerProcess], pg_url: str) -> None:
    """SIGKILL of the broker receiving a feedback stream: every event it acknowledged is in the
    store and applied by the surviving broker and by the killed one once restarted (counted)."""
    a, b = start_broker(built, shards, pg_url, "kill-a"), start_broker(built, shards, pg_url, "kill-b")
    restarted: ServerProcess | None = None
    acked: list[str] = []
    try:
        with BrokerClient(a.address) as ca, BrokerClient(b.address) as cb:
            decisions = [cb.search("love night", k=5, budget_ms=2000) for _ in range(20)]
            stop = threading.Event()

            def stream() -> None:
                for i in range(10_000):
                    d = decisions[i % len(decisions)]
                    try:
                        ca.feedback(d.decision_id, acted_on(d, i), "click", event_id=f"kill-{i}", timeout=5)
                    except grpc.RpcError:
                        return
                    acked.append(f"kill-{i}")
                    if stop.is_set():
                        return

            sender = threading.Thread(target=stream)
            sender.start()
            deadline = time.monotonic() + 60
            while len(acked) < 30 and sender.is_alive() and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(acked) >= 30, "the feedback stream stopped before the kill"
            a.kill()
            stop.set()
            sender.join()
            with PgEventLog(pg_url) as store:
                stored = [e.event_id for _, e in store.events_after(0)]
            assert set(acked) <= set(stored) and len(stored) - len(acked) <= 1  # at most the one in flight
            survivor = converged([cb], len(stored))[0]
            assert survivor[0] == len(stored)
            restarted = start_broker(built, shards, pg_url, "kill-a")
            with BrokerClient(restarted.address) as cr:
                assert converged([cr], len(stored))[0] == survivor
    finally:
        for broker in (a, b, restarted):
            if broker is not None:
                broker.stop()


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A server of this test's own, which it stops and starts."""
    with private_postgres() as server:
        yield server


def test_a_postgresql_restart_loses_nothing_acknowledged(built: Path, shards: dict[str, ServerProcess],
                                                         own_postgres: PostgresServer) -> None:
    """While the server is down, searches and feedback fail UNAVAILABLE at once (not hang);
    after it is back the broker reconnects by itself; every acknowledged event is applied."""
    broker = start_broker(built, shards, own_postgres.url, "pg-restart")
    try:
        with BrokerClient(broker.address) as client:
            acked = [search_and_feedback(client, client, i) for i in range(10)]
            kept = client.search("blue river", k=5, budget_ms=2000)  # cached: its feedback needs only the store
            own_postgres.stop()
            for call in (lambda: client.search("love night", k=5, budget_ms=2000, timeout=8),
                         lambda: client.feedback(kept.decision_id, acted_on(kept, 0), "click",
                                                 event_id="during-outage", timeout=8)):
                with pytest.raises(grpc.RpcError) as err:
                    call()
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
            own_postgres.start()
            deadline = time.monotonic() + 30
            while True:  # the first calls after the restart may still meet the old connection
                try:
                    acked.append(search_and_feedback(client, client, 100))
                    break
                except grpc.RpcError as e:
                    assert e.code() == grpc.StatusCode.UNAVAILABLE and time.monotonic() < deadline
                    time.sleep(0.2)
            with PgEventLog(own_postgres.url) as store:
                stored = {e.event_id for _, e in store.events_after(0)}
            assert set(acked) <= stored
            assert converged([client], len(stored))[0][0] == len(stored)
    finally:
        broker.stop()


def test_the_memory_outbox_moves_to_the_broker_that_takes_the_lease(built: Path, pg_url: str,
                                                                     tmp_path: Path) -> None:
    """The outbox runs only on the lease holder: while another session holds the lease nothing is
    forwarded (the shared cursor stays 0); once it is released the broker takes the lease and the
    memory shard gets every satisfying event from the shared cursor."""
    memory = spawn(shard_args("memory", built / "index", {"state_dir": tmp_path / "memory"}))
    lexical = spawn(shard_args("lexical", built / "index"))
    with PgEventLog(pg_url) as store:
        holder = store.lease("memory-outbox")
        assert holder.hold()
        broker = start_broker(built, {"lexical": lexical, "memory": memory}, pg_url, "lease")
        try:
            with BrokerClient(broker.address) as client:
                acked = [search_and_feedback(client, client, i) for i in range(12)]
                assert converged([client], len(acked))[0][0] == len(acked)
                assert store.cursor("memory") == 0
                holder.release()
                assert wait_for_events(memory.address, len(acked)) == len(acked)
                for _ in range(100):  # the cursor moves once the shard has answered: a bounded wait
                    if store.cursor("memory") == store.last_event_rowid():
                        break
                    time.sleep(0.05)
                assert store.cursor("memory") == store.last_event_rowid()
        finally:
            broker.stop()
            lexical.stop()
            memory.stop()
