"""The transport's own floor for benchmarks.load: a bare gRPC echo fan-out, no ltrr logic.

    with EchoFanout(shards=4) as address: ...   # a Broker at `address`

N echo shards (ltrr.v1.Shard: Retrieve answers an empty RetrieveResponse at once) and one echo
broker (ltrr.v1.Broker: Search sends the request's query to every echo shard in parallel under
its budget and answers an empty SearchResponse; Feedback answers at once), each a grpc.aio server
on uvloop in a process of its own, as the real cluster's are: what remains of a search's cost is
processes, loopback, HTTP/2, protobuf and the event loops. Processes are spawned (never forked
after gRPC started), report their port through a pipe, and stop on SIGTERM.
"""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import signal
from collections.abc import Sequence
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from types import TracebackType

import grpc

from ltrr.v1 import broker_pb2, broker_pb2_grpc, shard_pb2, shard_pb2_grpc

HOST = "127.0.0.1"
START_TIMEOUT_S = 30.0
DEFAULT_QUOTA = 50


class EchoShard(shard_pb2_grpc.ShardServicer):
    def __init__(self, name: str) -> None:
        self.name = name

    async def Retrieve(self, request: shard_pb2.RetrieveRequest, context: grpc.aio.ServicerContext
                       ) -> shard_pb2.RetrieveResponse:
        return shard_pb2.RetrieveResponse(strategy=self.name)


class EchoBroker(broker_pb2_grpc.BrokerServicer):
    def __init__(self, shards: Sequence[str]) -> None:
        self.channels = [grpc.aio.insecure_channel(a) for a in shards]
        self.stubs = [shard_pb2_grpc.ShardStub(ch) for ch in self.channels]
        self.ids = itertools.count()

    async def Search(self, request: broker_pb2.SearchRequest, context: grpc.aio.ServicerContext
                     ) -> broker_pb2.SearchResponse:
        timeout = (request.budget_ms or 100) / 1000
        calls = [stub.Retrieve(shard_pb2.RetrieveRequest(query=request.query, quota=DEFAULT_QUOTA), timeout=timeout)
                 for stub in self.stubs]
        answers = await asyncio.gather(*calls, return_exceptions=True)
        return broker_pb2.SearchResponse(decision_id=f"echo-{next(self.ids)}",
                                         degraded=any(isinstance(a, BaseException) for a in answers))

    async def Feedback(self, request: broker_pb2.FeedbackRequest, context: grpc.aio.ServicerContext
                       ) -> broker_pb2.FeedbackResponse:
        return broker_pb2.FeedbackResponse()


async def _serve(role: str, shards: Sequence[str], report: Connection) -> None:
    server = grpc.aio.server()
    broker = None
    if role == "broker":
        broker = EchoBroker(shards)
        broker_pb2_grpc.add_BrokerServicer_to_server(broker, server)
    else:
        shard_pb2_grpc.add_ShardServicer_to_server(EchoShard(role), server)
    port = server.add_insecure_port(f"{HOST}:0")
    await server.start()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    report.send(f"{HOST}:{port}")
    report.close()
    await stop.wait()
    await server.stop(0.5)
    if broker is not None:
        for channel in broker.channels:
            await channel.close(grace=None)


def _main(role: str, shards: Sequence[str], report: Connection) -> None:
    import uvloop

    uvloop.run(_serve(role, shards, report))


class EchoFanout:
    """The echo broker and its `shards` echo shards, each in its own process, for the duration of
    the block; entering returns the broker's address."""

    def __init__(self, shards: int = 4) -> None:
        if shards < 1:
            raise ValueError(f"`shards` must be >= 1, but got {shards}")
        self.n = shards
        self.processes: list[BaseProcess] = []
        self.context = multiprocessing.get_context("spawn")

    def _start(self, role: str, shards: Sequence[str] = ()) -> str:
        receive, send = self.context.Pipe(duplex=False)
        process = self.context.Process(target=_main, args=(role, list(shards), send), daemon=True,
                                       name=f"echo-{role}")
        process.start()
        self.processes.append(process)
        send.close()
        try:
            if receive.poll(START_TIMEOUT_S):
                return str(receive.recv())
        except EOFError:  # the process died before it reported
            pass
        raise RuntimeError(f"echo {role} did not start within {START_TIMEOUT_S:.0f}s (exit code {process.exitcode})")

    def start(self) -> str:
        try:
            shards = [self._start(f"echo{i}") for i in range(self.n)]
            return self._start("broker", shards)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM to the broker, then the shards; SIGKILL to any still running after 5 s."""
        for process in reversed(self.processes):
            if process.is_alive():
                process.terminate()
        for process in reversed(self.processes):
            process.join(5.0)
            if process.is_alive():
                process.kill()
                process.join()
        self.processes.clear()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
