"""Overload probe: a small open-loop check of the broker's deadlines and admission control.

    python -m benchmarks.overload --rates 40,80,160 [--seconds S] [--budget-ms B] [--index DIR]
        [--set KEY=VALUE ...] [--shard-flag=--max-queue=4 ...] [--json FILE]

It starts the demo cluster (shards and broker as processes, `ltrr up`'s layout) over a prebuilt
index, warms it for two seconds, then for each rate sends searches on a Poisson schedule for S
seconds, each with a client deadline of 2 s, and measures every latency from its scheduled send
time (no coordinated omission). Per rate: achieved goodput (OK answers per second), OK answers'
p50/p99/max, RESOURCE_EXHAUSTED count and its p99 (how fast a shed search is told), other errors,
hangs (client deadline hit), the p99 of an OK search's time outside the broker's handler (queues
before it, network, the client) and of this client's own event-loop lag (when it is large, the
client and not the cluster sets the figures). The full open-loop benchmark with floors and plots is
benchmarks/load.py; this one only checks what services/admission.py promises.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.broker import sample_queries
from benchmarks.common import print_table, run_info, write_json

CLIENT_DEADLINE_S = 2.0
WARMUP_S = 2.0


def _pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 1) if values else float("nan")


async def open_loop(address: str, queries: list[str], rate: float, seconds: float, budget_ms: int,
                    seed: int) -> dict[str, Any]:
    """Searches at Poisson arrivals of `rate`/s for `seconds`; latency from each scheduled send time."""
    import grpc

    from services.client import AsyncBrokerClient

    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1 / rate, size=int(rate * seconds * 1.5) + 10)
    offsets = np.cumsum(gaps)
    offsets = offsets[offsets < seconds]
    ok: list[float] = []
    outside: list[float] = []  # an OK search's latency less the broker handler's own took_ms
    client_lag: list[float] = []  # how late this client's loop ran its callbacks (its own queueing)
    shed: list[float] = []
    codes: Counter[str] = Counter()
    degraded = 0

    async with AsyncBrokerClient(address, timeout=CLIENT_DEADLINE_S) as client:

        async def one(i: int, scheduled: float) -> None:
            nonlocal degraded
            try:
                response = await client.search(queries[i % len(queries)], k=10, budget_ms=budget_ms,
                                                timeout=CLIENT_DEADLINE_S)
            except grpc.aio.AioRpcError as err:
                codes[err.code().name] += 1
                if err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    shed.append((time.perf_counter() - scheduled) * 1000)
                return
            ok.append((time.perf_counter() - scheduled) * 1000)
            outside.append(ok[-1] - response.took_ms)
            degraded += response.degraded
            codes["OK"] += 1

        async def probe() -> None:
            while True:
                due = time.perf_counter() + 0.005
                await asyncio.sleep(0.005)
                client_lag.append((time.perf_counter() - due) * 1000)

        lag_task = asyncio.create_task(probe())
        start = time.perf_counter() + 0.05
        tasks = []
        for i, offset in enumerate(offsets.tolist()):
            scheduled = start + offset
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, scheduled)))
        await asyncio.gather(*tasks)
        lag_task.cancel()
    within = sum(lat <= budget_ms + 10 for lat in ok)
    return {"offered": rate, "sent": len(offsets), "goodput": round(len(ok) / seconds, 1),
            "in_budget_per_s": round(within / seconds, 1), "ok_p50_ms": _pct(ok, 50), "ok_p99_ms": _pct(ok, 99),
            "ok_max_ms": round(max(ok), 1) if ok else float("nan"), "shed": codes["RESOURCE_EXHAUSTED"],
            "shed_p99_ms": _pct(shed, 99), "hangs": codes["DEADLINE_EXCEEDED"],
            "other_errors": sum(n for c, n in codes.items() if c not in ("OK", "RESOURCE_EXHAUSTED",
                                                                           "DEADLINE_EXCEEDED")),
            "degraded": degraded, "outside_handler_p99_ms": _pct(outside, 99),
            "client_lag_p99_ms": _pct(client_lag, 99)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from services.cluster import Cluster, ClusterConfig

    queries = sample_queries(4000, seed=1)
    with tempfile.TemporaryDirectory(prefix="ltrr-overload-") as tmp:
        settings = dict(pair.split("=", 1) for pair in args.set)
        config = ClusterConfig(index=str(args.index), state=tmp, run={"memory": {"state_dir": f"{tmp}/m"}},
                               broker=settings)
        cluster = Cluster(config)
        cluster.start(broker_port=0, shard_flags=[f for flag in args.shard_flag for f in flag.split("=", 1)])
        try:
            assert cluster.broker is not None
            address = cluster.broker.address
            asyncio.run(open_loop(address, queries, 20, WARMUP_S, args.budget_ms, seed=99))
            return {str(rate): asyncio.run(open_loop(address, queries, rate, args.seconds, args.budget_ms, seed=i))
                    for i, rate in enumerate(args.rates)}
        finally:
            cluster.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=lambda s: [float(r) for r in s.split(",")], default=[40.0, 80.0, 160.0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--budget-ms", type=int, default=100)
    parser.add_argument("--index", type=Path, default=Path("indexes/demo"), help="prebuilt demo index")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="broker --set")
    parser.add_argument("--shard-flag", action="append", default=[], metavar="--FLAG=VALUE",
                        help="an `ltrr shard` flag for every shard, e.g. --shard-flag=--max-queue=4")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    result = run(args)
    rows = [[r["offered"], r["sent"], r["goodput"], r["in_budget_per_s"], r["ok_p50_ms"], r["ok_p99_ms"],
             r["ok_max_ms"], r["shed"], r["shed_p99_ms"], r["hangs"], r["other_errors"], r["degraded"],
             r["outside_handler_p99_ms"], r["client_lag_p99_ms"]]
            for r in result.values()]
    print_table(rows, ["offered/s", "sent", "ok/s", "in budget+10/s", "ok p50", "ok p99", "ok max", "shed",
                       "shed p99", "hangs", "other err", "degraded", "outside p99", "client lag p99"])
    write_json(args.json, {"rates": result, "run": {**run_info(threads=1), "budget_ms": args.budget_ms,
                                                    "set": args.set, "shard_flags": args.shard_flag,
                                                    "cpu_count": os.cpu_count()}})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
