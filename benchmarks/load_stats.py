"""The arithmetic of the open-loop load benchmark (benchmarks.load): arrival schedules, what one
offered rate measured, and capacity. Pure functions over arrays; no gRPC, no clock.

Percentiles are nearest-rank: p99 is a latency some request really saw, the smallest x with at
least 99% of the answers at or below it, as wrk2 and HdrHistogram report.
"""

from __future__ import annotations

import enum
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

OK = "OK"
SHED = "RESOURCE_EXHAUSTED"
HANG = "HANG"  # no answer at all by the client deadline plus its grace
PERCENTILES = (("p50_ms", 50.0), ("p90_ms", 90.0), ("p99_ms", 99.0), ("p999_ms", 99.9))
DEFAULT_MAX_ERROR_SHARE = 0.01
# The p99 ratio's bootstrap (p99_ratio_interval): blocks of this much schedule keep a burst of
# slow answers together, as one stall of a process makes them; resamples as ltrr's OPE intervals.
DEFAULT_BLOCK_S = 1.0
DEFAULT_RESAMPLES = 2000


class Arrivals(enum.Enum):
    """POISSON: exponential gaps of mean 1/rate (independent users); CONSTANT: gaps of exactly 1/rate."""

    POISSON = "poisson"
    CONSTANT = "constant"


def arrival_offsets(rate: float, duration_s: float, arrivals: Arrivals, seed: int = 0) -> np.ndarray:
    """float64 (N,), ascending, in [0, duration_s): when each request of a step is due, in seconds
    from the step's start. Fixed before the step starts, whatever the server does (open loop)."""
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"`rate` must be finite and > 0, but got {rate}")
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"`duration_s` must be finite and > 0, but got {duration_s}")
    if arrivals is Arrivals.CONSTANT:
        return np.arange(math.ceil(rate * duration_s), dtype=np.float64) / rate
    rng = np.random.default_rng(seed)
    n = math.ceil(rate * duration_s * 1.2 + 10 * math.sqrt(rate * duration_s) + 10)  # enough gaps, almost surely
    times = np.cumsum(rng.exponential(1.0 / rate, size=n))
    while times[-1] < duration_s:  # only for a vanishingly rare short draw
        times = np.concatenate([times, times[-1] + np.cumsum(rng.exponential(1.0 / rate, size=n))])
    return times[times < duration_s]


@dataclass(frozen=True, kw_only=True)
class StepRecord:
    """Every request of one step, in schedule order. scheduled_s: float64 (N,), due time from the
    step's start; latency_ms: float64 (N,), completion minus the SCHEDULED send time (so the time a
    request waited for a late generator counts); lag_ms: float64 (N,), actual send minus scheduled
    send (the generator's own delay); codes: gRPC status name per request, "OK", or HANG;
    degraded: bool (N,), the answer was flagged degraded (OK answers only); feedback_sent and
    feedback_errors: Feedback calls made after some of the searches, and how many failed."""

    scheduled_s: np.ndarray
    latency_ms: np.ndarray
    lag_ms: np.ndarray
    codes: tuple[str, ...]
    degraded: np.ndarray
    feedback_sent: int = 0
    feedback_errors: int = 0

    def __post_init__(self) -> None:
        n = len(self.codes)
        for name in ("scheduled_s", "latency_ms", "lag_ms", "degraded"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"`{name}` must have shape ({n},), one entry per code, but got "
                                 f"{getattr(self, name).shape}")

    @property
    def ok(self) -> np.ndarray:
        """bool (N,): the request was answered OK."""
        return np.array([c == OK for c in self.codes], dtype=bool)


def nearest_rank(ordered: np.ndarray, q: float) -> float:
    """The `q` percentile of `ordered` (ascending, not empty), nearest rank: the value at rank
    ceil(q n / 100), rounded first so that 99.9% of 1000 is rank 999, not 1000 by float error."""
    return float(ordered[max(math.ceil(round(q * ordered.size / 100, 9)), 1) - 1])


