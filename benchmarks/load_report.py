"""What benchmarks.load prints and draws: the per-rate table, the capacity summary with its
ratios, and the plot of client latency percentiles against offered load."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import print_table

LABELS = {"cluster": "ltrr cluster", "noop": "no-op shards (floor)", "echo": "gRPC echo fan-out"}
COLUMNS = (("offered_rate", "offered/s"), ("throughput", "ok/s"), ("p50_ms", "p50 ms"), ("p90_ms", "p90 ms"),
           ("p99_ms", "p99 ms"), ("p999_ms", "p99.9 ms"), ("max_ms", "max ms"), ("error_share", "errors"),
           ("shed", "shed"), ("degraded_share", "degraded"), ("lag_p99_ms", "gen lag p99"))
LAG_WARN = 0.1  # generator lag p99 above this share of the budget is reported
LINES = (("p50_ms", ":", "p50"), ("p99_ms", "-", "p99"), ("p999_ms", "--", "p99.9"))


def _cell(value: Any) -> str:
    """None as "-", integers as they are, shares (<= 1) with 3 decimals, other numbers with 1."""
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.3f}" if abs(value) <= 1 else f"{value:.1f}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def print_rows(rows: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
    """One line per target and offered rate (floats under 10 with 4 decimals, larger ones rounded)."""
    table = [[LABELS.get(target, target), *(_cell(row.get(key)) for key, _ in COLUMNS)]
             for target, target_rows in rows.items() for row in target_rows]
    if table:
        print_table(table, ["target", *(label for _, label in COLUMNS)])


def print_summary(result: Mapping[str, Any]) -> None:
    """Capacities, their ratios, the overload verdict and budget 50's tail, one line each."""
    budget, bound = result["budget_ms"], result.get("capacity_lower_bound", {})
    for key, target in (("capacity", "cluster"), ("floor_capacity", "noop"), ("echo_capacity", "echo")):
        if result.get(key) is not None:
            more = "+ (the highest rate swept passed: a lower bound)" if bound.get(target) else ""
            noise = result.get("failed_below_capacity", {}).get(target)
            below = f"; lower rates that failed: {', '.join(f'{r:g}' for r in noise)}" if noise else ""
            print(f"{LABELS[target]}: capacity {result[key]:.0f}{more} searches/s at p99 <= {budget} ms{below}")
    for name, value in result.get("ratios", {}).items():
        if value is not None:
            print(f"capacity / {name}: {value:.3f}")
    if over := result.get("overload"):
        print(f"overload at {over['offered_rate']:.0f}/s: goodput {over['goodput_ratio']} of capacity, accepted p99 "
              f"{over['accepted_p99_ms']} ms, shed {over['shed']}, other errors {over['other_errors']}, "
              f"hangs {over['hangs']}")
    late = [f"{LABELS.get(t, t)} {r['offered_rate']:g}/s ({r['lag_p99_ms']} ms)" for t, rows in result["rows"].items()
            for r in rows if (r.get("lag_p99_ms") or 0) > LAG_WARN * budget]
    if late:
        print(f"generator lag p99 above {LAG_WARN:.0%} of the budget (latencies include it): {', '.join(late)}")
    if b50 := result.get("budget50"):
        print(f"budget_ms 50 at {b50['offered_rate']:.0f}/s: p99.9 {b50['p999_ms']} ms (p99 {b50['p99_ms']} ms)")


def plot(rows: Mapping[str, Sequence[Mapping[str, Any]]], path: Path, budget_ms: float, title: str = "") -> None:
    """Client latency p50 (dotted), p99 (solid), p99.9 (dashed) against offered load, one colour per
    target, log-log, with the budget as a grey line; PNG at `path`."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for (target, target_rows), colour in zip(rows.items(), ("C0", "C1", "C2", "C3"), strict=False):
        for key, style, name in LINES:
            points = [(r["offered_rate"], r[key]) for r in target_rows if r.get(key) is not None]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, style, marker="o", markersize=3, color=colour,
                        label=f"{LABELS.get(target, target)} {name}")
    ax.axhline(budget_ms, color="grey", linewidth=0.8)
    ax.set(xscale="log", yscale="log", xlabel="offered load (searches/s, open loop)",
           ylabel="client latency from scheduled send (ms)", title=title or "Search latency against offered load")
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xticks(sorted({r["offered_rate"] for target_rows in rows.values() for r in target_rows}))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=3, loc="upper left")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")
