"""Propensity calibration through a running cluster: is each allocation chosen as often as the
SearchResponse.propensity the broker reports with it says?

    python -m benchmarks.propensity [--searches 5000] [--query TEXT] [--context k=v ...]
        [--index DIR] [--set KEY=VALUE ...] [--budget-ms MS] [--json FILE]

It starts the whole cluster as `ltrr up` does (services.cluster: every shard and the broker as
separate processes on loopback, the bundled demo catalog, the index in indexes/demo with missing
components built first, or a prebuilt --index DIR). The broker's state and the memory shard's
state live in a fresh temporary directory, so no earlier learning leaks in. Then it runs N
searches of one fixed query and context through services.client.BrokerClient, one at a time,
and sends NO feedback: the policy (Thompson sampling by default; `--set` takes `ltrr broker`'s
policy keys) does not learn, so every search draws from the same distribution over allocations.
Only the strategies' latency averages move (cost_per_ms prices them); `--set cost_per_ms=0`
removes that drift.

Per allocation chosen at least 50 times it prints the check of core.policy.calibration: count,
empirical frequency, mean reported propensity over the searches that chose it, the standard error
of their difference, |diff| / SE and the verdict (calibrated when <= 3 SE); then the totals and
the commit and machine. The cluster is stopped at the end, on errors too. Exit status 1 when an
allocation fails the check.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import print_table, run_info, write_json
from core.policy.allocation import AllocationSpace
from core.policy.calibration import DEFAULT_MAX_Z, DEFAULT_MIN_COUNT, CalibrationRow, calibration
from core.policy.policies import PolicyConfig
from services.cli_common import parse_options

DEFAULT_SEARCHES = 5000  # ~1,250 per allocation the cold policy favours; 50+ for allocations of p >= 0.01
DEFAULT_QUERY = "dance monkey"
DEFAULT_CONTEXT = ("device=mobile", "hour=21")
DEFAULT_BUDGET_MS = 500  # generous: a timeout does not change the decision, but slows the run


def run_searches(address: str, query: str, context: dict[str, str], searches: int, budget_ms: int
                 ) -> tuple[list[tuple[str, ...]], list[tuple[int, ...]], np.ndarray, int]:
    """(strategy names, quotas of each search, float64 (n,) reported propensities, degraded count)."""
    from services.client import BrokerClient

    names: list[tuple[str, ...]] = []
    quotas: list[tuple[int, ...]] = []
    propensity = np.empty(searches)
    degraded = 0
    with BrokerClient(address) as client:
        for t in range(searches):
            response = client.search(query, k=10, budget_ms=budget_ms, context=context)
            names.append(tuple(r.strategy for r in response.strategies))
            quotas.append(tuple(int(r.quota) for r in response.strategies))
            propensity[t] = response.propensity
            degraded += response.degraded
    return names, quotas, propensity, degraded


def measure(args: argparse.Namespace, policy: PolicyConfig, tmp: Path) -> dict[str, Any]:
    """Start the cluster, run the searches, stop it; the result without the run metadata."""
    from services.cli_broker import policy_settings
    from services.cluster import Cluster, ClusterConfig, build_missing

    config = ClusterConfig(index=str(args.index), state=str(tmp / "state"),
                           run={"memory": {"state_dir": str(tmp / "memory")}},
                           broker={**policy_settings(policy), "seed": str(args.seed)})
    build_missing(config)
    cluster = Cluster(config)
    try:
        address = cluster.start(broker_port=0)
        start = time.perf_counter()
        names, quotas, propensity, degraded = run_searches(address, args.query, parse_options(args.context,
                                                           scoped=False), args.searches, args.budget_ms)
        seconds = time.perf_counter() - start
    finally:
        cluster.stop()
    if len(set(names)) != 1:
        raise RuntimeError(f"the broker reported different strategy lists: {sorted(set(names))}")
    space = AllocationSpace(strategies=names[0], levels=policy.levels, budget=policy.budget)
    allocation = np.array([space.index_of(q) for q in quotas])
    rows = calibration(allocation, propensity, min_count=DEFAULT_MIN_COUNT, max_z=DEFAULT_MAX_Z)
    return {"strategies": list(names[0]), "rows": [_row_json(r, space) for r in rows],
            "searches": args.searches, "distinct_allocations": len(set(allocation.tolist())),
            "checked": len(rows), "calibrated": sum(r.calibrated for r in rows),
            "searches_checked": sum(r.count for r in rows), "degraded": degraded,
            "seconds": round(seconds, 2), "searches_per_s": round(args.searches / seconds, 1)}


def _row_json(row: CalibrationRow, space: AllocationSpace) -> dict[str, Any]:
    return {"quotas": list(space.quotas(row.allocation)), "count": row.count, "frequency": row.frequency,
            "mean_propensity": row.mean_propensity, "se": row.se, "z": row.z, "calibrated": row.calibrated}


def report(result: dict[str, Any]) -> None:
    """Print the table, the totals and the run metadata."""
    header = ["quotas (" + ", ".join(result["strategies"]) + ")", "count", "frequency", "mean propensity",
              "SE", "|diff|/SE", f"<= {DEFAULT_MAX_Z:g} SE"]
    print_table([["/".join(map(str, r["quotas"])), r["count"], r["frequency"], r["mean_propensity"], r["se"],
                  f"{r['z']:.2f}", "calibrated" if r["calibrated"] else "NOT calibrated"] for r in result["rows"]],
                header)
    run = result["run"]
    print(f"{result['searches']} searches of {run['query']!r} ({', '.join(run['context']) or 'no context'}), "
          f"policy {run['policy']}: {result['distinct_allocations']} allocations chosen, {result['checked']} "
          f"chosen >= {DEFAULT_MIN_COUNT} times ({result['searches_checked']} searches), {result['calibrated']} of "
          f"them calibrated; {result['degraded']} degraded; {result['searches_per_s']} searches/s")
    print(f"commit {run['commit']}, {run['machine']}, {run['cpus']} CPUs, Python {run['python']}, "
          f"index {run['index']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--searches", type=int, default=DEFAULT_SEARCHES)
    parser.add_argument("--query", default=DEFAULT_QUERY)
    parser.add_argument("--context", nargs="*", default=list(DEFAULT_CONTEXT), metavar="KEY=VALUE",
                        help="the search context (default: %(default)s)")
    parser.add_argument("--index", type=Path, default=Path("indexes/demo"),
                        help="index of the bundled catalog; missing components are built (default: %(default)s)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="policy settings, as `ltrr broker --set` takes them (default: PolicyConfig's)")
    parser.add_argument("--seed", type=int, default=0, help="the broker's seed")
    parser.add_argument("--budget-ms", type=int, default=DEFAULT_BUDGET_MS)
    parser.add_argument("--json", type=Path, help="write the result to this file")
    args = parser.parse_args(argv)
    if args.searches < DEFAULT_MIN_COUNT:
        parser.error(f"--searches must be >= {DEFAULT_MIN_COUNT}, but got {args.searches}")
    from services.cli_broker import policy_config_from_settings

    policy = policy_config_from_settings(parse_options(args.set, scoped=False))
    with tempfile.TemporaryDirectory(prefix="ltrr-propensity-") as tmp:
        result = measure(args, policy, Path(tmp))
    result["run"] = {**run_info(threads=1), "query": args.query, "context": args.context,
                     "policy": policy.kind.value, "settings": args.set, "index": str(args.index),
                     "budget_ms": args.budget_ms, "seed": args.seed}
    report(result)
    write_json(args.json, result)
    return 0 if result["calibrated"] == result["checked"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
