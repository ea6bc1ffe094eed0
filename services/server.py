"""The life of every ltrr server process (shards and broker), in one place.

bind and start at once with health NOT_SERVING -> `load()` (index, warm-up, connections) ->
what was loaded frozen out of the garbage collector (freeze_loaded) -> health SERVING -> wait for
SIGTERM or SIGINT -> health NOT_SERVING, in-flight requests get a grace
period -> `close()`. A core error while loading exits with code 2 (its message names the problem,
e.g. the damaged file); any other failure exits with 1.

Security (services.security): TLS on the port and the token check on write RPCs when configured.
A TLS server can also answer health checks in plaintext on a separate `health_port`, which serves
the standard health service and nothing else: Kubernetes' gRPC probes cannot speak TLS.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import logging
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from core.errors import LtrrError
from services.security import NO_SECURITY, SecurityConfig, add_port, server_interceptors

log = logging.getLogger("ltrr.server")
GRACE_SECONDS = 5.0
T = TypeVar("T")


@dataclass(frozen=True)
class Hosted:
    """service_name: full gRPC name (health and reflection); register: adds the servicer;
    load and close: the service's start-up and shut-down work."""

    service_name: str
    register: Callable[[grpc.aio.Server], None]
    load: Callable[[], Coroutine[Any, Any, None]]
    close: Callable[[], Coroutine[Any, Any, None]]


async def _health_server(health_service: Any, host: str, port: int) -> grpc.aio.Server:
    """A plaintext server of the health service alone on `port` (for probes that cannot do TLS)."""
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health_service, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    log.info("health checks in plaintext on %s:%d", host, bound)
    return server


