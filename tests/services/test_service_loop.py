"""services.server.ServiceLoop and OnServiceLoop: a service's calls run on a loop of its own while
the gRPC server's loop only takes calls, health checks answer on the server's loop, and a status,
the caller's deadline and a cancellation cross between the two."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
import uvloop
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from core.errors import NotFoundError
from services.server import Hosted, OnServiceLoop, RelayedContext, ServiceLoop, received_at, run, watch_service_loop

SERVICE = "ltrr.test.Relay"


def _identity(b: bytes) -> bytes:
    return b


class Recorder:
    """The test service: each method records where it ran and what its context said."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.started = threading.Event()
        self.cancelled = threading.Event()
        self.release = asyncio.Event()  # never set: Wait runs until cancelled

    async def where(self, request: bytes, context: Any) -> bytes:
        self.calls.append({"thread": threading.current_thread().name, "loop": asyncio.get_running_loop(),
                           "remaining": context.time_remaining(), "context": context,
                           "started": time.perf_counter()})
        return b"ran on " + threading.current_thread().name.encode()

    async def refuse(self, request: bytes, context: Any) -> bytes:
        try:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "overloaded: the test queue is full",
                                (("retry-after-ms", "50"),))
        finally:
            self.calls.append({"code": context.code()})
        raise AssertionError("unreachable: abort raises")

    async def wait(self, request: bytes, context: Any) -> bytes:
        self.started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return b"released"

    async def fail(self, request: bytes, context: Any) -> bytes:
        raise RuntimeError("a bug in the service")

    def handler(self) -> grpc.GenericRpcHandler:
        methods: dict[str, Callable[[bytes, Any], Coroutine[Any, Any, bytes]]] = {
            "Where": self.where, "Refuse": self.refuse, "Wait": self.wait, "Fail": self.fail}
        return grpc.method_handlers_generic_handler(SERVICE, {
            name: grpc.unary_unary_rpc_method_handler(fn, request_deserializer=_identity, response_serializer=_identity)
            for name, fn in methods.items()})


class Served:
    def __init__(self, service: ServiceLoop, recorder: Recorder, channel: grpc.aio.Channel,
                 health_service: Any) -> None:
        self.service, self.recorder, self.channel, self.health = service, recorder, channel, health_service

    def method(self, name: str) -> Any:
        return self.channel.unary_unary(f"/{SERVICE}/{name}", request_serializer=_identity,
                                        response_deserializer=_identity)

    async def failure(self, name: str) -> grpc.aio.AioRpcError:
        """The error status a call of `name` ends with (it must end with one)."""
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await self.method(name)(b"", timeout=30)
        return caught.value


LOOPS = pytest.mark.parametrize("new_loop", [asyncio.new_event_loop, uvloop.new_event_loop],
                                ids=["asyncio", "uvloop"])


@asynccontextmanager
async def serving(new_loop: Callable[[], asyncio.AbstractEventLoop]) -> AsyncIterator[Served]:
    """A grpc.aio server on the running loop relaying to a ServiceLoop made by `new_loop`."""
    service = ServiceLoop(new_loop)
    recorder = Recorder()
    server = grpc.aio.server(interceptors=[OnServiceLoop(service)])
    server.add_generic_rpc_handlers((recorder.handler(),))
    health_service = health.aio.HealthServicer()  # type: ignore[attr-defined]  # set up conditionally
    health_pb2_grpc.add_HealthServicer_to_server(health_service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Served(service, recorder, channel, health_service)
    finally:
        await channel.close(None)
        await server.stop(0)
        service.close()


def scenario(new_loop: Callable[[], asyncio.AbstractEventLoop], body: Callable[[Served], Awaitable[None]]) -> None:
    async def run() -> None:
        async with serving(new_loop) as served:
            await body(served)

    asyncio.run(run())


@LOOPS
def test_a_call_runs_on_the_service_loop_with_the_callers_deadline(new_loop: Any) -> None:
    async def body(served: Served) -> None:
        answer = await served.method("Where")(b"", timeout=30)
        assert served.service.calls == 0  # answered: no longer held
        (call,) = served.recorder.calls
        assert answer == b"ran on ltrr-service-loop" and call["thread"] == "ltrr-service-loop"
        assert call["loop"] is served.service.loop and call["loop"] is not asyncio.get_running_loop()
        assert isinstance(call["context"], RelayedContext)
        assert 25 < call["remaining"] < 31  # the caller's 30 s deadline (sent rounded up), read from its context

    scenario(new_loop, body)


@LOOPS
def test_an_abort_on_the_service_loop_reaches_the_caller_with_its_status(new_loop: Any) -> None:
    async def body(served: Served) -> None:
        error = await served.failure("Refuse")
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error.details() == "overloaded: the test queue is full"
        assert ("retry-after-ms", "50") in tuple(error.trailing_metadata() or ())
        assert served.recorder.calls == [{"code": grpc.StatusCode.RESOURCE_EXHAUSTED}]  # what metrics read

    scenario(new_loop, body)


@LOOPS
def test_an_error_on_the_service_loop_is_an_error_status_not_a_hang(new_loop: Any) -> None:
    async def body(served: Served) -> None:
        assert (await served.failure("Fail")).code() == grpc.StatusCode.UNKNOWN

    scenario(new_loop, body)


@LOOPS
def test_health_checks_answer_while_the_service_loop_is_busy(new_loop: Any) -> None:
    """A service loop stuck in one long step does not stop health checks (they stay on the
    server's loop), while a service call waits for it."""

    async def body(served: Served) -> None:
        await served.health.set("", health_pb2.HealthCheckResponse.SERVING)
        busy = threading.Event()
        served.service.loop.call_soon_threadsafe(busy.wait)  # blocks the service loop until set
        try:
            stub = health_pb2_grpc.HealthStub(served.channel)
            answer = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=30)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
            pending = asyncio.ensure_future(served.method("Where")(b"", timeout=30))
            await asyncio.sleep(0.2)
            assert not pending.done() and served.recorder.calls == []
        finally:
            busy.set()
        assert await pending == b"ran on ltrr-service-loop"

    scenario(new_loop, body)


