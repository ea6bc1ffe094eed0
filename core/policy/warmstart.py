"""Warm start: teach a BanditPolicy offline from the decision log of another plan (the one it replaces).

What the policy learns from (core.policy.policies): per search, the per-strategy outcomes (the
rank of the acted-on entity in each answered list, and how full each list was). A strategy asked
for q candidates that ranked the entity at r shows whether it was in its top-q' for every level
q' <= q, so one logged search shows the hit of every allocation its chosen one dominates (the
joint arms) and the fill of every level up to each quota (the fill arms). These are facts about
the strategies, whichever plan chose the quotas. The scalar reward teaches the policy nothing its
outcomes do not (BanditPolicy.learn), so nothing here regresses on it.

Which searches show an arm is not random, though: allocation b's arm is shown by the searches
whose chosen allocation a dominates b, and a logging policy that chooses by context (an older
bandit; a rule on device or time, features the hit model ignores) shows each arm on a skewed mix
of contexts. A linear arm fits the mix it is shown, so the estimate of b drifts towards the
contexts where the logger liked allocations above b. The weighting that undoes this:

    w_i = min(max_weight, 1 / p_i)          p_i: the logged propensity of search i's allocation
    weight of search i in arm b = w_i * n_b / sum_{j shows b} w_j     (self-normalised per arm)

Why it works: search i shows b exactly when its allocation a_i dominates b, so the expected
weighted count of b's observations at context x is sum_{a >= b} pi_0(a | x) / pi_0(a | x) =
K_b(x), the number of allocations above b the logger could choose at x. A logger with full
support (every ltrr bandit: the exploration floor) has K_b constant, so the weighted sample has
the contexts' own distribution (inverse propensity weighting for data missing at random, Horvitz
and Thompson 1952), and self-normalising each arm (Hajek) removes K_b and keeps the arm's
evidence at the number of searches that showed it, so the posterior is as sure as that many
observations make it, no surer.
Bias: (1) clipping at max_weight pulls the estimate back towards the logger's mix, for the
searches whose propensity is below 1 / max_weight (an ltrr floor draw: 0.01 / A); (2)
self-normalisation is biased by O(1 / n_b); (3) with a logger without full support (a greedy rule
with no floor) K_b varies with x and some contexts never show b: no weighting can recover those.
A static plan logs p = 1 everywhere: every weight is 1, and the warm start is the policy's own
`update` on every logged search (the weighting changes nothing; nothing needs changing).

Not learned: the strategies' latencies (the log holds only the slowest called one's per search);
the live broker measures them from its first searches (BanditPolicy.observe_latency).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.policy.policies import BanditPolicy, Outcome, Revealed

DEFAULT_MAX_WEIGHT = 10.0


@dataclass(frozen=True, kw_only=True)
class WarmStartConfig:
    """max_weight: the largest inverse-propensity weight one logged search gets, >= 1 (module
    docstring). Default 10: weights then lie in [1, 10], so each arm's effective sample size,
    (sum w)^2 / sum w^2, stays above 4 M / (1 + M)^2 = a third of the searches that show it; a
    floor draw of the default thompson (p ~ 0.01 / 53) would otherwise weigh 5,300 searches and
    one such search would decide an arm. Not tuned."""

    max_weight: float = DEFAULT_MAX_WEIGHT

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_weight) and self.max_weight >= 1.0):
            raise ValueError(f"`max_weight` must be finite and >= 1, but got {self.max_weight}")


@dataclass(frozen=True, slots=True)
class LoggedSearch:
    """One logged search that got feedback, in the columns of the policy it teaches.
    features: float64 (dim,), the context the logger decided on; outcomes: one per strategy of the
    policy (core.reward.strategy_outcomes; a strategy the logger did not have is not answered);
    propensity: the logger's probability of its allocation, in (0, 1] (1 for a static plan)."""

    features: np.ndarray
    outcomes: tuple[Outcome, ...]
    propensity: float

    def __post_init__(self) -> None:
        if not 0.0 < self.propensity <= 1.0:
            raise ValueError(f"`propensity` must be in (0, 1], but got {self.propensity}")


@dataclass(frozen=True, slots=True)
class WarmStartReport:
    """searches: logged searches learned; clipped: how many had a weight cut to max_weight;
    effective_share: (sum w)^2 / (n sum w^2) of the clipped weights over all searches, in (0, 1]
    (1: all equal, as for a static logger)."""

    searches: int
    clipped: int
    effective_share: float


def importance_weights(propensities: np.ndarray, max_weight: float) -> np.ndarray:
    """float64 (n,): min(max_weight, 1 / p) per logged search (module docstring)."""
    p = np.asarray(propensities, dtype=np.float64)
    if p.size and not ((p > 0) & (p <= 1)).all():
        raise ValueError(f"`propensities` must be in (0, 1], but got values from {p.min()} to {p.max()}")
    return np.minimum(max_weight, 1.0 / p)


def _per_arm_scale(n_arms: int, arms: Sequence[np.ndarray], w: np.ndarray) -> np.ndarray:
    """float64 (n_arms,): n_b / sum_{i shows b} w_i (1 for an arm nothing shows)."""
    count, total = np.zeros(n_arms), np.zeros(n_arms)
    for a, wi in zip(arms, w.tolist(), strict=True):
        count[a] += 1.0  # the arms of one search are distinct
        total[a] += wi
    return np.divide(count, total, out=np.ones(n_arms), where=total > 0)


def warm_start(policy: BanditPolicy, searches: Sequence[LoggedSearch],
               config: WarmStartConfig | None = None) -> WarmStartReport:
    """Teach `policy` every logged search, each observation weighted as the module docstring says.
    The result does not depend on the searches' order (the arms' posteriors are sums)."""
    config = config or WarmStartConfig()
    revealed: list[Revealed] = [policy.reveal(s.outcomes) for s in searches]
    p = np.array([s.propensity for s in searches], dtype=np.float64)
    w = importance_weights(p, config.max_weight)
    hit_scale = _per_arm_scale(policy.arms.n.size, [r.hit_arms for r in revealed], w)
    fill_scale = _per_arm_scale(policy.fill.n.size, [r.fill_arms for r in revealed], w)
    for s, r, wi in zip(searches, revealed, w.tolist(), strict=True):
        policy.learn_revealed(s.features, r, wi * hit_scale[r.hit_arms], wi * fill_scale[r.fill_arms])
    share = float(w.sum() ** 2 / (w.size * (w**2).sum())) if w.size else 1.0
    return WarmStartReport(searches=len(searches), clipped=int((p * config.max_weight < 1.0).sum()),
                           effective_share=share)