class ServiceLoop:
    """An event loop on a thread of its own, where a hosted service lives while the gRPC server
    accepts calls on the main loop (run(..., service_loop=it); OnServiceLoop relays the calls).

    Why: grpc.aio's server takes one new call per turn of the loop it runs on (NOTES.md, session
    17), and a broker's loop turn runs the callbacks of every search in flight (a few ms under
    load). Offered more than it can serve, the calls it has not yet taken wait inside gRPC core,
    where no admission rule sees them, for as long as their deadlines allow: offered 480/s, the
    broker answered 84-88 a second and most searches hit their 2 s deadline. With the server on a loop
    that does nothing else, every call is taken within a short turn and reaches the service's
    admission (services.admission), which answers what it cannot serve with RESOURCE_EXHAUSTED.
    `new_loop`: the loop factory (uvloop's where the process runs on uvloop)."""

    def __init__(self, new_loop: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop) -> None:
        self.loop = new_loop()
        self.calls = 0  # calls OnServiceLoop took whose handlers have not returned (counted on the server's loop)
        self.thread = threading.Thread(target=self.loop.run_forever, name="ltrr-service-loop", daemon=True)
        self.thread.start()

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await `coro` run on the service loop (cancelling this cancels it there). One hop each
        way (call_soon_threadsafe), where run_coroutine_threadsafe + wrap_future chain a
        concurrent.futures.Future between two asyncio ones: 61 against 85 us of CPU a round trip."""
        here = asyncio.get_running_loop()
        outer: asyncio.Future[T] = here.create_future()
        task: list[asyncio.Task[T]] = []  # made on the service loop

        def finished(done: asyncio.Task[T]) -> None:  # on the service loop
            here.call_soon_threadsafe(_settle, outer, done)

        def start() -> None:  # on the service loop
            task.append(self.loop.create_task(coro))
            task[0].add_done_callback(finished)

        try:
            self.loop.call_soon_threadsafe(start)
        except RuntimeError:  # the service loop is closed
            coro.close()
            raise
        try:
            return await outer
        except asyncio.CancelledError:
            with contextlib.suppress(RuntimeError):  # RuntimeError: the loop is closed, nothing runs there
                self.loop.call_soon_threadsafe(lambda: task and task[0].cancel())  # after start: one queue
            raise

    def close(self, timeout_s: float = GRACE_SECONDS) -> None:
        """Cancel what still runs on the loop (its tasks' `finally` blocks run), shut down its
        async generators and default executor, stop it and wait for its thread, each step at
        most `timeout_s` (a loop stuck in one long step is left to the process's exit)."""
        if self.loop.is_closed():
            return
        if self.thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(_wind_down(), self.loop).result(timeout_s)
            except concurrent.futures.TimeoutError:
                log.warning("the service loop did not wind down within %.0f s", timeout_s)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout_s)
        if not self.thread.is_alive():
            self.loop.close()


def _settle(outer: asyncio.Future[T], done: asyncio.Task[T]) -> None:
    """On the caller's loop: `outer` takes the outcome of the service loop's task `done`."""
    if outer.done():  # the caller cancelled it
        return
    if done.cancelled():
        outer.cancel()
    elif (error := done.exception()) is not None:
        outer.set_exception(error)
    else:
        outer.set_result(done.result())


async def _wind_down() -> None:
    """On the loop closing: cancel every other task and wait for them, then close the loop's async
    generators and its default executor (asyncio.run's own clean-up)."""
    loop = asyncio.get_running_loop()
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await loop.shutdown_asyncgens()
    await loop.shutdown_default_executor()


# The server's loop asks the service loop to run one step this often; while none runs within
# SERVICE_TIMEOUT_S (a step that never ends, or its thread gone) health reports NOT_SERVING.
SERVICE_CHECK_S = 1.0
SERVICE_TIMEOUT_S = 5.0


async def watch_service_loop(service: ServiceLoop, health_service: Any, names: Sequence[str], *,
                             every_s: float = SERVICE_CHECK_S, timeout_s: float = SERVICE_TIMEOUT_S) -> None:
    """Until cancelled, on the server's loop: the standard health service's `names` are SERVING
    while the service loop runs a step within `timeout_s` of being asked (every `every_s`), and
    NOT_SERVING while it does not. Health checks answer on the server's loop (OnServiceLoop), so
    without this a broker stuck in one long step, or whose loop thread died, would still look
    healthy to its probes while every search waited for its deadline."""
    serving = True
    while True:
        try:
            await asyncio.wait_for(service.run(asyncio.sleep(0)), timeout_s)  # one step of the loop
            alive = True
        except (TimeoutError, RuntimeError):  # RuntimeError: the loop is closed
            alive = False
        if alive != serving:
            serving = alive
            status = health_pb2.HealthCheckResponse.SERVING if alive else health_pb2.HealthCheckResponse.NOT_SERVING
            for name in names:
                await health_service.set(name, status)
            if alive:
                log.info("the service loop runs again: SERVING")
            else:
                log.error("the service loop ran no step within %.1f s: NOT_SERVING", timeout_s)
        await asyncio.sleep(every_s)


class _Aborted(Exception):
    """context.abort() called on the service loop: the server's loop aborts the call with these."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing_metadata: Sequence[Any]) -> None:
        super().__init__(code, details)
        self.code, self.details, self.trailing_metadata = code, details, tuple(trailing_metadata)


class RelayedContext:
    """The part of grpc.aio.ServicerContext the broker's handlers use (services.shard.rpc,
    services.metrics, the deadline), for a handler running on the service loop: time_remaining
    reads the call's context (what gRPC core set), abort records its code (code(), as grpc.aio's
    does) and raises _Aborted for OnServiceLoop to send from the server's loop. received: when the
    server's loop took the call (time.perf_counter()), before it waited for the service loop."""

    def __init__(self, context: grpc.aio.ServicerContext) -> None:
        self._context = context
        self._code: grpc.StatusCode | None = None
        self.received = time.perf_counter()

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def time_remaining(self) -> float | None:
        return self._context.time_remaining()

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Sequence[Any] = ()) -> NoReturn:
        self._code = code
        raise _Aborted(code, details, trailing_metadata)


def received_at(context: Any) -> float:
    """When the call of `context` was taken (time.perf_counter()): a relayed call's time on the
    server's loop, so that its wait for a busy service loop counts against its budget; now for
    any other context."""
    return context.received if isinstance(context, RelayedContext) else time.perf_counter()


# Calls to these services stay on the server's loop: health checks answer even while the service
# loop is busy, and neither keeps state the service touches.
SERVER_LOOP_PREFIX = "/grpc."


