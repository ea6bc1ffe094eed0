"""Python clients for ltrr's gRPC services (sync; the broker's asyncio client comes with the broker)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from core.query import Filter
from core.strategy import FeedbackEvent
from ltrr.v1 import shard_pb2, shard_pb2_grpc
from services import convert

DEFAULT_TIMEOUT_S = 10.0


class ShardClient:
    """A blocking client of one shard. Use as a context manager, or call close()."""

    def __init__(self, address: str, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.address = address
        self.timeout = timeout
        self.channel = grpc.insecure_channel(address)
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
