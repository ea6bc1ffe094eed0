"""Off-policy evaluation: the value of a candidate policy estimated from logged bandit feedback.

Every estimator here is a ratio of per-round sums, V = sum(num_t) / sum(den_t), over the logged
rounds t = 1..n with importance weight w_t = pi_e(a_t | x_t, k_t) / pi_b(a_t | x_t, k_t), where a_t is
the logged action, k_t its position (slot) and pi_b(...) the logged propensity `pscore`:

- IPS (inverse propensity scoring; Horvitz & Thompson, "A Generalization of Sampling Without
  Replacement from a Finite Universe", JASA 1952): num_t = w_t r_t, den_t = 1. Unbiased when the
  propensities are right and pi_b > 0 wherever pi_e > 0; high variance when the policies differ.
- SNIPS (self-normalized IPS; Swaminathan & Joachims, "The Self-Normalized Estimator for
  Counterfactual Learning", NeurIPS 2015): num_t = w_t r_t, den_t = w_t. Biased but consistent,
  bounded by the reward range, and invariant to a common scale error in the propensities.
- DR (doubly robust; Dudík, Langford & Li, "Doubly Robust Policy Evaluation and Learning", ICML
  2011): num_t = q(x_t, pi_e) + w_t (r_t - q(x_t, a_t)), den_t = 1, with q a reward model supplied by
  the caller and q(x, pi_e) = sum_a pi_e(a | x, k_t) q(x, a, k_t). Unbiased if either the
  propensities or the reward model are right.

Conventions follow Open Bandit Pipeline (obp 0.4.1, Saito et al., arXiv:2008.07146), and the point
estimates agree with obp's `InverseProbabilityWeighting`, `SelfNormalizedInverseProbabilityWeighting`
and `DoublyRobust` (tests/core/test_ope.py checks this to 1e-9 on the Open Bandit Dataset):
`action_dist` is pi_e with shape (n_rounds, n_actions, len_list) and sums to one over actions; a
round's weight reads the slice at its logged position.

Weight clipping (`max_weight`, off by default, as in obp) replaces w_t by min(w_t, max_weight)
(truncated importance sampling, Ionides, JCGS 2008; obp >= 0.5 calls it `lambda_`). It trades
bias (downwards, for non-negative rewards) for variance.

Pure NumPy; the event log is read elsewhere and handed over as a `LoggedFeedback`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

DEFAULT_ALPHA = 0.05
DEFAULT_N_BOOTSTRAP = 2000
DEFAULT_SEED = 0
# How far sum_a pi_e(a | x, k) may be from 1: numpy.allclose's defaults, the tolerance obp uses.
_SUM_RTOL = 1e-5
_SUM_ATOL = 1e-8
# Bootstrap resamples are drawn in blocks of about this many indices, to bound memory.
_BOOTSTRAP_BLOCK = 1 << 21


def _vector(name: str, value: npt.ArrayLike, *, integer: bool) -> np.ndarray:
    """`value` as a read-only 1-D int64 (integer=True) or float64 copy; ValueError naming `name`."""
    arr = np.asarray(value)
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must be 1-dimensional, but got shape {arr.shape}")
    if integer and arr.size and not np.issubdtype(arr.dtype, np.integer):  # `[]` is float64: allow it
        raise ValueError(f"`{name}` must hold integers, but got dtype {arr.dtype}")
    real = (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_) and not np.iscomplexobj(arr)
    if not integer and not real:
        raise ValueError(f"`{name}` must hold real numbers, but got dtype {arr.dtype}")
    out = arr.astype(np.int64 if integer else np.float64)  # a copy: callers may not mutate ours
    out.setflags(write=False)
    return out


def _first_bad(name: str, bad: np.ndarray, values: np.ndarray, expectation: str) -> None:
    """Raise ValueError naming `name` and the first index where `bad` is true, if any."""
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"`{name}` must {expectation}, but got {values[i]} at index {i}")


@dataclass(frozen=True, kw_only=True, eq=False)  # eq=False: `==` on array fields is ambiguous
class LoggedFeedback:
    """Logged bandit feedback: one row per decision (round) of the logging policy pi_b.

    reward: ndarray, shape (n_rounds,), stored as float64
        Observed reward r_t of the logged action; finite.
    action: ndarray, shape (n_rounds,), any integer dtype, stored as int64
        Logged action a_t, >= 0 (checked against `action_dist` when estimating).
    pscore: ndarray, shape (n_rounds,), stored as float64
        Propensity pi_b(a_t | x_t, k_t) of the logged action at its position, in (0, 1].
    position: ndarray, shape (n_rounds,), any integer dtype, stored as int64, or None
        Slot k_t >= 0 the action was shown in (0-based); None means a single slot (len_list 1).

    The arrays are stored as read-only copies (lists are converted too). n_rounds must be >= 1.
    """

    reward: np.ndarray
    action: np.ndarray
    pscore: np.ndarray
    position: np.ndarray | None = None

    def __post_init__(self) -> None:
        reward = _vector("reward", self.reward, integer=False)
        action = _vector("action", self.action, integer=True)
        pscore = _vector("pscore", self.pscore, integer=False)
        position = None if self.position is None else _vector("position", self.position, integer=True)
        n = reward.shape[0]
        if n < 1:
            raise ValueError("`reward` must hold at least one round, but got 0")
        for name, arr in (("action", action), ("pscore", pscore), ("position", position)):
            if arr is not None and arr.shape[0] != n:
                raise ValueError(f"`{name}` must have {n} values (one per round, like `reward`), "
                                 f"but got {arr.shape[0]}")
        _first_bad("reward", ~np.isfinite(reward), reward, "be finite")
        _first_bad("action", action < 0, action, "be >= 0")
        _first_bad("pscore", ~((pscore > 0) & (pscore <= 1)), pscore, "be in (0, 1]")
        if position is not None:
            _first_bad("position", position < 0, position, "be >= 0")
        object.__setattr__(self, "reward", reward)
        object.__setattr__(self, "action", action)
        object.__setattr__(self, "pscore", pscore)
        object.__setattr__(self, "position", position)

    @property
    def n_rounds(self) -> int:
        return int(self.reward.shape[0])

    def positions(self) -> np.ndarray:
        """Slot of each round, int64 shape (n_rounds,): `position`, or zeros when it is None."""
        return np.zeros(self.n_rounds, dtype=np.int64) if self.position is None else self.position


def _table(value: npt.ArrayLike, logged: LoggedFeedback) -> np.ndarray:
    """`action_dist` as float64 (n_rounds, n_actions, len_list), finite, covering every logged action and slot."""
    arr = np.asarray(value)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"`action_dist` must hold real numbers, but got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if arr.ndim != 3:
        raise ValueError(f"`action_dist` must have shape (n_rounds, n_actions, len_list), but got shape {arr.shape}")
    n_rounds, n_actions, len_list = arr.shape
    if n_rounds != logged.n_rounds:
        raise ValueError(f"`action_dist` must have {logged.n_rounds} rounds (shape[0], one per logged round), "
                         f"but got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("`action_dist` must be finite, but got NaN or infinity")
    if int(logged.action.max()) >= n_actions:
        raise ValueError(f"`action` must be < n_actions = {n_actions} (`action_dist`.shape[1]), "
                         f"but got {int(logged.action.max())}")
    if logged.position is None and len_list != 1:
        raise ValueError(f"`position` must be given when `action_dist` has len_list = {len_list} > 1 slots")
    if logged.position is not None and int(logged.position.max()) >= len_list:
        raise ValueError(f"`position` must be < len_list = {len_list} (`action_dist`.shape[2]), "
                         f"but got {int(logged.position.max())}")
    return arr


def _reward_table(value: npt.ArrayLike, shape: tuple[int, ...]) -> np.ndarray:
    """`estimated_rewards` as float64 with the (validated) shape of `action_dist`, finite."""
    arr = np.asarray(value)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"`estimated_rewards` must hold real numbers, but got dtype {arr.dtype}")
    if arr.shape != shape:
        raise ValueError(f"`estimated_rewards` must have the shape of `action_dist` {shape}, but got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("`estimated_rewards` must be finite, but got NaN or infinity")
    return arr.astype(np.float64, copy=False)


def _action_dist(logged: LoggedFeedback, action_dist: npt.ArrayLike) -> np.ndarray:
    """Validated pi_e: probabilities in [0, 1] summing to one over actions for every round and slot."""
    dist = _table(action_dist, logged)
    if ((dist < 0) | (dist > 1)).any():
        raise ValueError(f"`action_dist` must hold probabilities in [0, 1], but got values in "
                         f"[{dist.min()}, {dist.max()}]")
    sums = dist.sum(axis=1)
    if not np.allclose(sums, 1.0, rtol=_SUM_RTOL, atol=_SUM_ATOL):
        worst = float(sums.flat[np.argmax(np.abs(sums - 1.0))])
        raise ValueError(f"`action_dist` must sum to 1 over actions (axis 1) for every round and slot, "
                         f"but got a sum of {worst}")
    return dist


def _check_max_weight(max_weight: float | None) -> None:
    ok = isinstance(max_weight, numbers.Real) and not isinstance(max_weight, bool) and max_weight > 0  # NaN fails >
    if max_weight is not None and not ok:
        raise ValueError(f"`max_weight` must be > 0 or None (no clipping), but got {max_weight}")


def importance_weights(logged: LoggedFeedback, action_dist: npt.ArrayLike, *,
                       max_weight: float | None = None) -> np.ndarray:
    """w_t = pi_e(a_t | x_t, k_t) / pscore_t, clipped to at most `max_weight` when it is given.

    action_dist: array-like, shape (n_rounds, n_actions, len_list)
        pi_e, the evaluation policy's action probabilities per round and slot (can be deterministic).
    Returns float64 shape (n_rounds,), >= 0.
    """
    _check_max_weight(max_weight)
    return _weights(logged, _action_dist(logged, action_dist), max_weight)


def _weights(logged: LoggedFeedback, dist: np.ndarray, max_weight: float | None) -> np.ndarray:
    w = dist[np.arange(logged.n_rounds), logged.action, logged.positions()] / logged.pscore
    return w if max_weight is None else np.minimum(w, max_weight)


class Estimator(Enum):
    """Off-policy estimators; see the module docstring for each one's formula and paper."""

    IPS = "ips"
    SNIPS = "snips"
    DR = "dr"


