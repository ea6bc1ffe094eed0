"""Issue 15's acceptance run: a live catalog under search load, on `ltrr up` over the demo catalog.

    python -m benchmarks.live [--workdir DIR] [--rounds 3] [--writes 1000] [--write-rate 100]
                              [--search-rate 30] [--duration 10] [--bulk 5000] [--json FILE]

It starts its own cluster (`ltrr up`, the four strategies, one broker, the event store in the
work directory; the demo index is built on the first run) and stops it. Phases, in order:
1. bare baseline: open-loop searches (benchmarks.load_client's simulated users, Poisson arrivals
   at --search-rate) for --duration s, no writes, nothing else;
2. --rounds times: a baseline step, the same load for --duration s under the visibility prober's
   own traffic at the write rate (benchmarks.live_stream.ProbeLoad: its position polls and
   exact-title Retrieves of catalog tracks), the instrument the write steps carry too; then a
   writes step, the same load while --writes new tracks (benchmarks.live_stream) are written at
   --write-rate per second, --write-batch (10) per Catalog.Write; visibility per write
   (acknowledged -> an exact-title Retrieve on every lexical replica finds it and every shard has
   applied it, polled every 0.05 s, so a figure may be up to 0.05 s late, never early); then a
   merge step, the same load while more tracks are written, enough to take every lexical shard's
   delta past its merge threshold (--merge-entities, default 1.5 x --writes / --partitions), and
   each folds its delta into a new base (the semantic shards checkpoint at the same threshold); the
   step lasts --duration s, or the writes plus 3 s if that is longer; then 3 s of the same load,
   pooled over the rounds as `merge_settle` (reported, in no ratio: the merge's aftermath, kept out
   of the next round's baseline). The ratios compare each kind of step pooled over the rounds with
   the baseline steps pooled: a p99 of one 10 s step is its 3rd- or 4th-slowest search, which
   moved by half between runs of the same code; rounds interleaved, a noisy machine's drift
   counts on both sides, and the instrument's cost on both sides too. Every step's own set-up
   (the writes built, the stream's and the prober's channels connected) is done before the step
   starts, so no step carries this process's set-up (WritePhase);
3. after: a probed baseline step after the last merge (reported, not pooled);
4. new artist: a track by a made-up artist, then searches for the name with one typo through the
   attribute strategy (plan attribute only) until it is found;
5. bulk: --bulk demo tracks re-upserted (a catalog refresh) through `ltrr catalog upsert`;
6. crash: a stream of upserts and deletes; every process of the cluster SIGKILLed in the middle;
   `ltrr up` again on the same state; every acknowledged upsert must be found (exact title) and
   every acknowledged delete gone.
The JSON holds visibility_p99_s, failed_searches, search_p99_ratio_writes, search_p99_ratio_merge
(against the pooled probed baseline), each with a 95% interval (`..._interval`: a block bootstrap
over 1 s blocks of every step, benchmarks.load_stats.p99_ratio_interval, so that one run says
how far its ratio could move by chance), search_p99_ratio_writes_bare (against the bare one: the
writes and the instrument together), search_p99_ratio_writes_by_round and
search_p99_ratio_merge_by_round (each step against its round's baseline step), bulk_writes_per_s,
every merge and every phase's rows.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import write_json
from benchmarks.live_stream import (
    ProbeLoad,
    Prober,
    WriteStream,
    delete,
    demo_catalog,
    new_artist_track,
    new_tracks,
    one_typo,
    upsert,
    visibility_s,
)
from benchmarks.load_client import LoadGenerator, StepSpec
from benchmarks.load_stats import StepRecord, p99_ratio_interval, ratio, summarize
from benchmarks.scaleout import Up, up
from core.catalog import write_jsonl
from core.live_base import DEFAULT_BACKGROUND_NICE
from ltrr.v1 import catalog_pb2, catalog_pb2_grpc, shard_pb2
from services.client import BrokerClient, ShardClient

REPO = Path(__file__).resolve().parent.parent
MERGE_WAIT_S = 120.0
SETTLE_S = 3.0  # load after a merge step, before the next round's baseline (the merge_settle row)
PROBED_TRACKS = 2000  # catalog tracks a probed baseline searches for by exact title (cycled)
ALL_STRATEGIES = {"lexical": 50, "semantic": 50, "attribute": 50, "memory": 50}  # the crash check's plan


def config(workdir: Path, merge_entities: int, partitions: int = 1, replicas: int = 1,
           background_nice: int = DEFAULT_BACKGROUND_NICE) -> str:
    index = REPO / "indexes" / ("demo" if partitions == 1 else f"demo-p{partitions}")
    return (f'index = "{index}"\nstate = "{workdir / "state"}"\nport = 0\nmetrics_port = 0\nlive = true\n'
            f'partitions = {partitions}\nreplicas = {replicas}\n'
            f'[shards]\nmax_queue = 8\nmerge_entities = {merge_entities}\nbackground_nice = {background_nice}\n')


def under_load(gen: LoadGenerator, spec: StepSpec, during: Callable[[], Any] | None = None) -> tuple[StepRecord, Any]:
    """Run one load step on a thread and `during` meanwhile on this one; (the step's record, its result)."""
    out: dict[str, StepRecord] = {}
    thread = threading.Thread(target=lambda: out.setdefault("r", gen.step(spec)), daemon=True)
    thread.start()
    result = during() if during is not None else None
    thread.join()
    return out["r"], result


def probed(gen: LoadGenerator, spec: StepSpec, shards: list[tuple[str, int, str]], rate: float) -> StepRecord:
    """One load step under the prober's traffic without writes (live_stream.ProbeLoad) at `rate`,
    its channels connected before the step starts (as WritePhase's are)."""
    with ProbeLoad(shards, demo_catalog()[:PROBED_TRACKS], rate).connect():
        return under_load(gen, spec)[0]


def pooled(*records: StepRecord) -> StepRecord:
    """Steps of the same load run at different times, as one sample (the rounds' baseline steps,
    and their writes steps: a noisy machine's drift counts on both sides of the ratio)."""
    cat = np.concatenate
    return StepRecord(scheduled_s=cat([r.scheduled_s for r in records]),
                      latency_ms=cat([r.latency_ms for r in records]), lag_ms=cat([r.lag_ms for r in records]),
                      codes=tuple(c for r in records for c in r.codes), degraded=cat([r.degraded for r in records]),
                      feedback_sent=sum(r.feedback_sent for r in records),
                      feedback_errors=sum(r.feedback_errors for r in records))


def shards_of(status: dict[str, Any]) -> list[tuple[str, int, str]]:
    return [(s["strategy"], s["partition"], s["address"]) for s in status["shards"]]


class WritePhase:
    """`tracks` written at `rate` per second, `batch` per Catalog.Write, under the visibility
    prober; calling it runs the phase and returns its stream once every write is answered and
    visible (or 10 s passed). Everything the phase needs is made at construction, before the
    measured step that calls it: the writes built and the stream's and prober's channels
    connected. Made inside the step, that set-up took this process up to 83% of a core in the
    step's first 100 ms, and those searches were among the slowest of the whole run (the
    baseline step's ProbeLoad is connected before its step too)."""

    def __init__(self, address: str, shards: list[tuple[str, int, str]], tracks: Sequence[Any], rate: float,
                 batch: int) -> None:
        self.stream = WriteStream(address, [(upsert(t), t.fields["title"]) for t in tracks], rate, batch).connect()
        self.prober = Prober(shards, [self.stream]).connect()

    def __call__(self) -> WriteStream:
        with self.prober:
            self.stream.start().done.wait()
            deadline = time.perf_counter() + 10.0
            while time.perf_counter() < deadline and any(w.visible is None and w.acked for w in self.stream.written):
                time.sleep(0.05)
        return self.stream


class MergePhase:
    """A WritePhase of `tracks` (enough to take every lexical shard's delta past its merge
    threshold), then a wait until every lexical shard replica's base has moved: a merge ran while
    the caller's searches did. Made before the measured step, as WritePhase; calling it returns
    {"merged": bool, "base_position": the lowest of the new bases, "seconds": from the call}."""

    def __init__(self, address: str, shards: list[tuple[str, int, str]], tracks: Sequence[Any], rate: float,
                 batch: int) -> None:
        self.clients = [ShardClient(a) for name, _, a in shards if name == "lexical"]
        try:
            self.before = self.bases()
            self.writes = WritePhase(address, shards, tracks, rate, batch)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for c in self.clients:
            c.close()

    def bases(self) -> list[int]:
        return [int(c.stub.CatalogPosition(shard_pb2.CatalogPositionRequest(), timeout=2.0).base_position)
                for c in self.clients]

    def __call__(self) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            self.writes()
            while time.perf_counter() - started < MERGE_WAIT_S:
                now = self.bases()
                if all(n > b for n, b in zip(now, self.before, strict=True)):
                    return {"merged": True, "base_position": min(now),
                            "seconds": round(time.perf_counter() - started, 3)}
                time.sleep(0.05)
        finally:
            self.close()
        return {"merged": False}


def new_artist_phase(address: str) -> dict[str, Any]:
    track = new_artist_track()
    name = track.fields["artist"]
    query = one_typo(name)
    with BrokerClient(address) as broker:
        stub = catalog_pb2_grpc.CatalogStub(broker.channel)
        stub.Write(catalog_pb2.CatalogWriteRequest(writes=[upsert(track)]), timeout=10.0)
        acked = time.perf_counter()
        while time.perf_counter() - acked < 5.0:
            response = broker.search(query, plan={"attribute": 50}, budget_ms=500)
            if track.id in {r.entity_id for r in response.results}:
                return {"artist": name, "query": query, "found_after_s": round(time.perf_counter() - acked, 3)}
            time.sleep(0.02)
    return {"artist": name, "query": query, "found_after_s": None}


def bulk_phase(address: str, workdir: Path, n: int) -> dict[str, Any]:
    """Re-upsert the first `n` demo tracks with a new popularity through the CLI; writes per second."""
    entities = demo_catalog()[:n]
    path = workdir / "bulk.jsonl"
    write_jsonl([replace(e, popularity=e.popularity + 1.0) for e in entities], path)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "services.cli", "catalog", "upsert", "--target", address, str(path)],
                          capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - started
    lines = done.stdout.splitlines()
    return {"entities": n, "exit_code": done.returncode, "seconds": round(seconds, 3),
            "bulk_writes_per_s": round(n / seconds, 1), "last_line": lines[-1] if lines else done.stderr[-300:]}


