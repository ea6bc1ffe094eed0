"""The broker carries the request context to the memory shard on both paths: the fan-out's Query
and the outbox's forwarded feedback (the decision's context), so the memory learns per context."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.catalog import Entity
from services.client import BrokerClient
from services.cluster import Cluster
from tests.services.conftest import ALL, config, wait_for_events

pytestmark = pytest.mark.slow
MEMORY = ALL.index("memory")
QUERY = "late night love"
JAZZ = {"hour": "23", "affinity.jazz": "0.7"}
ROCK = {"hour": "23", "affinity.genre.rock": "0.6"}  # the proto's spelling; JAZZ is the simulator's


@pytest.fixture(scope="module")
def cluster(built: Path) -> Iterator[Cluster]:
    c = Cluster(config(built, "state-context", policy="static"))
    c.start(broker_port=0)
    yield c
    c.stop()


def memory_top(client: BrokerClient, context: dict[str, str] | None) -> str:
    """The memory strategy's first candidate for QUERY in `context`, as the broker merged it."""
    response = client.search(QUERY, k=5, budget_ms=5000, context=context, return_candidates=True)
    assert response.strategies[MEMORY].quota > 0 and response.strategies[MEMORY].returned > 0
    return next(c.entity_id for c in response.candidates if c.ranks[MEMORY] == 1)


def test_a_pair_learned_through_feedback_is_served_to_the_same_context_only(cluster: Cluster,
                                                                             catalog: list[Entity]) -> None:
    """Three jazz lovers played `first`, one rock lover `second` (through the broker's Feedback):
    the memory shard serves `second` first to rock lovers, `first` to jazz lovers and anyone else."""
    assert cluster.broker is not None
    first, second = catalog[3].id, catalog[4].id
    with BrokerClient(cluster.broker.address) as client:
        for i, (entity, context) in enumerate([(first, JAZZ)] * 3 + [(second, ROCK)]):
            decision = client.search(QUERY, k=5, budget_ms=5000, context=context).decision_id
            assert not client.feedback(decision, entity, "play", value=1.0, event_id=f"ctx{i}").duplicate
        assert wait_for_events(cluster.shards["memory"].address, 4) == 4
        assert memory_top(client, ROCK) == second
        assert memory_top(client, {"affinity.rock": "0.9"}) == second  # either spelling
        assert memory_top(client, JAZZ) == first
        assert memory_top(client, {"affinity.pop": "0.9"}) == first  # a context never seen: the plain key
        assert memory_top(client, None) == first