# Each estimator as (num, den) per round; the estimate is sum(num) / sum(den).
_Parts = Callable[[LoggedFeedback, np.ndarray, np.ndarray, np.ndarray | None], tuple[np.ndarray, np.ndarray]]


def _ips_parts(logged: LoggedFeedback, dist: np.ndarray, w: np.ndarray,
               q: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    return w * logged.reward, np.ones_like(w)


def _snips_parts(logged: LoggedFeedback, dist: np.ndarray, w: np.ndarray,
                 q: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    if not w.sum() > 0:
        raise ValueError("`action_dist` must give probability > 0 to at least one logged action "
                         "(SNIPS divides by the sum of the importance weights), but every weight is 0")
    return w * logged.reward, w


def _dr_parts(logged: LoggedFeedback, dist: np.ndarray, w: np.ndarray,
              q: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    if q is None:
        raise ValueError("`estimated_rewards` must be given for the DR estimator, but got None")
    rows, pos = np.arange(logged.n_rounds), logged.positions()
    q_policy = (dist[rows, :, pos] * q[rows, :, pos]).sum(axis=1)  # q(x_t, pi_e) at the logged slot
    q_logged = q[rows, logged.action, pos]
    return q_policy + w * (logged.reward - q_logged), np.ones_like(w)


_PARTS: dict[Estimator, _Parts] = {
    Estimator.IPS: _ips_parts,
    Estimator.SNIPS: _snips_parts,
    Estimator.DR: _dr_parts,
}


def _parts(estimator: Estimator, logged: LoggedFeedback, action_dist: npt.ArrayLike,
           estimated_rewards: npt.ArrayLike | None, max_weight: float | None) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(estimator, Estimator):
        raise ValueError(f"`estimator` must be one of {[e.value for e in Estimator]}, but got {estimator!r}")
    if estimated_rewards is not None and estimator is not Estimator.DR:
        raise ValueError(f"`estimated_rewards` is only used by DR, but got it for {estimator.value}")
    _check_max_weight(max_weight)
    dist = _action_dist(logged, action_dist)
    w = _weights(logged, dist, max_weight)
    q = None if estimated_rewards is None else _reward_table(estimated_rewards, dist.shape)
    return _PARTS[estimator](logged, dist, w, q)


def _ratio(num: np.ndarray, den: np.ndarray) -> float:
    return float(num.sum() / den.sum())


def ips(logged: LoggedFeedback, action_dist: npt.ArrayLike, *, max_weight: float | None = None) -> float:
    """IPS estimate of pi_e's value: mean over rounds of w_t r_t (Horvitz & Thompson 1952).

    action_dist: array-like, shape (n_rounds, n_actions, len_list)
        pi_e(a | x_t, k) per round, action and slot; sums to 1 over actions.
    max_weight: clip importance weights to at most this (> 0); None (default) = no clipping.
    Equals obp's `InverseProbabilityWeighting().estimate_policy_value` when unclipped.
    """
    return _ratio(*_parts(Estimator.IPS, logged, action_dist, None, max_weight))


def snips(logged: LoggedFeedback, action_dist: npt.ArrayLike, *, max_weight: float | None = None) -> float:
    """SNIPS estimate: sum_t w_t r_t / sum_t w_t (Swaminathan & Joachims 2015).

    Arguments as for `ips`. Raises ValueError when every importance weight is 0.
    Equals obp's `SelfNormalizedInverseProbabilityWeighting().estimate_policy_value` when unclipped.
    """
    return _ratio(*_parts(Estimator.SNIPS, logged, action_dist, None, max_weight))


def dr(logged: LoggedFeedback, action_dist: npt.ArrayLike, estimated_rewards: npt.ArrayLike, *,
       max_weight: float | None = None) -> float:
    """DR estimate: mean over rounds of q(x_t, pi_e) + w_t (r_t - q(x_t, a_t)) (Dudík et al. 2011).

    estimated_rewards: array-like, shape (n_rounds, n_actions, len_list)
        q(x_t, a, k), a reward model's prediction per round, action and slot (obp's
        `estimated_rewards_by_reg_model`); fit it on other rounds than these to avoid overfitting bias.
    Other arguments as for `ips`. Equals obp's `DoublyRobust().estimate_policy_value` when unclipped.
    """
    return _ratio(*_parts(Estimator.DR, logged, action_dist, estimated_rewards, max_weight))


class IntervalMethod(Enum):
    """How `estimate_with_ci` builds its confidence interval."""

    NORMAL = "normal"  # value -/+ z_(1-alpha/2) * std(terms, ddof=1) / sqrt(n_rounds)
    BOOTSTRAP = "bootstrap"  # percentile bootstrap over rounds, re-computing the estimator per resample


@dataclass(frozen=True, kw_only=True)
class IntervalConfig:
    """Confidence interval settings.

    alpha: 1 - coverage, in (0, 1) (0.05 gives a 95% interval).
    method: NORMAL (default; deterministic, cheap) or BOOTSTRAP.
    n_bootstrap: resamples for BOOTSTRAP, >= 1 (obp uses 10,000; 2,000 is plenty for 95% bounds).
    seed: seed of numpy's default_rng for BOOTSTRAP, >= 0; the same seed gives the same interval.
    """

    alpha: float = DEFAULT_ALPHA
    method: IntervalMethod = IntervalMethod.NORMAL
    n_bootstrap: int = DEFAULT_N_BOOTSTRAP
    seed: int = DEFAULT_SEED

    def __post_init__(self) -> None:
        if not (0 < self.alpha < 1):
            raise ValueError(f"`alpha` must be in (0, 1), but got {self.alpha}")
        if not isinstance(self.method, IntervalMethod):
            raise ValueError(f"`method` must be an IntervalMethod, but got {self.method!r}")
        if isinstance(self.n_bootstrap, bool) or not isinstance(self.n_bootstrap, int) or self.n_bootstrap < 1:
            raise ValueError(f"`n_bootstrap` must be an int >= 1, but got {self.n_bootstrap!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"`seed` must be an int >= 0, but got {self.seed!r}")


@dataclass(frozen=True, kw_only=True, eq=False)
class Estimate:
    """A point estimate with its confidence interval and the per-round terms behind it.

    value: the point estimate (what `ips`, `snips` or `dr` return).
    lower, upper: the (1 - alpha) confidence interval.
    terms: float64 shape (n_rounds,), the estimator's linearization per round,
        value + (num_t - value * den_t) / mean(den): w_t r_t for IPS, the DR term for DR, and
        value + w_t (r_t - value) / mean(w) for SNIPS (its influence function, so that
        std(terms) / sqrt(n) is the delta-method standard error; obp's SNIPS round rewards,
        w_t r_t / mean(w), have the same mean but ignore the randomness of the denominator).
        mean(terms) == value up to rounding; use them for your own intervals or paired tests.
    """

    estimator: Estimator
    value: float
    lower: float
    upper: float
    alpha: float
    method: IntervalMethod
    terms: np.ndarray = field(repr=False)


def _normal_interval(value: float, terms: np.ndarray, alpha: float) -> tuple[float, float]:
    half = NormalDist().inv_cdf(1 - alpha / 2) * float(terms.std(ddof=1)) / math.sqrt(terms.shape[0])
    return value - half, value + half


def _bootstrap_interval(num: np.ndarray, den: np.ndarray, config: IntervalConfig) -> tuple[float, float]:
    n = num.shape[0]
    rng = np.random.default_rng(config.seed)
    block = max(1, _BOOTSTRAP_BLOCK // n)
    stats = np.empty(config.n_bootstrap)
    for start in range(0, config.n_bootstrap, block):
        idx = rng.integers(0, n, size=(min(block, config.n_bootstrap - start), n))
        top, bottom = num[idx].sum(axis=1), den[idx].sum(axis=1)
        # A SNIPS resample can hold only zero weights: its ratio is undefined and left out (NaN).
        stats[start:start + idx.shape[0]] = np.divide(top, bottom, out=np.full_like(top, np.nan), where=bottom > 0)
    lower, upper = np.nanpercentile(stats, [100 * config.alpha / 2, 100 * (1 - config.alpha / 2)])
    return float(lower), float(upper)


def estimate_with_ci(estimator: Estimator, logged: LoggedFeedback, action_dist: npt.ArrayLike, *,
                     estimated_rewards: npt.ArrayLike | None = None, max_weight: float | None = None,
                     interval: IntervalConfig | None = None) -> Estimate:
    """Point estimate, (1 - alpha) confidence interval and per-round terms of one estimator.

    estimator: Estimator.IPS, SNIPS or DR; estimated_rewards is required for DR and refused otherwise.
    action_dist, estimated_rewards: array-like, shape (n_rounds, n_actions, len_list), as for `dr`.
    interval: IntervalConfig() by default, the normal approximation from the per-round terms
        (central limit theorem; the delta method for SNIPS). IntervalMethod.BOOTSTRAP instead
        resamples rounds with replacement, recomputes the estimator (the full ratio for SNIPS) on
        each resample and takes the alpha/2 and 1 - alpha/2 percentiles; it is seeded, so repeatable.
    Needs n_rounds >= 2. With rare rewards and few rounds, both intervals can be too narrow.
    """
    config = IntervalConfig() if interval is None else interval
    if logged.n_rounds < 2:
        raise ValueError(f"`logged` must hold at least 2 rounds for a confidence interval, but got {logged.n_rounds}")
    num, den = _parts(estimator, logged, action_dist, estimated_rewards, max_weight)
    value = _ratio(num, den)
    terms = value + (num - value * den) / den.mean()
    terms.setflags(write=False)
    if config.method is IntervalMethod.BOOTSTRAP:
        lower, upper = _bootstrap_interval(num, den, config)
    else:
        lower, upper = _normal_interval(value, terms, config.alpha)
    return Estimate(estimator=estimator, value=value, lower=lower, upper=upper, alpha=config.alpha,
                    method=config.method, terms=terms)