def kill_everything(up_: Up) -> None:
    for pid in [s["pid"] for s in up_.status["shards"]] + [b["pid"] for b in up_.status["brokers"]]:
        os.kill(pid, signal.SIGKILL)
    up_.process.kill()
    up_.process.wait()


def crash_phase(up_: Up, workdir: Path, written: Sequence[Any], cfg: str) -> tuple[dict[str, Any], Up]:
    """Upserts of new tracks and deletes of tracks written in phase 2, SIGKILL of every process in
    the middle, `ltrr up` again; then every acknowledged write checked on the restarted cluster."""
    fresh = new_tracks(400, seed=7)
    victims = [w for w in written if w.acked][:200]
    writes = [x for pair in zip([(upsert(t), t.fields["title"]) for t in fresh],
                                [(delete(w.entity_id), w.title) for w in victims], strict=False) for x in pair]
    stream = WriteStream(up_.brokers[0], writes, rate=100.0).start()
    time.sleep(len(writes) / 100.0 / 2)
    kill_everything(up_)
    stream.done.wait()
    acked = [w for w in stream.written if w.acked]
    again = up(workdir, "live-restart", cfg)
    found = acked_found(again, acked)
    return ({"writes_sent": len(stream.written), "acked": len(acked),
             "acked_upserts": sum(not w.deletes for w in acked), "acked_deletes": sum(w.deletes for w in acked),
             **found}, again)


