"""Hedged requests against a replica's transient slowness (services.replicas; The Tail at Scale).

    python -m benchmarks.hedging [--calls 3000] [--rate 200] [--slow-fraction 0.03] [--slow-ms 60]

Two replica processes (grpc.aio on uvloop) answer Retrieve at once, except that each call is
slow (`--slow-ms`) with probability `--slow-fraction`, independently: the transient slowness of a
shared machine (GC, a compaction, a noisy neighbour). One client sends open-loop calls at `--rate`
per second through services.replicas.ReplicaSet, hedging on and off, and a bare stub to one
replica (the floor), interleaved in one run, and reports latency percentiles from each call's
scheduled send time, with the extra load hedging costs (hedged calls / calls). Warm-up calls (the
first `--warmup`, which also fill the latency window) are excluded.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import signal
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from benchmarks.common import print_table, run_info, write_json
from ltrr.v1 import common_pb2, shard_pb2, shard_pb2_grpc
from services.replicas import ReplicaConfig, ReplicaSet

HOST = "127.0.0.1"
PERCENTILES = (50, 95, 99, 99.9)


class JitterShard(shard_pb2_grpc.ShardServicer):
    def __init__(self, slow_fraction: float, slow_ms: float, seed: int) -> None:
        self.slow_fraction, self.slow_s, self.rng = slow_fraction, slow_ms / 1000, random.Random(seed)

    async def Retrieve(self, request: shard_pb2.RetrieveRequest, context: grpc.aio.ServicerContext
                       ) -> shard_pb2.RetrieveResponse:
        if self.rng.random() < self.slow_fraction:
            await asyncio.sleep(self.slow_s)
        return shard_pb2.RetrieveResponse(candidates=[common_pb2.Candidate(entity_id="x", score=1.0, rank=1)])


def _replica(conn: Connection, slow_fraction: float, slow_ms: float, seed: int) -> None:
    import uvloop

    async def main() -> None:
        server = grpc.aio.server()
        shard_pb2_grpc.add_ShardServicer_to_server(JitterShard(slow_fraction, slow_ms, seed), server)
        conn.send(server.add_insecure_port(f"{HOST}:0"))
        await server.start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await server.stop(grace=None)

    uvloop.run(main())


async def _open_loop(calls: int, rate: float, targets: list[Any]) -> list[list[float]]:
    """Call every target once per tick, in a rotating order, at `rate` ticks per second; latency
    (ms) of each call from its tick's scheduled time, per target."""
    out: list[list[float]] = [[] for _ in targets]
    request = shard_pb2.RetrieveRequest(query=common_pb2.Query(text="x"), quota=1)

    async def one(i: int, scheduled: float) -> None:
        await asyncio.sleep(max(scheduled - time.perf_counter(), 0.0))
        await targets[i](request)
        out[i].append((time.perf_counter() - scheduled) * 1000)

    start = time.perf_counter() + 0.05
    tasks = [asyncio.ensure_future(one(i, start + n / rate)) for n in range(calls) for i in range(len(targets))]
    await asyncio.gather(*tasks)
    return out


async def _measure(ports: list[int], args: argparse.Namespace) -> dict[str, Any]:
    addresses = [f"{HOST}:{p}" for p in ports]
    hedged = ReplicaSet("bench", 0, addresses, ReplicaConfig(), seed=1)
    plain = ReplicaSet("bench", 0, addresses, ReplicaConfig(hedging=False), seed=1)
    bare_channel = grpc.aio.insecure_channel(addresses[0])
    bare = shard_pb2_grpc.ShardStub(bare_channel)

    def through(rs: ReplicaSet) -> Any:
        async def call(request: shard_pb2.RetrieveRequest) -> Any:
            async def invoke(stub: shard_pb2_grpc.ShardStub, timeout: float) -> Any:
                return await stub.Retrieve(request, timeout=timeout)
            return await rs.call(invoke, time.perf_counter() + 2.0)
        return call

    async def floor(request: shard_pb2.RetrieveRequest) -> Any:
        return await bare.Retrieve(request, timeout=2.0)

    names = ["bare stub (one replica)", "replicas, no hedging", "replicas, hedging"]
    await _open_loop(args.warmup, args.rate, [floor, through(plain), through(hedged)])
    hedges_before = hedged.hedges
    latencies = await _open_loop(args.calls, args.rate, [floor, through(plain), through(hedged)])
    result = {name: {f"p{p}": float(np.percentile(lat, p)) for p in PERCENTILES} for name, lat
              in zip(names, latencies, strict=True)}
    result["replicas, hedging"]["extra load"] = (hedged.hedges - hedges_before) / args.calls
    for rs in (hedged, plain):
        await rs.close()
    await bare_channel.close(grace=None)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--rate", type=float, default=200.0, help="calls per second to each of the three targets")
    parser.add_argument("--slow-fraction", type=float, default=0.03)
    parser.add_argument("--slow-ms", type=float, default=60.0)
    parser.add_argument("--json", type=str, default=None, help="also write the result here")
    args = parser.parse_args()
    ctx = multiprocessing.get_context("spawn")
    procs, ports = [], []
    for seed in (1, 2):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_replica, args=(child, args.slow_fraction, args.slow_ms, seed), daemon=True)
        proc.start()
        procs.append(proc)
        ports.append(parent.recv())
    try:
        import uvloop

        result = uvloop.run(_measure(ports, args))
    finally:
        for proc in procs:
            proc.terminate()
            proc.join(5)
    info = run_info()
    print(f"{info}; {args.calls} calls per target at {args.rate:g}/s open loop; each replica call slow "
          f"({args.slow_ms:g} ms) with probability {args.slow_fraction:g}")
    rows = [[name, *(r[f"p{p}"] for p in PERCENTILES), r.get("extra load", "")] for name, r in result.items()]
    print_table(rows, ["target", *(f"p{p} ms" for p in PERCENTILES), "hedged/calls"])
    on, off = result["replicas, hedging"], result["replicas, no hedging"]
    print(f"p99 without / with hedging: {off['p99'] / on['p99']:.1f}x; p99.9: {off['p99.9'] / on['p99.9']:.1f}x")
    write_json(Path(args.json) if args.json else None, {"info": info, "args": vars(args), **result})


if __name__ == "__main__":
    main()
