"""Python clients for ltrr's gRPC services (sync; the broker's asyncio client comes with the broker).

Each takes a services.security.SecurityConfig: TLS when it names a CA, the token on write RPCs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from grpc_health.v1 import health_pb2, health_pb2_grpc

from core.query import Filter
from core.types import EventType, FeedbackEvent
from ltrr.v1 import broker_pb2, broker_pb2_grpc, shard_pb2, shard_pb2_grpc
from services import convert
from services.security import NO_SECURITY, SecurityConfig, open_aio_channel, open_channel

DEFAULT_TIMEOUT_S = 10.0
# A search's own gRPC deadline: its budget plus this slack for queueing, the network and the
# broker's ranking, capped by the client's timeout. An overloaded or stuck broker thus costs the
# caller about a second and a clear DEADLINE_EXCEEDED, never a hang.
SEARCH_DEADLINE_SLACK_S = 1.0


def search_deadline_s(budget_ms: int, timeout: float) -> float:
    """The default gRPC deadline of a search with `budget_ms` (0: the broker's default, 100 ms)."""
    return min(timeout, (budget_ms or 100) / 1000 + SEARCH_DEADLINE_SLACK_S)


class ShardClient:
    """A blocking client of one shard. Use as a context manager, or call close()."""

    def __init__(self, address: str, *, timeout: float = DEFAULT_TIMEOUT_S,
                 security: SecurityConfig = NO_SECURITY) -> None:
        self.address = address
        self.timeout = timeout
        self.channel = open_channel(address, security)
        self.stub = shard_pb2_grpc.ShardStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)

    def retrieve(self, text: str, quota: int = 10, *, vector: Sequence[float] | None = None,
                 filters: Sequence[Filter] = (), context: dict[str, str] | None = None,
                 timeout: float | None = None) -> shard_pb2.RetrieveResponse:
        query = convert.query_to_proto(text, vector=vector, context=context, filters=filters)
        return self.stub.Retrieve(shard_pb2.RetrieveRequest(query=query, quota=quota),
                                  timeout=timeout or self.timeout)

    def understand(self, text: str, max_interpretations: int = 0, *, timeout: float | None = None
                   ) -> shard_pb2.UnderstandResponse:
        request = shard_pb2.UnderstandRequest(query=convert.query_to_proto(text),
                                              max_interpretations=max_interpretations)
        return self.stub.Understand(request, timeout=timeout or self.timeout)

    def learn(self, events: Iterable[FeedbackEvent], *, timeout: float | None = None) -> shard_pb2.LearnResponse:
        request = shard_pb2.LearnRequest(events=[convert.event_to_proto(e) for e in events])
        return self.stub.Learn(request, timeout=timeout or self.timeout)

    def describe(self, *, timeout: float | None = None) -> shard_pb2.DescribeResponse:
        return self.stub.Describe(shard_pb2.DescribeRequest(), timeout=timeout or self.timeout)

    def health(self, service: str = "", *, timeout: float | None = None) -> Any:
        """The standard health status (health_pb2.HealthCheckResponse.SERVING, NOT_SERVING, ...)."""
        response = self.health_stub.Check(health_pb2.HealthCheckRequest(service=service),
                                          timeout=timeout or self.timeout)
        return response.status

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> ShardClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class BrokerClient:
    """A blocking client of the broker."""

    def __init__(self, address: str, *, timeout: float = DEFAULT_TIMEOUT_S,
                 security: SecurityConfig = NO_SECURITY) -> None:
        self.address = address
        self.timeout = timeout
        self.channel = open_channel(address, security)
        self.stub = broker_pb2_grpc.BrokerStub(self.channel)

    def search(self, text: str, *, k: int = 10, budget_ms: int = 100, context: dict[str, str] | None = None,
               filters: Sequence[Filter] = (), return_candidates: bool = False,
               plan: Mapping[str, int] | None = None, timeout: float | None = None) -> broker_pb2.SearchResponse:
        """return_candidates: also get every merged candidate (SearchResponse.candidates); plan: run
        these quotas instead of the policy's (SearchRequest.plan); timeout: the call's deadline in
        seconds (default: search_deadline_s)."""
        request = broker_pb2.SearchRequest(query=convert.query_to_proto(text, context=context, filters=filters),
                                           k=k, budget_ms=budget_ms, return_candidates=return_candidates,
                                           plan=dict(plan or {}))
        return self.stub.Search(request, timeout=timeout or search_deadline_s(budget_ms, self.timeout))

    def describe(self, *, timeout: float | None = None) -> broker_pb2.BrokerDescribeResponse:
        """The broker's topology, policy kind, applied_events and policy_digest."""
        return self.stub.Describe(broker_pb2.BrokerDescribeRequest(), timeout=timeout or self.timeout)

    def feedback(self, decision_id: str, entity_id: str, event: str | int = "click", *, value: float = 0.0,
                 event_id: str = "", timeout: float | None = None) -> broker_pb2.FeedbackResponse:
        kind = EventType[event.upper()] if isinstance(event, str) else EventType(event)
        request = broker_pb2.FeedbackRequest(decision_id=decision_id, entity_id=entity_id, type=int(kind),
                                             value=value, event_id=event_id)
        return self.stub.Feedback(request, timeout=timeout or self.timeout)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> BrokerClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncBrokerClient:
    """The broker client for asyncio code (grpc.aio)."""

    def __init__(self, address: str, *, timeout: float = DEFAULT_TIMEOUT_S,
                 security: SecurityConfig = NO_SECURITY) -> None:
        self.timeout = timeout
        self.channel = open_aio_channel(address, security)
        self.stub = broker_pb2_grpc.BrokerStub(self.channel)

    async def search(self, text: str, *, k: int = 10, budget_ms: int = 100,
                     context: dict[str, str] | None = None, timeout: float | None = None
                     ) -> broker_pb2.SearchResponse:
        """timeout: the call's deadline in seconds (default: search_deadline_s)."""
        request = broker_pb2.SearchRequest(query=convert.query_to_proto(text, context=context), k=k,
                                           budget_ms=budget_ms)
        return await self.stub.Search(request, timeout=timeout or search_deadline_s(budget_ms, self.timeout))

    async def feedback(self, decision_id: str, entity_id: str, event: str = "click", *, value: float = 0.0
                       ) -> broker_pb2.FeedbackResponse:
        request = broker_pb2.FeedbackRequest(decision_id=decision_id, entity_id=entity_id,
                                             type=int(EventType[event.upper()]), value=value)
        return await self.stub.Feedback(request, timeout=self.timeout)

    async def close(self) -> None:
        await self.channel.close(grace=None)

    async def __aenter__(self) -> AsyncBrokerClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()