def percentiles(latency_ms: np.ndarray) -> dict[str, float | None]:
    """p50/p90/p99/p99.9 (nearest rank) and max of `latency_ms` (float64), None when empty."""
    if latency_ms.size == 0:
        return {**{name: None for name, _ in PERCENTILES}, "max_ms": None}
    ordered = np.sort(latency_ms)
    out: dict[str, float | None] = {name: round(nearest_rank(ordered, q), 3) for name, q in PERCENTILES}
    out["max_ms"] = round(float(ordered[-1]), 3)
    return out


def summarize(record: StepRecord, rate: float, duration_s: float) -> dict[str, Any]:
    """One row of the report for a step offered `rate` searches/s over `duration_s` seconds:
    achieved throughput (OK answers per second), client latency percentiles of the OK answers,
    errors by status, shed (RESOURCE_EXHAUSTED) count, degraded share of the OK answers, error
    share (every non-OK over all sent), hangs and the generator's own lag."""
    ok = record.ok
    n, n_ok = len(record.codes), int(ok.sum())
    errors = Counter(c for c in record.codes if c != OK)
    lag = percentiles(record.lag_ms)
    return {"offered_rate": rate, "duration_s": duration_s, "sent": n, "ok": n_ok,
            "throughput": round(n_ok / duration_s, 2), **percentiles(record.latency_ms[ok]),
            "errors": dict(sorted(errors.items())), "shed": errors.get(SHED, 0), "hangs": errors.get(HANG, 0),
            "error_share": round((n - n_ok) / n, 4) if n else 0.0,
            "degraded_share": round(float(record.degraded[ok].mean()), 4) if n_ok else 0.0,
            "lag_p99_ms": lag["p99_ms"], "lag_max_ms": lag["max_ms"],
            "feedback_sent": record.feedback_sent, "feedback_errors": record.feedback_errors}


def passes(row: Mapping[str, Any], budget_ms: float, max_error_share: float = DEFAULT_MAX_ERROR_SHARE) -> bool:
    """The row's p99 (OK answers) is within `budget_ms` and at most `max_error_share` of its requests failed."""
    p99 = row.get("p99_ms")
    return p99 is not None and p99 <= budget_ms and row["error_share"] <= max_error_share


def capacity(rows: Iterable[Mapping[str, Any]], budget_ms: float,
             max_error_share: float = DEFAULT_MAX_ERROR_SHARE) -> float:
    """The highest offered rate whose row `passes` (0.0 when none does). A lower rate that failed
    does not cap it: on a shared machine one latency spike fails a low rate by chance, while a rate
    past the knee fails every time (its queue grows); `failed_below` lists such rates."""
    passing = [float(r["offered_rate"]) for r in rows if passes(r, budget_ms, max_error_share)]
    return max(passing, default=0.0)


def failed_below(rows: Iterable[Mapping[str, Any]], budget_ms: float,
                 max_error_share: float = DEFAULT_MAX_ERROR_SHARE) -> list[float]:
    """The offered rates under `capacity` that did not pass: noise to look at, ascending."""
    rows = list(rows)
    cap = capacity(rows, budget_ms, max_error_share)
    return sorted(float(r["offered_rate"]) for r in rows
                  if r["offered_rate"] < cap and not passes(r, budget_ms, max_error_share))


def should_stop(row: Mapping[str, Any], budget_ms: float, *, far: float = 5.0, max_error_share: float = 0.5) -> bool:
    """Stop a target's sweep: its p99 is more than `far` times the budget, or more than
    `max_error_share` of its requests failed (higher rates can only be worse)."""
    p99 = row.get("p99_ms")
    return p99 is None or p99 > far * budget_ms or row["error_share"] > max_error_share