class OnServiceLoop(grpc.aio.ServerInterceptor):
    """Runs every unary call's handler (but health and reflection: SERVER_LOOP_PREFIX) on the
    service loop; place it last among the interceptors, so that the others (the token check)
    run first on the server's loop."""

    def __init__(self, service: ServiceLoop) -> None:
        self.service = service

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails],
                                                             Awaitable[grpc.RpcMethodHandler]],
                                details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None or details.method.startswith(SERVER_LOOP_PREFIX):
            return handler
        behavior, service = handler.unary_unary, self.service

        async def relayed(request: Any, context: grpc.aio.ServicerContext) -> Any:
            service.calls += 1
            try:
                return await service.run(behavior(request, RelayedContext(context)))  # type: ignore[arg-type]  # the part services use
            except _Aborted as err:
                await context.abort(err.code, err.details, err.trailing_metadata)
            finally:
                service.calls -= 1

        return handler._replace(unary_unary=relayed)  # type: ignore[attr-defined]  # a namedtuple


async def _in(own: ServiceLoop | None, coro: Coroutine[Any, Any, T]) -> T:
    """Await `coro` on the service loop `own`, or here when there is none."""
    return await (coro if own is None else own.run(coro))


# A dict at least this large that the collector has untracked is made tracked before a freeze
# (pin_large_dicts).
PIN_MIN_ITEMS = 10_000


def freeze_loaded(*, pin_dicts: bool = False) -> None:
    """Move everything loaded so far (an index's Python structures: 150k-320k objects) out of the
    garbage collector's reach: a full collection over them took 94 ms (lexical), 127 ms (memory)
    and 319 ms (attribute) on the demo catalog, and a live catalog's writes allocate enough to
    trigger such collections in the middle of searches. What is allocated later is collected as
    usual (CPython's gc.freeze, as Instagram's servers do). pin_dicts: pin_large_dicts first (call
    it so only where no other thread writes to the loaded structures meanwhile)."""
    gc.collect()
    if pin_dicts:
        pinned = pin_large_dicts()
        log.info("%d large dicts kept in the frozen generation", pinned)
    gc.freeze()


class Refreezer:
    """Keeps what a process builds while it serves out of the collector's reach, as freeze_loaded
    does for what it loaded: count events (writes applied, searches served) with note(); once
    `every` have happened, freeze_if_idle() collects fully and freezes (freeze_loaded), when
    `idle()` (default: always). Each such collection walks only what was built since the last
    freeze, so every collection stays short, where the objects a long-lived process accumulates
    made each full one longer (NOTES.md, session 14: 31.9-49.7 ms in a live attribute shard, up to
    105 ms in the broker). A frozen object is still freed when its last reference goes, but a cycle
    that becomes garbage after its objects were frozen is never collected: `idle` lets a server
    freeze only when none of its rpcs is in flight, so no half-done request's objects get frozen
    (the broker after 85 s at 100 searches/s: no frozen object was garbage). A process that is
    never idle never freezes again (its collections grow as they did without)."""

    def __init__(self, every: int, idle: Callable[[], bool] | None = None) -> None:
        if every < 1:
            raise ValueError(f"`every` must be >= 1, but got {every}")
        self.every, self.idle = every, idle
        self.pending = 0  # events since the last freeze
        self.freezes = 0

    def note(self, n: int = 1) -> bool:
        """Count `n` events; True when a freeze is due (call freeze_if_idle)."""
        self.pending += n
        return self.pending >= self.every

    def freeze_if_idle(self) -> bool:
        """Freeze if one is due and the process is idle; True when it froze."""
        if self.pending < self.every or (self.idle is not None and not self.idle()):
            return False
        freeze_loaded()
        self.pending = 0
        self.freezes += 1
        return True


