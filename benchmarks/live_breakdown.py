"""Where a live catalog's writes cost searches their time: benchmarks.live's load and writes, with
each search's latency taken apart and the CPU of every process, per phase.

    python -m benchmarks.live_breakdown [--rounds 3] [--writes 1000] [--write-rate 100]
                                        [--search-rate 30] [--quiet 12] [--merge] [--slowest 8]
                                        [--json FILE]

It starts its own cluster (benchmarks.live.up, the demo catalog) and stops it. A client process of
its own sends benchmarks.load_client's simulated searches open-loop (Poisson arrivals at
--search-rate, Feedback on a share of them) for the whole run and records, per search: the client
latency, the broker's `took_ms`, and each strategy's `latency_ms` from the SearchResponse.
Meanwhile the phases run in turn: --rounds times quiet (--quiet seconds under the visibility
prober's own traffic, benchmarks.live_stream.ProbeLoad) then writes (--writes new tracks at
--write-rate, benchmarks.live.WritePhase) and, with --merge, a merge phase (enough writes to take
the lexical delta past its threshold, 1.5 x --writes by default; benchmarks.live.MergePhase), as
benchmarks.live's rounds do; then quiet again. Per phase kind it prints p50/p99 of the client
latency, `took_ms`, the broker's own time (`took_ms` minus the slowest strategy's latency), each
strategy's latency (0 where the plan left it out) and the transport gap (client latency minus
`took_ms`); the CPU of every process in cores (from /proc, Linux); the slowest searches taken
apart (with their wall-clock time, to find them in the processes' logs); and each phase's own
client p99 and maximum. A diagnostic, not an acceptance: benchmarks.live is issue 15's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import run_info, write_json
from benchmarks.live import MergePhase, WritePhase, config, shards_of
from benchmarks.live_stream import ProbeLoad, demo_catalog, new_tracks
from benchmarks.load_stats import OK, Arrivals, arrival_offsets
from benchmarks.scaleout import up

STRATEGIES = ("lexical", "semantic", "attribute", "memory")
FEEDBACK_SHARE = 0.3
CLIENT_DEADLINE_S = 2.0
MAX_RUN_S = 3600.0  # the client's arrivals are drawn this far ahead; it stops when told
Search = tuple[float, float, float, dict[str, float], str]  # wall time due, latency ms, took_ms, strategies, code


def client(address: str, stop: Any, rate: float, out: str) -> None:
    """The client process: searches until `stop` (a multiprocessing Event) is set, then the records
    as JSON to `out`."""
    import grpc
    import uvloop

    from benchmarks.load_client import Traffic
    from ltrr.v1 import broker_pb2_grpc

    traffic = Traffic(seed=0)
    requests = traffic.requests(10, 100)
    rng = np.random.default_rng(1)
    records: list[Search] = []

    async def run() -> None:
        channels = [grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
                    for _ in range(4)]
        stubs = [broker_pb2_grpc.BrokerStub(c) for c in channels]
        loop = asyncio.get_running_loop()
        start, wall = loop.time(), time.time()

        async def one(i: int, due: float) -> None:
            stub = stubs[i % len(stubs)]
            try:
                response = await stub.Search(requests[i % len(requests)], timeout=CLIENT_DEADLINE_S)
            except grpc.aio.AioRpcError as err:
                records.append((wall + due, (loop.time() - start - due) * 1000, -1.0, {}, err.code().name))
                return
            records.append((wall + due, (loop.time() - start - due) * 1000, response.took_ms,
                            {s.strategy: s.latency_ms for s in response.strategies}, OK))
            if rng.random() < FEEDBACK_SHARE:
                for event in traffic.reactions(i, response, rng):
                    with contextlib.suppress(grpc.aio.AioRpcError):
                        await stub.Feedback(event, timeout=CLIENT_DEADLINE_S)

        tasks = []
        for i, due in enumerate(arrival_offsets(rate, MAX_RUN_S, Arrivals.POISSON, seed=1).tolist()):
            if stop.is_set():
                break
            if (delay := start + due - loop.time()) > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, due)))
        await asyncio.gather(*tasks)
        for channel in channels:
            await channel.close(None)

    uvloop.run(run())
    Path(out).write_text(json.dumps(records))


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (Linux /proc; 0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Phases:
    """Runs phases, recording when each ran and the CPU every process used meanwhile."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.ran: list[dict[str, Any]] = []

    def run(self, kind: str, work: Callable[[], Any]) -> Any:
        """work()'s result."""
        before, started = {n: cpu_seconds(p) for n, p in self.pids.items()}, time.time()
        result = work()
        ended = time.time()
        cores = {n: round((cpu_seconds(p) - before[n]) / (ended - started), 3) for n, p in self.pids.items()}
        self.ran.append({"kind": kind, "start": started, "end": ended, "cores": cores})
        return result


def each_phase(searches: Sequence[Search], phase: dict[str, Any]) -> dict[str, float | None]:
    """One phase's own client p99 and maximum (ms) over its answered searches."""
    ms = np.array([s[1] for s in searches if phase["start"] <= s[0] < phase["end"] and s[4] == OK])
    if not ms.size:
        return {"p99_ms": None, "max_ms": None}
    return {"p99_ms": round(float(np.percentile(ms, 99)), 1), "max_ms": round(float(ms.max()), 1)}


def pcts(values: np.ndarray) -> str:
    return f"{np.percentile(values, 50):5.1f} / {np.percentile(values, 99):5.1f}" if values.size else "-"