def acked_found(up_: Up, acked: Sequence[Any]) -> dict[str, dict[str, int]]:
    """Acknowledged upserts not found, and acknowledged deletes still found, by an exact-title
    search on every replica of the owning lexical partition and through the broker (every strategy)."""
    prober = Prober(shards_of(up_.status), [])  # its found(): every replica of the owning partition
    missing, resurrected = [0, 0], [0, 0]
    try:
        with BrokerClient(up_.brokers[0]) as broker:
            for w in acked:
                by_broker = w.entity_id in {r.entity_id for r in broker.search(
                    w.title, plan=ALL_STRATEGIES, budget_ms=1000).results}
                for i, found in enumerate((prober.found(w.title, w.entity_id), by_broker)):
                    missing[i] += (not w.deletes) and not found
                    resurrected[i] += w.deletes and found
    finally:
        prober.close()
    where = ("lexical_shards", "broker")
    return {"acked_upserts_missing": dict(zip(where, missing, strict=True)),
            "acked_deletes_still_found": dict(zip(where, resurrected, strict=True))}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.live", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, help="work directory (default: a temporary one, removed)")
    p.add_argument("--rounds", type=int, default=3, help="baseline + writes + merge steps (pooled for the ratios)")
    p.add_argument("--writes", type=int, default=1000, help="new tracks written per writes step")
    p.add_argument("--write-rate", type=float, default=100.0)
    p.add_argument("--write-batch", type=int, default=10,
                   help="writes per Catalog.Write (a feed client batches, like Elasticsearch's bulk API); "
                        "1 = one request per write")
    p.add_argument("--search-rate", type=float, default=30.0)
    p.add_argument("--duration", type=float, default=10.0, help="seconds of the baseline step")
    p.add_argument("--bulk", type=int, default=5000, help="entities of the bulk phase")
    p.add_argument("--merge-entities", type=int, default=0,
                   help="a lexical shard merges when its delta holds more than this many entities (default: "
                        "--writes x 1.5 / --partitions, so each round's merge step writes half --writes more)")
    p.add_argument("--partitions", type=int, default=1, help="partitions of every strategy (`ltrr up`)")
    p.add_argument("--replicas", type=int, default=1, help="shard processes per partition")
    p.add_argument("--background-nice", type=int, default=DEFAULT_BACKGROUND_NICE,
                   help="the shards' --background-nice (0 = writes at the searches' priority)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if args.rounds < 1 or args.writes < 1:
        p.error("--rounds and --writes must be >= 1")
    return args


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    # a partition's lexical shard holds ~1/partitions of the writes: its threshold is its share
    merge_entities = args.merge_entities or (args.writes + args.writes // 2) // args.partitions
    if merge_entities * args.partitions <= args.writes:
        raise SystemExit(f"--merge-entities x --partitions must be above --writes ({args.writes}): no merge during "
                         f"a writes step, but got {merge_entities} x {args.partitions}")
    cfg = config(workdir, merge_entities, args.partitions, args.replicas, args.background_nice)
    up_ = up(workdir, "live", cfg)
    result: dict[str, Any] = {}
    try:
        address, shards = up_.brokers[0], shards_of(up_.status)
        spec = StepSpec(address=address, rate=args.search_rate, duration_s=args.duration, budget_ms=100, seed=1)
        writing = StepSpec(address=address, rate=args.search_rate, duration_s=args.writes / args.write_rate + 1,
                           budget_ms=100, seed=2)
        # past every partition's threshold (with 10% to spare when the writes are split by partition)
        extra_n = merge_entities * args.partitions - args.writes + 1 + (args.writes // 10 if args.partitions > 1 else 0)
        merge_s = max(args.duration, extra_n / args.write_rate + 3)  # the writes, then the merge
        bases: list[StepRecord] = []
        durings: list[StepRecord] = []
        mergings: list[StepRecord] = []
        settles: list[StepRecord] = []
        merges: list[dict[str, Any]] = []
        streams: list[WriteStream] = []
        with LoadGenerator() as gen:
            gen.step(StepSpec(address=address, rate=args.search_rate, duration_s=3.0, seed=9))  # warm-up
            bare, _ = under_load(gen, replace(spec, seed=5))
            for r in range(args.rounds):
                bases.append(probed(gen, replace(spec, seed=10 + r), shards, args.write_rate))
                tracks = new_tracks(args.writes, seed=100 + r)
                during, stream = under_load(gen, replace(writing, seed=20 + r), WritePhase(
                    address, shards, tracks, args.write_rate, args.write_batch))
                durings.append(during)
                streams.append(stream)
                extra = new_tracks(extra_n, seed=200 + r)
                merging, merged = under_load(gen, replace(spec, seed=30 + r, duration_s=merge_s), MergePhase(
                    address, shards, extra, args.write_rate, args.write_batch))
                if not merged["merged"]:
                    raise SystemExit(f"round {r + 1}: the lexical shard did not merge within {MERGE_WAIT_S:.0f} s")
                mergings.append(merging)
                merges.append(merged)
                settles.append(gen.step(StepSpec(address=address, rate=args.search_rate, duration_s=SETTLE_S,
                                                 budget_ms=100, seed=40 + r)))
            after = probed(gen, replace(spec, seed=4), shards, args.write_rate)
        vis = visibility_s(streams)
        steps = (("baseline", pooled(*bases)), ("baseline_after", after), ("baseline_bare", bare),
                 ("writes", pooled(*durings)), ("merge", pooled(*mergings)), ("merge_settle", pooled(*settles)))
        rows = {name: summarize(rec, args.search_rate, max(len(rec.codes), 1) / args.search_rate)  # ~ the duration
                for name, rec in steps}
        p99 = {name: row["p99_ms"] for name, row in rows.items()}

        def by_round(records: list[StepRecord]) -> list[float | None]:
            return [ratio(summarize(d, args.search_rate, 1.0)["p99_ms"], summarize(b, args.search_rate, 1.0)["p99_ms"])
                    for b, d in zip(bases, records, strict=True)]

        all_written = [w for stream in streams for w in stream.written]
        result.update(rows=rows, merges=merges, new_artist=new_artist_phase(address),
                      visibility_p50_s=round(float(np.percentile(vis, 50)), 4),
                      visibility_p99_s=round(float(np.percentile(vis, 99)), 4),
                      visibility_max_s=round(float(vis.max()), 4), writes_acked=int(vis.size),
                      write_errors=sum(bool(w.error) for w in all_written),
                      failed_searches=sum(row["sent"] - row["ok"] for row in rows.values()),
                      search_p99_ratio_writes=ratio(p99["writes"], p99["baseline"]),
                      search_p99_ratio_merge=ratio(p99["merge"], p99["baseline"]),
                      search_p99_ratio_writes_interval=p99_ratio_interval(bases, durings),
                      search_p99_ratio_merge_interval=p99_ratio_interval(bases, mergings),
                      search_p99_ratio_writes_bare=ratio(p99["writes"], p99["baseline_bare"]),
                      search_p99_ratio_writes_by_round=by_round(durings),
                      search_p99_ratio_merge_by_round=by_round(mergings))
        bulk = bulk_phase(address, workdir, args.bulk)
        result.update(bulk=bulk, bulk_writes_per_s=bulk["bulk_writes_per_s"])
        result["crash"], up_ = crash_phase(up_, workdir, all_written, cfg)
    finally:
        up_.stop()
    return result


def report(result: dict[str, Any]) -> None:
    for name, row in result["rows"].items():
        print(f"{name:9s} sent {row['sent']:5d} ok {row['ok']:5d} p50 {row['p50_ms']} ms p99 {row['p99_ms']} ms "
              f"errors {row['errors']}")
    for key in ("visibility_p50_s", "visibility_p99_s", "visibility_max_s", "writes_acked", "write_errors",
                "failed_searches", "search_p99_ratio_writes", "search_p99_ratio_writes_interval",
                "search_p99_ratio_merge", "search_p99_ratio_merge_interval",
                "search_p99_ratio_writes_bare", "search_p99_ratio_writes_by_round", "search_p99_ratio_merge_by_round",
                "merges", "new_artist",
                "bulk", "bulk_writes_per_s", "crash"):
        print(f"{key}: {result.get(key)}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        result = run(args, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="ltrr-live-") as tmp:
            result = run(args, Path(tmp))
    report(result)
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