def pin_large_dicts(min_items: int = PIN_MIN_ITEMS) -> int:
    """Make the large dicts the collector has untracked tracked again, so that a freeze keeps them;
    returns how many. CPython untracks a dict whose keys and values are all untracked (strings,
    numbers, tuples of them) in a full collection, so the freeze after one leaves it out, and a
    later insert of a new tuple (tracked when made) tracks it again in the youngest generation:
    the collections of each generation it then moves through walk it, and so does every full one,
    until a full one untracks it again. A live attribute
    shard's vocabulary holds such dicts (572k misspelling variants, 50k values by name), so each
    batch cost a young collection up to 18 ms and a full one 42 ms over 1,000 writes; pinned, 0.8
    and 3.6 ms (NOTES.md, session 13). Each dict of `min_items` or more reachable from a tracked
    object gets its first key, or value, stored again as an equal new tuple: the same contents, so
    a reader on another thread sees no change; the caller makes sure no thread writes meanwhile."""
    pinned = 0
    seen: set[int] = set()
    for holder in gc.get_objects():
        for d in gc.get_referents(holder):
            if type(d) is not dict or len(d) < min_items or id(d) in seen or gc.is_tracked(d):
                continue
            seen.add(id(d))
            key, value = next(iter(d.items()))
            if type(key) is tuple:
                d[tuple(list(key))] = value  # an equal key: the dict keeps the key object it has
            elif type(value) is tuple:
                d[key] = tuple(list(value))
            pinned += gc.is_tracked(d)
    return pinned


# How long a thread holding the GIL runs on before another that wants it gets it (CPython's
# default is 5 ms). A serving process has background threads doing pure-Python work (a live
# shard's batches and merges, the broker's live table): at 5 ms a search waits up to that long
# for the GIL at every step. Measured on the demo cluster (`ltrr up`, 30 searches/s) under 100
# writes/s and then a lexical merge (NOTES.md, session 12): search p99 during the merge 36.7 and
# 37.1 ms at 0.5 ms against 45.2 ms at 5 ms (the lexical shard's own p99 16.6-19.7 against 29.9
# ms); during the writes alone 32.6 and 33.1 against 30.7 ms (within noise).
SWITCH_INTERVAL_S = 0.0005


async def run(hosted: Hosted, host: str, port: int, *, label: str,
              on_listening: Callable[[str], None] | None = None,
              security: SecurityConfig = NO_SECURITY, health_port: int = 0,
              service_loop: ServiceLoop | None = None) -> int:
    """Serve until SIGTERM/SIGINT; returns the process exit code. security: TLS and the write
    token (services.security); health_port: also serve health checks in plaintext there (0 = no);
    service_loop: the loop the service was built on, where its load, calls and close then run,
    while this loop only serves gRPC (the broker's choice; the caller closes it)."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    relay = [OnServiceLoop(service_loop)] if service_loop is not None else []
    interceptors = [*server_interceptors(security), *relay]
    server = grpc.aio.server(options=[("grpc.so_reuseport", 1)], interceptors=interceptors)
    hosted.register(server)
    health_service = health.aio.HealthServicer()  # type: ignore[attr-defined]  # set up conditionally
    health_pb2_grpc.add_HealthServicer_to_server(health_service, server)
    reflection.enable_server_reflection((hosted.service_name, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    bound = add_port(server, f"{host}:{port}", security)
    for name in ("", hosted.service_name):
        await health_service.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.start()
    servers = [server]
    if health_port:
        servers.append(await _health_server(health_service, host, health_port))
    address = f"{host}:{bound}"
    if on_listening:
        on_listening(address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await _in(service_loop, hosted.load())
    except LtrrError as err:
        log.error("cannot serve: %s", err)
        await asyncio.gather(*(s.stop(0) for s in servers))
        return 2
    except Exception:
        log.exception("cannot serve: start-up failed")
        await asyncio.gather(*(s.stop(0) for s in servers))
        return 1
    freeze_loaded()
    names = ("", hosted.service_name)
    for name in names:
        await health_service.set(name, health_pb2.HealthCheckResponse.SERVING)
    watchdog = (asyncio.create_task(watch_service_loop(service_loop, health_service, names))
                if service_loop is not None else None)
    log.info("%s serving on %s", label, address)
    await stop.wait()
    log.info("stopping (grace %.0fs)", GRACE_SECONDS)
    if watchdog is not None:
        watchdog.cancel()
    await health_service.enter_graceful_shutdown()
    await asyncio.gather(*(s.stop(GRACE_SECONDS) for s in servers))
    await _in(service_loop, hosted.close())
    return 0