def breakdown(searches: Sequence[Search], phases: Sequence[dict[str, Any]], slowest: int) -> dict[str, Any]:
    """Per phase kind: the percentiles, the mean CPU per process and the slowest searches."""
    out: dict[str, Any] = {}
    for kind in dict.fromkeys(p["kind"] for p in phases):
        ran = [p for p in phases if p["kind"] == kind]
        mine = [s for s in searches if any(p["start"] <= s[0] < p["end"] for p in ran)]
        ok = [s for s in mine if s[4] == OK]
        latency = np.array([s[1] for s in ok])
        took = np.array([s[2] for s in ok])
        each = {name: np.array([s[3].get(name, 0.0) for s in ok]) for name in STRATEGIES}
        slowest_strategy = np.max(np.stack(list(each.values())), axis=0) if ok else np.zeros(0)
        ms = {"client": latency, "took": took, "broker_own": took - slowest_strategy, **each, "gap": latency - took}
        cores = {n: round(float(np.mean([p["cores"][n] for p in ran])), 3) for n in ran[0]["cores"]}
        worst = sorted(ok, key=lambda s: -s[1])[:slowest]
        out[kind] = {"searches": len(mine), "failed": len(mine) - len(ok),
                     "p50_p99_ms": {n: pcts(v) for n, v in ms.items()}, "cores": cores,
                     "slowest": [{"at": datetime.fromtimestamp(s[0]).strftime("%H:%M:%S.%f")[:-3],
                                  "client": round(s[1], 1), "took": round(s[2], 1),
                                  **{n: round(v, 1) for n, v in s[3].items()}} for s in worst]}
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.live_breakdown", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="quiet + writes rounds")
    p.add_argument("--writes", type=int, default=1000, help="new tracks per writes phase")
    p.add_argument("--write-rate", type=float, default=100.0)
    p.add_argument("--write-batch", type=int, default=10)
    p.add_argument("--search-rate", type=float, default=30.0)
    p.add_argument("--quiet", type=float, default=12.0, help="seconds of each quiet phase")
    p.add_argument("--merge", action="store_true", help="end every round with a merge phase")
    p.add_argument("--merge-entities", type=int, default=0,
                   help="the shards' merge threshold (default: 1.5 x --writes with --merge, else past every write)")
    p.add_argument("--slowest", type=int, default=8, help="slowest searches shown per phase kind")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if args.rounds < 1 or args.writes < 1 or args.quiet <= 0:
        p.error("--rounds and --writes must be >= 1 and --quiet > 0")
    return args


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    written = args.writes if args.merge else args.rounds * args.writes  # most the delta holds before a merge phase
    threshold = args.merge_entities or written + args.writes // 2
    if threshold <= written:
        raise SystemExit(f"--merge-entities must be above {written} (the writes before a merge phase), but got "
                         f"{threshold}")
    up_ = up(workdir, "live", config(workdir, threshold))
    searcher: multiprocessing.process.BaseProcess | None = None
    try:
        address, shards = up_.brokers[0], shards_of(up_.status)
        spawn = multiprocessing.get_context("spawn")
        out = workdir / "searches.json"
        stop = spawn.Event()
        searcher = spawn.Process(target=client, args=(address, stop, args.search_rate, str(out)))
        searcher.start()
        pids = {s["strategy"]: s["pid"] for s in up_.status["shards"]}
        pids |= {"broker": up_.status["brokers"][0]["pid"], "benchmark": os.getpid(), "client": searcher.pid or 0}
        phases = Phases(pids)
        merged: list[dict[str, Any]] = []
        time.sleep(3)  # the client's start-up

        def quiet(probe: ProbeLoad) -> None:
            with probe:
                time.sleep(args.quiet)

        def quiet_phase() -> None:  # each phase's instrument is connected before the phase (benchmarks.live)
            phases.run("quiet", partial(quiet, ProbeLoad(shards, demo_catalog()[:2000], args.write_rate).connect()))

        for r in range(args.rounds):
            quiet_phase()
            tracks = new_tracks(args.writes, seed=100 + r)
            phases.run("writes", WritePhase(address, shards, tracks, args.write_rate, args.write_batch))
            if args.merge:
                extra = new_tracks(threshold - written + 1, seed=200 + r)
                merged.append(phases.run("merge", MergePhase(address, shards, extra, args.write_rate,
                                                             args.write_batch)))
        quiet_phase()
        stop.set()
        searcher.join()
        searches: list[Search] = [(s[0], s[1], s[2], s[3], s[4]) for s in json.loads(out.read_text())]
    finally:
        if searcher is not None and searcher.is_alive():
            searcher.terminate()
        up_.stop()
    return {"run": run_info(), "merges": merged, "phases": breakdown(searches, phases.ran, args.slowest),
            "ran": [{"kind": p["kind"], "start": p["start"], "end": p["end"], **each_phase(searches, p)}
                    for p in phases.ran]}


def report(result: dict[str, Any]) -> None:
    for kind, row in result["phases"].items():
        print(f"{kind}: {row['searches']} searches, {row['failed']} failed; p50 / p99 ms:")
        print("   " + ", ".join(f"{n} {v}" for n, v in row["p50_p99_ms"].items()))
        print("   cores: " + ", ".join(f"{n} {v}" for n, v in row["cores"].items()))
        for s in row["slowest"]:
            print(f"   slow: {s}")
    print("by phase, client p99 / max ms: " + ", ".join(f"{p['kind']} {p['p99_ms']} / {p['max_ms']}"
                                                     for p in result["ran"]))
    for merged in result["merges"]:
        print(f"merge: {merged}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ltrr-live-breakdown-") as tmp:
        result = run(args, Path(tmp))
    report(result)
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