@LOOPS
def test_a_relayed_call_was_received_before_it_waited_for_the_service_loop(new_loop: Any) -> None:
    """received_at gives the time the server's loop took the call, so a search's budget counts the
    time it waited for a busy service loop (services.broker)."""

    async def body(served: Served) -> None:
        busy = threading.Event()
        served.service.loop.call_soon_threadsafe(busy.wait)  # blocks the service loop until set
        pending = asyncio.ensure_future(served.method("Where")(b"", timeout=30))
        await asyncio.sleep(0.3)
        busy.set()
        await pending
        (call,) = served.recorder.calls
        assert call["started"] - received_at(call["context"]) >= 0.2

    scenario(new_loop, body)


def test_received_at_is_now_for_a_context_that_was_not_relayed() -> None:
    before = time.perf_counter()
    assert before <= received_at(object()) <= time.perf_counter()


@LOOPS
def test_a_caller_that_cancels_cancels_the_work_on_the_service_loop(new_loop: Any) -> None:
    async def body(served: Served) -> None:
        loop = asyncio.get_running_loop()
        waiting = asyncio.ensure_future(served.method("Wait")(b"", timeout=30))
        assert await loop.run_in_executor(None, served.recorder.started.wait, 30)
        assert served.service.calls == 1  # held: what a freeze must wait for
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert await loop.run_in_executor(None, served.recorder.cancelled.wait, 30)
        for _ in range(600):  # the server's side of the cancelled call ends after the client's
            if served.service.calls == 0:
                break
            await asyncio.sleep(0.05)
        assert served.service.calls == 0

    scenario(new_loop, body)


async def _status(served: Served) -> int:
    stub = health_pb2_grpc.HealthStub(served.channel)
    return (await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=30)).status


async def _until(served: Served, status: int) -> None:
    """Poll health until it reports `status` (the watchdog's steps take ~0.2 s; 30 s is a hang)."""
    for _ in range(600):
        if await _status(served) == status:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"health never reported {status}")


def test_health_reports_not_serving_while_the_service_loop_is_stuck_and_serving_once_it_runs() -> None:
    async def run_it() -> None:
        async with serving(asyncio.new_event_loop) as served:
            await served.health.set("", health_pb2.HealthCheckResponse.SERVING)
            watchdog = asyncio.create_task(
                watch_service_loop(served.service, served.health, [""], every_s=0.05, timeout_s=0.2))
            try:
                stuck = threading.Event()
                served.service.loop.call_soon_threadsafe(stuck.wait)  # one step that does not end
                try:
                    await _until(served, health_pb2.HealthCheckResponse.NOT_SERVING)
                finally:
                    stuck.set()
                await _until(served, health_pb2.HealthCheckResponse.SERVING)
            finally:
                watchdog.cancel()

    asyncio.run(run_it())


@pytest.mark.parametrize(("error", "code"), [(NotFoundError("no index at /nowhere"), 2),
                                             (RuntimeError("a bug"), 1)])
def test_a_load_that_fails_on_the_service_loop_ends_run_with_its_exit_code(error: Exception, code: int) -> None:
    loaded_on: list[str] = []

    async def load() -> None:
        loaded_on.append(threading.current_thread().name)
        raise error

    async def close() -> None:
        raise AssertionError("close is for a service that loaded")

    hosted = Hosted(SERVICE, lambda server: server.add_generic_rpc_handlers((Recorder().handler(),)), load, close)
    service = ServiceLoop()
    interval = sys.getswitchinterval()
    try:
        assert asyncio.run(run(hosted, "127.0.0.1", 0, label="test", service_loop=service)) == code
    finally:
        sys.setswitchinterval(interval)  # run() sets the serving one for the process
        service.close()
    assert loaded_on == ["ltrr-service-loop"]


def test_closing_a_service_loop_cancels_what_runs_on_it() -> None:
    service = ServiceLoop()
    cleaned = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            cleaned.set()

    started = asyncio.run_coroutine_threadsafe(asyncio.sleep(0), service.loop)
    started.result(30)  # the loop runs
    asyncio.run_coroutine_threadsafe(forever(), service.loop)
    service.close()
    assert cleaned.is_set() and service.loop.is_closed() and not service.thread.is_alive()


def test_closing_a_service_loop_stops_its_thread_and_twice_is_harmless() -> None:
    service = ServiceLoop()
    asyncio.run_coroutine_threadsafe(asyncio.sleep(0), service.loop).result(30)  # it runs
    assert service.thread.is_alive() and service.loop.is_running()
    service.close()
    assert not service.thread.is_alive() and service.loop.is_closed()
    service.close()
