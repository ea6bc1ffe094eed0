"""Open-loop load benchmark: client-observed Search latency against offered load, for the real
cluster next to its no-op floor and the bare gRPC echo fan-out, in one run (issue 16).

    python -m benchmarks.load [--rate R | --sweep] [--duration S] [--json FILE] [--plot FILE]
                              [--budget-ms 100] [--arrivals poisson|constant] [--feedback-share 0.3]
                              [--rates 20,40,...] [--targets cluster,noop,echo] [--overload-duration 60]
                              [--brokers 1]

Targets, each in processes of its own, started here and stopped at the end (also on errors and
Ctrl-C): `cluster`, the demo catalog's `ltrr up` cluster (services.cluster: four shards and the
broker; the index at --index is built the first time); `noop`, the same with every shard
`--noop` (what processes, hops, fan-out, merge and ranking cost); `echo`, a bare gRPC echo
fan-out to as many echo shards (benchmarks.load_echo: the transport's own floor). With --brokers N
(> 1), the cluster and no-op targets run N broker processes sharing a private PostgreSQL event
store (`brokers` and `[store] url = "postgres"` of services.cluster), and the searches take the
brokers in turn (each search's Feedback to the broker that answered it).

Load (benchmarks.load_client, in a process of its own): simulated users' searches (core.simulator
intents and contexts), sent on an arrival schedule fixed in advance (Poisson or constant), with
Feedback on a share of the answers; latency runs from the scheduled send time, so a slow service
and a late generator are both charged (no coordinated omission). Every request has a 2 s client
deadline; one not answered 1 s after it is a hang. Each target gets a warm-up step first (not
counted) and a pause between steps.

Sweep: rates ascending; a target's sweep stops once its p99 passes 5x the budget or half its
requests fail. Capacity (benchmarks.load_stats.capacity) is the highest rate that passes: p99 of
the OK answers <= --budget-ms and at most 1% of requests not OK (lower rates that failed, spikes on
a shared machine, are listed in `failed_below_capacity`). With the cluster, the run
then offers it 2x capacity for --overload-duration seconds (goodput ratio, p99 of the accepted,
errors other than RESOURCE_EXHAUSTED, hangs) and half capacity with budget_ms 50 (its p99.9).
The JSON also holds `encoder` from benchmarks.encoder.measure() when that module exists ({} otherwise).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.common import pin_threads, run_info, write_json
from benchmarks.load_client import DEFAULT_FEEDBACK_SHARE, LoadGenerator, StepSpec
from benchmarks.load_gen import DEFAULT_DEADLINE_S
from benchmarks.load_report import plot, print_rows, print_summary
from benchmarks.load_stats import (
    Arrivals,
    capacity,
    failed_below,
    goodput,
    rate_list,
    ratio,
    should_stop,
    summarize,
)

if TYPE_CHECKING:
    from services.cluster import Cluster, ClusterConfig

TARGETS = ("cluster", "noop", "echo")
DEFAULT_RATES = "20,40,80,120,160,240,320,480,640,960"
DEFAULT_PLOT = Path("docs") / "load" / "latency.png"
BUDGET50_MS = 50

Row = dict[str, Any]


def cluster_config(target: str, index: Path, work: Path, brokers: int = 1) -> ClusterConfig:
    """The `ltrr up` config of the cluster or no-op target: a no-op shard serves no catalog, so the
    no-op floor has no live catalog (its shards refuse --store). More than one broker: they share a
    private PostgreSQL."""
    from services.cluster import PRIVATE_POSTGRES, ClusterConfig

    state = work / target
    return ClusterConfig(index=str(index), state=str(state), run={"memory": {"state_dir": str(state / "memory")}},
                         live=False if target == "noop" else None, brokers=brokers,
                         store={"url": PRIVATE_POSTGRES} if brokers > 1 else {})


@contextmanager
def started_cluster(target: str, index: Path, work: Path, brokers: int = 1) -> Iterator[Cluster]:
    """The running cluster of target "cluster" or "noop" (brokers on free ports), for the block."""
    from services.cluster import Cluster, build_missing

    config = cluster_config(target, index, work, brokers)
    build_missing(config)
    cluster = Cluster(config)
    try:
        cluster.start(broker_port=0, shard_flags=["--noop"] if target == "noop" else [])
        yield cluster
    finally:
        cluster.stop()


@contextmanager
def started(target: str, index: Path, work: Path, brokers: int = 1) -> Iterator[str]:
    """The broker address of `target` (one of TARGETS; several brokers' comma-separated), running
    for the duration of the block."""
    from benchmarks.load_echo import EchoFanout
    from services.cluster import DEFAULT_STRATEGIES

    if target == "echo":
        with EchoFanout(len(DEFAULT_STRATEGIES)) as address:
            yield address
        return
    with started_cluster(target, index, work, brokers) as cluster:
        yield ",".join(broker.address for broker in cluster.brokers)


class Runner:
    """The steps of one run against whichever target is up: the generator and the run's options."""

    def __init__(self, generator: LoadGenerator, args: argparse.Namespace) -> None:
        self.generator, self.args = generator, args
        self.steps = 0

    def measure(self, address: str, rate: float, duration_s: float, *, budget_ms: int | None = None) -> Row:
        a = self.args
        self.steps += 1
        spec = StepSpec(address=address, rate=rate, duration_s=duration_s, arrivals=Arrivals(a.arrivals),
                        seed=a.seed + self.steps, budget_ms=budget_ms or a.budget_ms, feedback_share=a.feedback_share,
                        deadline_s=a.deadline_s)
        row = summarize(self.generator.step(spec), rate, duration_s)
        time.sleep(a.pause)  # let the queue of an overloaded step drain before the next one
        return row

    def warm_up(self, address: str, rate: float) -> None:
        if self.args.warmup > 0:
            self.measure(address, rate, self.args.warmup)

    def sweep(self, target: str, address: str, rates: Sequence[float]) -> list[Row]:
        rows = []
        for rate in rates:
            row = self.measure(address, rate, self.args.duration)
            rows.append(row)
            print(f"  {target} {rate:g}/s: ok/s {row['throughput']}, p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, "
                  f"errors {row['errors']}, generator lag p99 {row['lag_p99_ms']} ms", flush=True)
            if should_stop(row, self.args.budget_ms):
                break
        return rows

    def cluster_extras(self, address: str, cap: float, rates: Sequence[float]) -> dict[str, Any]:
        """Overload (2x capacity) and budget_ms 50 at half capacity, on the cluster still up."""
        a, out = self.args, {}
        base = cap if cap > 0 else rates[0]  # no passing rate at all: overload relative to the lowest
        if a.overload_duration > 0:
            print(f"  overload: {2 * base:g}/s for {a.overload_duration:g}s", flush=True)
            out["overload"] = goodput(self.measure(address, 2 * base, a.overload_duration), cap)
        if a.budget50:
            row = self.measure(address, base / 2, a.duration, budget_ms=BUDGET50_MS)
            out["budget50"] = {k: row[k] for k in ("offered_rate", "throughput", "p50_ms", "p99_ms", "p999_ms",
                                                   "max_ms", "error_share", "degraded_share")}
            out["budget50"]["budget_ms"] = BUDGET50_MS
        return out


def run_targets(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Every target of --targets in turn: started, warmed, swept (or measured at --rate), stopped."""
    rates = [args.rate] if args.rate else rate_list(args.rates)
    rows: dict[str, list[Row]] = {}
    extras: dict[str, Any] = {}
    with LoadGenerator(seed=args.seed) as generator:
        runner = Runner(generator, args)
        for target in args.targets:
            print(f"{target}: starting", flush=True)
            with started(target, args.index, work, args.brokers) as address:
                runner.warm_up(address, rates[0])
                rows[target] = runner.sweep(target, address, rates)
                if target == "cluster" and not args.rate:
                    extras = runner.cluster_extras(address, capacity(rows[target], args.budget_ms), rates)
    return {"rows": rows, **extras}


def encoder_figures(skip: bool) -> dict[str, Any]:
    """benchmarks.encoder.measure() when that module exists (issue 16's encoder benchmark), else {};
    its failure is recorded as {"error": ...} rather than losing the load figures already measured."""
    if skip or importlib.util.find_spec("benchmarks.encoder") is None:
        return {}
    print("encoder: benchmarks.encoder.measure()", flush=True)
    try:
        return dict(importlib.import_module("benchmarks.encoder").measure())
    except Exception as err:  # another benchmark's failure must not lose this run's figures
        print(f"encoder: failed: {type(err).__name__}: {err}", file=sys.stderr)
        return {"error": f"{type(err).__name__}: {err}"}


def assemble(measured: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    rows: dict[str, list[Row]] = measured["rows"]
    caps = {t: capacity(r, args.budget_ms) if not args.rate else None for t, r in rows.items()}
    result: dict[str, Any] = {
        "budget_ms": args.budget_ms, "capacity": caps.get("cluster"), "floor_capacity": caps.get("noop"),
        "echo_capacity": caps.get("echo"),
        # the highest rate swept passed: the target's capacity lies above the sweep
        "capacity_lower_bound": {t: bool(r) and caps[t] == max(x["offered_rate"] for x in r) for t, r in rows.items()},
        "failed_below_capacity": {t: failed_below(r, args.budget_ms) for t, r in rows.items()},
        "rows": rows, "overload": measured.get("overload", {}), "budget50": measured.get("budget50", {})}
    if (cap := caps.get("cluster")) is not None:
        result["ratios"] = {"floor_capacity": ratio(cap, caps.get("noop") or 0.0),
                            "echo_capacity": ratio(cap, caps.get("echo") or 0.0)}
    return result


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--rate", type=float, help="offer this one rate (searches/s) to every target")
    mode.add_argument("--sweep", action="store_true", help="sweep --rates (the default)")
    p.add_argument("--rates", default=DEFAULT_RATES, help="sweep rates, searches/s (default: %(default)s)")
    p.add_argument("--duration", type=float, default=20.0, help="measured seconds per rate (default: %(default)s)")
    p.add_argument("--targets", default=",".join(TARGETS), help="comma-separated, of %(default)s")
    p.add_argument("--budget-ms", type=int, default=100, help="SearchRequest.budget_ms and the capacity's p99 bound")
    p.add_argument("--arrivals", default="poisson", choices=[a.value for a in Arrivals])
    p.add_argument("--feedback-share", type=float, default=DEFAULT_FEEDBACK_SHARE,
                   help="share of answered searches the simulated user reacts to (default: %(default)s)")
    p.add_argument("--deadline-s", type=float, default=DEFAULT_DEADLINE_S, help="client deadline per search")
    p.add_argument("--overload-duration", type=float, default=60.0, help="seconds at 2x capacity (0: skip)")
    p.add_argument("--no-budget50", dest="budget50", action="store_false", help="skip budget_ms 50 at half capacity")
    p.add_argument("--no-encoder", action="store_true", help="skip benchmarks.encoder.measure()")
    p.add_argument("--warmup", type=float, default=3.0, help="uncounted seconds per target before its first step")
    p.add_argument("--pause", type=float, default=1.0, help="seconds between steps")
    p.add_argument("--brokers", type=int, default=1,
                   help="broker processes of the cluster and no-op targets (echo has one); more than 1 share a "
                        "private PostgreSQL (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--index", type=Path, default=Path("indexes") / "demo",
                   help="demo index directory, built the first time (default: %(default)s)")
    p.add_argument("--json", type=Path, help="write the figures to this file")
    p.add_argument("--plot", type=Path, default=DEFAULT_PLOT, help="latency-vs-load PNG (default: %(default)s)")
    args = p.parse_args(argv)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if unknown := sorted(set(args.targets) - set(TARGETS)):
        p.error(f"unknown --targets {unknown}; known: {', '.join(TARGETS)}")
    from services.cluster import PRIVATE_POSTGRES, ClusterConfig

    try:  # the cluster's own rule for its broker count
        ClusterConfig(brokers=args.brokers, store={"url": PRIVATE_POSTGRES})
    except ValueError as err:
        p.error(f"--brokers: {err}")
    return args


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    # SIGTERM (and SIGINT, even in a background job that ignores it) unwind through the with-blocks
    # and finally clauses, which stop every process this run started.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _interrupted)
    pin_threads()
    args = parse_args(argv)
    load_before = os.getloadavg()
    try:
        with tempfile.TemporaryDirectory(prefix="ltrr-load-") as tmp:
            result = assemble(run_targets(args, Path(tmp)), args)
    except KeyboardInterrupt as stop:
        print(f"interrupted ({stop or 'Ctrl-C'}): every process this run started was stopped", file=sys.stderr)
        return 130
    result["encoder"] = encoder_figures(args.no_encoder)
    result["run"] = {**run_info(threads=1), "argv": sys.argv[1:], "brokers": args.brokers, "duration_s": args.duration,
                     "arrivals": args.arrivals, "feedback_share": args.feedback_share, "deadline_s": args.deadline_s,
                     "loadavg_before": [round(v, 2) for v in load_before],
                     "loadavg_after": [round(v, 2) for v in os.getloadavg()]}
    print_rows(result["rows"])
    print_summary(result)
    print(f"commit {result['run']['commit']}, {result['run']['cpus']} cpus, load average before "
          f"{result['run']['loadavg_before']} after {result['run']['loadavg_after']}")
    if not args.rate and args.plot:
        plot(result["rows"], args.plot, args.budget_ms)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
