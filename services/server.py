"""The life of every ltrr server process (shards and broker), in one place.

bind and start at once with health NOT_SERVING -> `load()` (index, warm-up, connections) ->
health SERVING -> wait for SIGTERM or SIGINT -> health NOT_SERVING, in-flight requests get a grace
period -> `close()`. A core error while loading exits with code 2 (its message names the problem,
e.g. the damaged file); any other failure exits with 1.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from core.errors import LtrrError

log = logging.getLogger("ltrr.server")
GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class Hosted:
    """service_name: full gRPC name (health and reflection); register: adds the servicer;
    load and close: the service's start-up and shut-down work."""

    service_name: str
    register: Callable[[grpc.aio.Server], None]
    load: Callable[[], Awaitable[None]]
    close: Callable[[], Awaitable[None]]


async def run(hosted: Hosted, host: str, port: int, *, label: str,
              on_listening: Callable[[str], None] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; returns the process exit code."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 1)])
    hosted.register(server)
    health_service = health.aio.HealthServicer()  # type: ignore[attr-defined]  # set up conditionally
    health_pb2_grpc.add_HealthServicer_to_server(health_service, server)
    reflection.enable_server_reflection((hosted.service_name, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    for name in ("", hosted.service_name):
        await health_service.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.start()
    address = f"{host}:{bound}"
    if on_listening:
        on_listening(address)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await hosted.load()
    except LtrrError as err:
        log.error("cannot serve: %s", err)
        await server.stop(0)
        return 2
    except Exception:
        log.exception("cannot serve: start-up failed")
        await server.stop(0)
        return 1
    for name in ("", hosted.service_name):
        await health_service.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("%s serving on %s", label, address)
    await stop.wait()
    log.info("stopping (grace %.0fs)", GRACE_SECONDS)
    await health_service.enter_graceful_shutdown()
    await server.stop(GRACE_SECONDS)
    await hosted.close()
    return 0
