"""Start ltrr server processes and wait until they serve: for tests, benchmarks and `ltrr demo`.

Each process runs `python -m services.cli ...` with --port 0; its log (stdout and stderr) goes to a
file, from which the bound address is read ("listening on HOST:PORT"). Readiness is the standard
health check reporting SERVING.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.security import NO_SECURITY, SecurityConfig, open_channel

DEFAULT_START_TIMEOUT_S = 120.0
_LISTENING = re.compile(r"listening on (\S+)")
_METRICS = re.compile(r"metrics on (\S+)")


@dataclass
class ServerProcess:
    """A running server: `address` (host:port), the Popen `process`, its `log` file, and where it
    serves Prometheus metrics (`metrics_address`, host:port; "" = it does not)."""

    process: subprocess.Popen[bytes]
    address: str
    log: Path
    metrics_address: str = ""

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, wait up to `timeout`, then SIGKILL; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL at once (crash simulation)."""
        self.process.kill()
        self.process.wait()


def wait_serving(address: str, process: subprocess.Popen[bytes] | None = None,
                 timeout: float = DEFAULT_START_TIMEOUT_S, security: SecurityConfig = NO_SECURITY) -> None:
    """Poll the health service at `address` until SERVING; RuntimeError if the process exits first.
    security: how to reach it (a server with TLS needs the CA; services.security)."""
    deadline = time.monotonic() + timeout
    with open_channel(address, security) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"server at {address} exited with code {process.returncode}")
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.05)
    raise TimeoutError(f"server at {address} not SERVING after {timeout:.0f}s")


def spawn(args: Sequence[str], *, timeout: float = DEFAULT_START_TIMEOUT_S, log_dir: str | None = None,
          env: Mapping[str, str] | None = None, security: SecurityConfig = NO_SECURITY) -> ServerProcess:
    """Start `python -m services.cli ARGS --port 0` and wait until it serves. security: how to
    reach it for the health check (the TLS flags among `args` are the server's own)."""
    log = Path(tempfile.mkstemp(prefix="ltrr-", suffix=".log", dir=log_dir)[1])
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "services.cli", *args], stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"})
    server = ServerProcess(process, "", log)
    deadline = time.monotonic() + timeout
    try:
        while not server.address:
            match = _LISTENING.search(server.log_text())
            if match:
                server.address = match.group(1)
            elif process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"`ltrr {' '.join(args)}` did not start:\n{server.log_text()[-4000:]}")
            else:
                time.sleep(0.02)
        wait_serving(server.address, process, max(deadline - time.monotonic(), 1.0), security)
        # printed before the gRPC port is bound (services.metrics.serve), so present by now
        metrics = _METRICS.search(server.log_text())
        server.metrics_address = metrics.group(1) if metrics else ""
    except (RuntimeError, TimeoutError) as err:
        server.stop(5)
        raise RuntimeError(f"{err}\n--- log ---\n{server.log_text()[-4000:]}") from None
    return server


def shard_args(name: str, index_dir: str | os.PathLike[str], options: Mapping[str, Any] | None = None,
               extra: Sequence[str] = ()) -> list[str]:
    args = ["shard", name, "--index", str(index_dir), "--port", "0"]
    for key, value in (options or {}).items():
        args += ["--option", f"{key}={value}"]
    return [*args, *extra]


@contextmanager
def start_shard(name: str, index_dir: str | os.PathLike[str], *, options: Mapping[str, Any] | None = None,
                extra: Sequence[str] = (), timeout: float = DEFAULT_START_TIMEOUT_S) -> Iterator[ServerProcess]:
    """A shard process serving `name` over `index_dir` for the duration of the block."""
    server = spawn(shard_args(name, index_dir, options, extra), timeout=timeout)
    try:
        yield server
    finally:
        server.stop()
