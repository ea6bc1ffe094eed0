"""Broker benchmark: end-to-end Search latency and throughput through the real cluster, next to the
same cluster with no-op shards (the floor: processes, gRPC hops, fan-out, merge, ranking), in one run.

    python -m benchmarks.broker [--json FILE] [--seconds S] [--concurrency C] [--encoder minilm|hashing]

Both clusters run on this machine over loopback with the same broker configuration (Thompson
sampling, budget 200 candidates, budget_ms 100). Load: C concurrent asyncio clients in a closed loop
for S seconds each, queries drawn with a fixed seed from the bundled catalog's titles, artists,
"artist title", genres and decades. The first second is warm-up and not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import print_table, run_info, write_json

WARMUP_S = 1.0


def sample_queries(n: int, seed: int = 0) -> list[str]:
    from core.catalog import demo_catalog_path, load_catalog

    entities = load_catalog(demo_catalog_path())
    rng = np.random.default_rng(seed)
    out = []
    for e in rng.choice(len(entities), size=n):
        ent = entities[int(e)]
        kind = int(rng.integers(5))
        genre = ent.attributes.get("genre", ("pop",))
        out.append([ent.fields["title"], ent.fields["artist"], f"{ent.fields['artist']} {ent.fields['title']}",
                    f"{genre[0] if isinstance(genre, tuple) else genre} songs",
                    f"{ent.attributes.get('decade', '2010s')} hits"][kind] or "love")
    return out


async def load(address: str, queries: list[str], seconds: float, concurrency: int) -> dict[str, float]:
    from services.client import AsyncBrokerClient

    latencies: list[float] = []
    failures = degraded = 0
    stop_at = time.perf_counter() + WARMUP_S + seconds
    count_from = time.perf_counter() + WARMUP_S

    async def worker(offset: int) -> None:
        nonlocal failures, degraded
        async with AsyncBrokerClient(address) as client:
            i = offset
            while (now := time.perf_counter()) < stop_at:
                try:
                    response = await client.search(queries[i % len(queries)], k=10, budget_ms=100)
                    if now >= count_from:
                        latencies.append((time.perf_counter() - now) * 1000)
                        degraded += response.degraded
                except Exception:
                    failures += 1
                i += concurrency

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    lat = np.array(latencies)
    return {"searches": len(lat), "qps": round(len(lat) / seconds, 1),
            "p50_ms": round(float(np.percentile(lat, 50)), 2), "p99_ms": round(float(np.percentile(lat, 99)), 2),
            "failures": failures, "degraded": degraded}


def measure(index: Path, state: Path, noop: bool, queries: list[str], args: argparse.Namespace) -> dict[str, float]:
    from services.cluster import Cluster, ClusterConfig

    config = ClusterConfig(index=str(index), state=str(state), run={"memory": {"state_dir": str(state / "m")}})
    cluster = Cluster(config)
    cluster.start(broker_port=0, shard_flags=["--noop"] if noop else [])
    try:
        assert cluster.broker is not None
        return asyncio.run(load(cluster.broker.address, queries, args.seconds, args.concurrency))
    finally:
        cluster.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds per cluster")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients")
    parser.add_argument("--encoder", default="minilm", choices=("minilm", "hashing"), help="semantic encoder")
    parser.add_argument("--index", type=Path, help="prebuilt index of the bundled catalog (default: build one)")
    args = parser.parse_args(argv)
    from core.catalog import demo_catalog_path, load_catalog
    from core.indexing import build_index
    from services.cluster import DEFAULT_BUILD, DEFAULT_STRATEGIES

    queries = sample_queries(2000)
    with tempfile.TemporaryDirectory(prefix="ltrr-broker-bench-") as tmp:
        index = args.index or Path(tmp) / "index"
        if args.index is None:
            build_index(load_catalog(demo_catalog_path()), index, DEFAULT_STRATEGIES,
                        {**DEFAULT_BUILD, "semantic": {"encoder": args.encoder}})
        result: dict[str, Any] = {"cluster": measure(index, Path(tmp) / "state", False, queries, args),
                                  "noop_floor": measure(index, Path(tmp) / "state-noop", True, queries, args)}
    result["throughput_ratio"] = round(result["cluster"]["qps"] / result["noop_floor"]["qps"], 3)
    result["run"] = {**run_info(threads=1), "concurrency": args.concurrency, "seconds": args.seconds,
                     "encoder": args.encoder, "cpu_count": os.cpu_count()}
    rows = [[name, r["searches"], r["qps"], r["p50_ms"], r["p99_ms"], r["failures"], r["degraded"]]
            for name, r in (("ltrr cluster", result["cluster"]), ("no-op shards (floor)", result["noop_floor"]))]
    print_table(rows, ["system", "searches", "searches/s", "p50 ms", "p99 ms", "failed", "degraded"])
    print(f"throughput: {result['throughput_ratio']:.2f} of the no-op floor (commit {result['run']['commit']}, "
          f"{args.concurrency} clients, encoder {args.encoder})")
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
