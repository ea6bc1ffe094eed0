"""Broker soak: resident memory and event-log size over a long stream of searches with feedback.

    python -m benchmarks.broker_memory [--searches 200000] [--concurrency 4] [--every 10000]
                                       [--index DIR] [--json FILE]

The whole cluster runs on this machine (four shards and the broker, the bundled catalog; the index
is built like `ltrr up` builds it unless --index names one), with state in a fresh temporary
directory. C asyncio clients search in a closed loop (a soak for memory, not a latency benchmark:
benchmarks/broker.py measures latency) with queries drawn with a fixed seed from 50,000 catalog
phrases (titles, artists, "artist title", genres, decades), so the query history, the memory
shard and the recent-decision cache all keep growing; every search gets feedback: a play of one
of its top results, or a skip for one in six. Every --every searches it samples the broker's and
the memory shard's resident set size (VmRSS of /proc/PID/status) and the event log's size on
disk (events.sqlite with its -wal file), and prints the curve. The issue's bound: the broker's RSS
stays under 1 GiB over 200,000 searches.
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

from benchmarks.broker import sample_queries
from benchmarks.common import print_table, run_info, write_json

GIB = 2**30


def rss_bytes(pid: int) -> int:
    """Resident set size of process `pid` (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def log_bytes(state: Path) -> int:
    return sum(p.stat().st_size for p in state.glob("events.sqlite*"))


async def soak(address: str, queries: list[str], args: argparse.Namespace, sample: Any) -> dict[str, int]:
    """Run args.searches searches with feedback; call sample(done) every args.every searches."""
    from services.client import AsyncBrokerClient

    counts = {"searches": 0, "failures": 0, "feedback": 0}
    rng = np.random.default_rng(1)
    plays = rng.random(args.searches) >= 1 / 6
    picks = rng.integers(0, 3, size=args.searches)
    next_sample = args.every

    async def worker(offset: int) -> None:
        nonlocal next_sample
        async with AsyncBrokerClient(address) as client:
            for i in range(offset, args.searches, args.concurrency):
                try:
                    r = await client.search(queries[i % len(queries)], k=10, budget_ms=200)
                    if r.results:
                        pick = r.results[min(int(picks[i]), len(r.results) - 1)].entity_id
                        await client.feedback(r.decision_id, pick, "play" if plays[i] else "skip")
                        counts["feedback"] += 1
                except Exception:
                    counts["failures"] += 1
                counts["searches"] += 1
                if counts["searches"] >= next_sample:
                    next_sample += args.every
                    sample(counts["searches"])

    await asyncio.gather(*(worker(i) for i in range(args.concurrency)))
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--searches", type=int, default=200_000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--every", type=int, default=10_000, help="sample memory every N searches")
    parser.add_argument("--index", type=Path, help="an index of the bundled catalog (default: indexes/demo, built "
                        "if missing, as `ltrr up` does)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    from services.cluster import Cluster, ClusterConfig, build_missing

    queries = sample_queries(50_000)
    with tempfile.TemporaryDirectory(prefix="ltrr-soak-") as tmp:
        state = Path(tmp) / "state"
        config = ClusterConfig(state=str(state), run={"memory": {"state_dir": str(Path(tmp) / "memory")}},
                               index=str(args.index or ClusterConfig().index))
        build_missing(config)
        cluster = Cluster(config)
        cluster.start(broker_port=0)
        curve: list[dict[str, float]] = []
        started = time.perf_counter()
        try:
            assert cluster.broker is not None
            broker_pid, memory_pid = cluster.broker.process.pid, cluster.shards["memory"].process.pid

            def sample(done: int) -> None:
                curve.append({"searches": done, "broker_rss_mib": rss_bytes(broker_pid) / 2**20,
                              "memory_rss_mib": rss_bytes(memory_pid) / 2**20,
                              "event_log_mib": log_bytes(state) / 2**20,
                              "elapsed_s": time.perf_counter() - started})
                print(f"{done:,} searches: broker {curve[-1]['broker_rss_mib']:,.0f} MiB, memory shard "
                      f"{curve[-1]['memory_rss_mib']:,.0f} MiB, event log {curve[-1]['event_log_mib']:,.0f} MiB",
                      flush=True)

            sample(0)
            counts = asyncio.run(soak(cluster.broker.address, queries, args, sample))
            if curve[-1]["searches"] != counts["searches"]:
                sample(counts["searches"])
        finally:
            cluster.stop()
    peak = max(c["broker_rss_mib"] for c in curve)
    print_table([[int(c["searches"]), f"{c['broker_rss_mib']:.0f}", f"{c['memory_rss_mib']:.0f}",
                  f"{c['event_log_mib']:.0f}", f"{c['elapsed_s']:.0f}"] for c in curve],
                ["searches", "broker RSS MiB", "memory shard RSS MiB", "event log MiB", "elapsed s"])
    verdict = "met" if peak < GIB / 2**20 else "NOT met"
    print(f"peak broker RSS {peak:.0f} MiB over {counts['searches']:,} searches ({counts['feedback']:,} with "
          f"feedback, {counts['failures']} failed): under 1 GiB {verdict} (commit {run_info(threads=1)['commit']}, "
          f"{args.concurrency} clients, {os.cpu_count()} CPUs)")
    write_json(args.json, {"curve": curve, "counts": counts, "peak_broker_rss_mib": peak,
                           "run": {**run_info(threads=1), "concurrency": args.concurrency}})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
