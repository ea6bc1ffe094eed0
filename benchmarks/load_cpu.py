"""Where a search's CPU goes, process by process, under open-loop load (issue 16).

    python -m benchmarks.load_cpu [--target cluster|noop] [--rate 150] [--duration 20] [--json FILE]

Starts benchmarks.load's cluster (or its no-op floor) on the demo catalog, warms it for
`--warmup` seconds, then offers `--rate` searches/s (Poisson, the simulated users' mix with
feedback, benchmarks.load_client) for `--duration` seconds and reads the user + system CPU of the
broker, every shard and the load generator from /proc before and after (Linux). It prints, per
process, the cores it used and its milliseconds of CPU per answered search, and the broker's shed
counters from its /metrics. Two cores at ~8 ms of CPU per search top out near 250 searches/s,
whatever the admission rules: this is the budget to cut (NOTES.md, session 16). The load generator
shares the cores and is listed as well.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import print_table, run_info, write_json
from benchmarks.live_breakdown import cpu_seconds
from benchmarks.load import started_cluster
from benchmarks.load_client import LoadGenerator, StepSpec
from benchmarks.load_stats import summarize

SHED_SERIES = re.compile(r"^(ltrr_broker_(?:shed|shed_lagging|shed_queueing|expired)_searches_total) (\S+)$")


def per_search(before: Mapping[str, float], after: Mapping[str, float], seconds: float, answered: int
               ) -> dict[str, dict[str, float]]:
    """Per process (and "total"): cores used over `seconds` and CPU ms per answered search."""
    if seconds <= 0 or answered <= 0:
        raise ValueError(f"`seconds` and `answered` must be > 0, but got {seconds} and {answered}")
    used = {name: after[name] - before[name] for name in before}
    used["total"] = sum(used.values())
    return {name: {"cores": round(cpu / seconds, 3), "ms_per_search": round(1000 * cpu / answered, 2)}
            for name, cpu in used.items()}


def shed_counters(metrics_text: str) -> dict[str, float]:
    """The broker's admission counters from its Prometheus text."""
    return {m.group(1): float(m.group(2)) for line in metrics_text.splitlines() if (m := SHED_SERIES.match(line))}


def measure(target: str, rate: float, duration_s: float, warmup_s: float, index: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as work, started_cluster(target, index, Path(work)) as cluster, \
            LoadGenerator(seed=0) as generator:
        broker, generator_pid = cluster.broker, generator.process.pid
        assert broker is not None and generator_pid is not None  # both started
        generator.step(StepSpec(address=broker.address, rate=rate, duration_s=warmup_s, seed=1))
        pids = {"broker": broker.process.pid, **{n: s.process.pid for n, s in cluster.shards.items()},
                "load generator": generator_pid}
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        started = time.perf_counter()
        record = generator.step(StepSpec(address=broker.address, rate=rate, duration_s=duration_s, seed=2))
        seconds = time.perf_counter() - started
        after = {name: cpu_seconds(pid) for name, pid in pids.items()}
        row = summarize(record, rate, duration_s)
        text = urllib.request.urlopen(f"http://{broker.metrics_address}/metrics", timeout=10).read().decode()
    answered = round(row["throughput"] * duration_s)
    return {"target": target, "offered_rate": rate, "step": {k: row[k] for k in ("throughput", "p50_ms", "p99_ms",
                                                                               "errors")},
            "processes": per_search(before, after, seconds, answered), "broker_admission": shed_counters(text)}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", choices=("cluster", "noop"), default="cluster")
    p.add_argument("--rate", type=float, default=150.0, help="searches/s offered (default: 150)")
    p.add_argument("--duration", type=float, default=20.0, help="measured seconds (default: 20)")
    p.add_argument("--warmup", type=float, default=8.0, help="uncounted seconds before (default: 8)")
    p.add_argument("--index", type=Path, default=Path("indexes") / "demo")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0 or args.warmup < 0:
        p.error("--rate and --duration must be > 0, --warmup >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    result = measure(args.target, args.rate, args.duration, args.warmup, args.index)
    step = result["step"]
    print(f"{args.target} at {args.rate:g}/s: ok/s {step['throughput']}, p50 {step['p50_ms']} ms, "
          f"p99 {step['p99_ms']} ms, errors {step['errors']}")
    print_table([[name, f"{v['cores']:.3f}", f"{v['ms_per_search']:.2f}"] for name, v in result["processes"].items()],
                ["process", "cores", "CPU ms per search"])
    for name, value in result["broker_admission"].items():
        print(f"{name} {value:g}")
    write_json(args.json, {"run": run_info(), **result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
