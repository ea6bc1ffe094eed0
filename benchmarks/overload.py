"""Overload probe: a small open-loop check of the broker's deadlines and admission control.

    python -m benchmarks.overload --rates 40,80,160 [--seconds S] [--budget-ms B] [--index DIR]
        [--set KEY=VALUE ...] [--shard-flag=--max-queue=4 ...] [--json FILE]

It starts the demo cluster (shards and broker as processes, `ltrr up`'s layout) over a prebuilt
index, warms it for two seconds, then for each rate sends searches on a Poisson schedule for S
seconds, each with a client deadline of 2 s, and measures every latency from its scheduled send
time (no coordinated omission). Per rate: achieved goodput (OK answers per second), OK answers'
p50/p99/max, RESOURCE_EXHAUSTED count and its p99 (how fast a shed search is told), other errors,
hangs (client deadline hit, or no answer at all), the p99 of an OK search's time outside the
broker's handler (queues before it, network, the client) and of the generator's own lag (when it
is large, the client and not the cluster sets the figures). The schedule and the generator are
benchmarks.load's (load_stats.arrival_offsets, load_gen.open_loop). The full open-loop benchmark
with floors and plots is benchmarks/load.py; this one only checks what services/admission.py
promises.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.broker import sample_queries
from benchmarks.common import print_table, run_info, write_json
from benchmarks.load_gen import open_loop
from benchmarks.load_stats import HANG, Arrivals, arrival_offsets

CLIENT_DEADLINE_S = 2.0
WARMUP_S = 2.0


def _pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 1) if values else float("nan")


async def probe(address: str, queries: list[str], rate: float, seconds: float, budget_ms: int,
                seed: int) -> dict[str, Any]:
    """Searches at Poisson arrivals of `rate`/s for `seconds` through benchmarks.load's open-loop
    generator (latency from each scheduled send time), plus what only this probe reports: the
    time an OK search spent outside the broker's handler and how fast a shed one was told."""
    import grpc

    from services.client import AsyncBrokerClient

    offsets = arrival_offsets(rate, seconds, Arrivals.POISSON, seed)
    took = np.full(len(offsets), np.nan)  # the broker handler's own took_ms, of OK answers
    async with AsyncBrokerClient(address, timeout=CLIENT_DEADLINE_S) as client:

        async def call(i: int, remaining_s: float) -> tuple[str, bool]:
            try:
                response = await client.search(queries[i % len(queries)], k=10, budget_ms=budget_ms,
                                                timeout=remaining_s)
            except grpc.aio.AioRpcError as err:
                return err.code().name, False
            took[i] = response.took_ms
            return "OK", response.degraded

        record = await open_loop(call, offsets, deadline_s=CLIENT_DEADLINE_S)
    codes = Counter(record.codes)
    is_ok = np.array([c == "OK" for c in record.codes], dtype=bool)
    ok = record.latency_ms[is_ok].tolist()
    shed = record.latency_ms[np.array([c == "RESOURCE_EXHAUSTED" for c in record.codes], dtype=bool)].tolist()
    outside = (record.latency_ms - took)[is_ok].tolist()  # an OK search's time outside the broker's handler
    within = sum(lat <= budget_ms + 10 for lat in ok)
    hangs = codes["DEADLINE_EXCEEDED"] + codes[HANG]
    return {"offered": rate, "sent": len(offsets), "goodput": round(len(ok) / seconds, 1),
            "in_budget_per_s": round(within / seconds, 1), "ok_p50_ms": _pct(ok, 50), "ok_p99_ms": _pct(ok, 99),
            "ok_max_ms": round(max(ok), 1) if ok else float("nan"), "shed": codes["RESOURCE_EXHAUSTED"],
            "shed_p99_ms": _pct(shed, 99), "hangs": hangs,
            "other_errors": len(record.codes) - len(ok) - codes["RESOURCE_EXHAUSTED"] - hangs,
            "degraded": int(record.degraded.sum()), "outside_handler_p99_ms": _pct(outside, 99),
            "client_lag_p99_ms": _pct(record.lag_ms.tolist(), 99)}


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
            asyncio.run(probe(address, queries, 20, WARMUP_S, args.budget_ms, seed=99))
            return {str(rate): asyncio.run(probe(address, queries, rate, args.seconds, args.budget_ms, seed=i))
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