def goodput(row: Mapping[str, Any], capacity_rate: float) -> dict[str, Any]:
    """The overload verdict of a step offered more than capacity: goodput_ratio (OK answers per
    second over `capacity_rate`), accepted_p99_ms, shed count, other_errors (neither OK nor
    RESOURCE_EXHAUSTED, hangs included) and hangs."""
    errors: Mapping[str, int] = row["errors"]
    return {"offered_rate": row["offered_rate"], "throughput": row["throughput"],
            "goodput_ratio": round(row["throughput"] / capacity_rate, 4) if capacity_rate > 0 else None,
            "accepted_p99_ms": row["p99_ms"], "shed": row["shed"],
            "other_errors": sum(v for k, v in errors.items() if k != SHED), "hangs": row["hangs"]}


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b to 3 places; None when either is missing (a step without an OK answer) or b is 0."""
    return round(a / b, 3) if a is not None and b else None


def rate_list(text: str) -> list[float]:
    """"20,40,80" -> [20.0, 40.0, 80.0], ascending and distinct; ValueError for a non-positive rate."""
    rates = sorted({float(v) for v in text.split(",") if v.strip()})
    if not rates or rates[0] <= 0:
        raise ValueError(f"`rates` must be positive numbers, but got {text!r}")
    return rates


def _blocks(records: Sequence[StepRecord], block_s: float) -> list[np.ndarray]:
    """The OK latencies of `records`, cut per step into consecutive blocks of `block_s` seconds of
    schedule (a step's last, shorter block included); empty blocks left out."""
    out: list[np.ndarray] = []
    for r in records:
        ok = r.ok
        which = np.floor(r.scheduled_s[ok] / block_s).astype(np.int64)
        lat = r.latency_ms[ok]
        out.extend(lat[which == b] for b in np.unique(which))
    return out


def _resampled_p99(blocks: list[np.ndarray], rng: np.random.Generator, resamples: int) -> np.ndarray:
    """float64 (resamples,): the nearest-rank p99 of `blocks` drawn with replacement, as many as there are."""
    out = np.empty(resamples)
    for i in range(resamples):
        pick = rng.integers(0, len(blocks), size=len(blocks))
        out[i] = nearest_rank(np.sort(np.concatenate([blocks[j] for j in pick])), 99.0)
    return out


def p99_ratio_interval(base: Sequence[StepRecord], other: Sequence[StepRecord], *, block_s: float = DEFAULT_BLOCK_S,
                       resamples: int = DEFAULT_RESAMPLES, level: float = 0.95,
                       seed: int = 0) -> tuple[float, float] | None:
    """A `level` interval of p99(other) / p99(base), each side the OK answers of its steps pooled
    (benchmarks.live's ratios), by a block bootstrap: each step is cut into blocks of `block_s`
    seconds of its schedule, each side's blocks are drawn with replacement, as many as it has, and
    the ratio of the two p99s is taken per resample; the interval is the ratio's (1 - level) / 2
    and (1 + level) / 2 quantiles (percentile method), rounded to 3 places. Blocks, not single
    answers, because slow answers come in bursts (a process stalled for 30 ms slows every search
    it holds): resampling answers one by one would spread a burst over every resample and give
    too narrow an interval. None when either side has no OK answer."""
    if not block_s > 0 or resamples < 1 or not 0 < level < 1:
        raise ValueError(f"`block_s` must be > 0, `resamples` >= 1 and `level` in (0, 1), but got {block_s}, "
                         f"{resamples}, {level}")
    base_blocks, other_blocks = _blocks(base, block_s), _blocks(other, block_s)
    if not base_blocks or not other_blocks:
        return None
    rng = np.random.default_rng(seed)
    ratios = _resampled_p99(other_blocks, rng, resamples) / _resampled_p99(base_blocks, rng, resamples)
    lo, hi = np.quantile(ratios, [(1 - level) / 2, (1 + level) / 2])
    return round(float(lo), 3), round(float(hi), 3)
