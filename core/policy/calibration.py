"""Calibration of logged propensities: is each allocation chosen as often as its propensity says?

Take n decisions drawn independently on one fixed context by a policy that does not learn between
them. If the logged propensity of a decision that chose allocation a is, in expectation given
that choice, P(a) (exact propensities trivially; Thompson sampling's redraw estimate because it
is independent of the choice), then a's empirical frequency f = count / n and the mean logged
propensity m over the decisions that chose a estimate the same P(a). The check: |f - m| within
`max_z` standard errors of the difference,

    SE = sqrt(f (1 - f) / n + s^2 / count)

where s^2 is the sample variance of the logged propensities over the decisions that chose a. For
exact propensities s = 0 and SE is the binomial SE of f. An estimated propensity adds its own
noise: Thompson sampling's from K redraws has variance about p (1 - p) / K, which is 1 / (K p)
times the variance of f (a third of it at p = 0.05, K = 64); leaving it out would make the check
stricter than `max_z` says for rarely chosen allocations.

Only allocations chosen at least `min_count` times are checked: below that the normal
approximation behind "3 SE" is poor and f is too coarse to say anything about small P(a).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_MIN_COUNT = 50  # choices of an allocation before its frequency is checked (normal approximation)
DEFAULT_MAX_Z = 3.0  # |f - mean propensity| / SE allowed: a false alarm rate of 0.27% per allocation


@dataclass(frozen=True, kw_only=True)
class CalibrationRow:
    """One allocation: chosen `count` times out of `total` decisions; `frequency` = count / total;
    `mean_propensity`: mean logged propensity over the decisions that chose it; `se`: the standard
    error of their difference (module docstring); `z` = |frequency - mean_propensity| / se (0 when
    the difference is 0 up to rounding, inf when se is 0 and it is not); `calibrated`: z <= the
    max_z it was checked at."""

    allocation: int
    count: int
    total: int
    frequency: float
    mean_propensity: float
    se: float
    z: float
    calibrated: bool


def calibration(allocations: Sequence[int] | np.ndarray, propensities: Sequence[float] | np.ndarray, *,
                min_count: int = DEFAULT_MIN_COUNT, max_z: float = DEFAULT_MAX_Z) -> list[CalibrationRow]:
    """The check of the module docstring for every allocation chosen >= min_count times, most
    chosen first (ties by allocation). allocations: int (n,), the chosen allocation of each
    decision; propensities: float (n,) in (0, 1], its logged propensity."""
    chosen = np.asarray(allocations, dtype=np.int64)
    logged = np.asarray(propensities, dtype=np.float64)
    if chosen.ndim != 1 or chosen.shape != logged.shape or chosen.size == 0:
        raise ValueError(f"`allocations` and `propensities` must be non-empty and of one length, but got "
                         f"shapes {chosen.shape} and {logged.shape}")
    if chosen.min() < 0 or not ((logged > 0) & (logged <= 1)).all():
        raise ValueError("`allocations` must be >= 0 and `propensities` in (0, 1], but got allocations from "
                         f"{chosen.min()} and propensities in [{logged.min()}, {logged.max()}]")
    if min_count < 1 or not max_z > 0:
        raise ValueError(f"`min_count` must be >= 1 and `max_z` > 0, but got {min_count} and {max_z}")
    n = chosen.size
    counts = np.bincount(chosen)
    means = np.bincount(chosen, weights=logged) / np.maximum(counts, 1)
    # two passes, so constant (exact) propensities get a spread of 0 up to rounding, not E[p^2] - E[p]^2's noise
    spreads = np.bincount(chosen, weights=(logged - means[chosen]) ** 2) / np.maximum(counts - 1, 1)
    rows = []
    for a in sorted(np.flatnonzero(counts >= min_count).tolist(), key=lambda a: (-counts[a], a)):
        f, mean = float(counts[a] / n), float(means[a])
        se = math.sqrt(f * (1.0 - f) / n + float(spreads[a]) / int(counts[a]))
        diff = abs(f - mean)
        z = 0.0 if diff <= 1e-12 else diff / se if se > 0 else math.inf  # 1e-12: rounding in the mean
        rows.append(CalibrationRow(allocation=a, count=int(counts[a]), total=n, frequency=float(f),
                                   mean_propensity=mean, se=se, z=z, calibrated=bool(z <= max_z)))
    return rows
