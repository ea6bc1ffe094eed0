"""Hit-probability models of the allocation policy: Bayesian linear regression arms.

LinearArms: n arms, arm i predicts p_i(x) = theta_i . x, the probability that the entity the user
acts on is retrieved, for context x. Prior theta_i ~ N(m_i e_0, I / prior_precision) (feature 0 is
the bias, so m_i is arm i's prior hit probability in every context); observations r in {0, 1}
with noise scale `noise`. The posterior is kept as A^-1 (Sherman-Morrison updates) and b:
    mean = A^-1 b,   Cov = noise^2 A^-1,   A = prior_precision I + sum x x^T,
    b = prior_precision m e_0 + sum r x.
Only the prediction at the current x is ever needed, so Thompson sampling draws the scalar
theta . x ~ N(mean . x, noise^2 x^T A^-1 x) instead of a whole theta.

Two ways to turn arms into the hit probability of a joint allocation (core.policy.allocation):

- IndependentModel: one arm per (strategy, quota level), combined as the union of independent
  misses, 1 - prod_s (1 - p[s, a_s]). Few arms, so it learns fast, but strategies that find the
  same entities (an artist query that lexical and attribute both answer) look complementary, so
  it overvalues spreading the budget.
- JointModel (the default): one arm per allocation, predicting the union hit directly, so
  redundancy between strategies is learned rather than assumed away. A search's feedback reveals
  the union hit of every allocation the chosen one dominates (each strategy at most its chosen
  quota: top-q lists are prefixes of top-Q lists), so one search updates several arms (up to 15 of
  the 53 allocations of the default levels, four strategies).
  The prior of each arm is the independent union of the per-level prior hit rates, and
  predictions are closed upwards over the dominance order (JointModel's docstring).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from core.lazy_jit import lazy_njit
from core.policy.allocation import AllocationSpace


class LinearArms:
    """a_inv: float64 (n, d, d); b: float64 (n, d); n: int64 (n,) observations per arm."""

    def __init__(self, n_arms: int, dim: int, *, prior_precision: float = 1.0, noise: float = 0.5,
                 prior_mean: np.ndarray | None = None) -> None:
        """prior_mean: float64 (n_arms,), each arm's prior hit probability, carried by the bias
        feature (x[0] = 1). None: zero."""
        if dim < 1 or n_arms < 1:
            raise ValueError(f"`dim` and `n_arms` must be >= 1, but got {dim} and {n_arms}")
        if prior_precision <= 0 or noise <= 0:
            raise ValueError(f"`prior_precision` and `noise` must be > 0, got {prior_precision}, {noise}")
        self.noise = noise
        self.a_inv = np.tile(np.eye(dim) / prior_precision, (n_arms, 1, 1))
        self.b = np.zeros((n_arms, dim))
        if prior_mean is not None:
            if np.shape(prior_mean) != (n_arms,):
                raise ValueError(f"`prior_mean` must have shape ({n_arms},), but got {np.shape(prior_mean)}")
            self.b[:, 0] = prior_precision * np.asarray(prior_mean, dtype=np.float64)
        self.n = np.zeros(n_arms, dtype=np.int64)
        self.theta = np.einsum("ade,ae->ad", self.a_inv, self.b)

    @property
    def dim(self) -> int:
        return int(self.b.shape[1])

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean, var) of theta . x for every arm, float64 (n,) each; var excludes noise^2."""
        if x.shape != (self.dim,):
            raise ValueError(f"`x` must have shape ({self.dim},), but got {x.shape}")
        var = (self.a_inv @ x) @ x
        return self.theta @ x, np.maximum(var, 0.0)

    def sample(self, x: np.ndarray, n_samples: int, rng: np.random.Generator) -> np.ndarray:
        """Thompson draws of theta . x, float64 (n_samples, n)."""
        mean, var = self.predict(x)
        return mean[None] + self.noise * np.sqrt(var)[None] * self.draws(n_samples, rng)

    def draws(self, n_samples: int, rng: np.random.Generator) -> np.ndarray:
        """The standard normals of `n_samples` draws of every arm, float64 (n_samples, n)."""
        return rng.standard_normal((n_samples, self.b.shape[0]))

    def update(self, x: np.ndarray, arms: np.ndarray, rewards: np.ndarray, weights: np.ndarray | None = None) -> None:
        """One observation (x, rewards[i]) for each of the distinct `arms` (int64): batched
        Sherman-Morrison on A^-1. weights: float64 (len(arms),), > 0, each observation counted
        w times (A += w x x^T, b += w r x: weighted least squares, as importance-weighted offline
        learning needs, core.policy.warmstart); None: 1 each."""
        if arms.size == 0:
            return
        w = np.ones(arms.size) if weights is None else np.asarray(weights, dtype=np.float64)
        if w.shape != arms.shape or not (np.isfinite(w).all() and (w > 0).all()):
            raise ValueError(f"`weights` must be finite, > 0 and one per arm ({arms.size}), but got {weights}")
        a_inv = self.a_inv[arms]
        ax = a_inv @ x
        a_inv -= w[:, None, None] * ax[:, :, None] * ax[:, None, :] / (1.0 + w * (ax @ x))[:, None, None]
        self.a_inv[arms] = a_inv
        self.b[arms] += (w * rewards)[:, None] * x[None, :]
        self.n[arms] += 1
        self.theta[arms] = np.einsum("ade,ae->ad", a_inv, self.b[arms])

    def state(self) -> dict[str, np.ndarray]:
        return {"a_inv": self.a_inv, "b": self.b, "n": self.n}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        for name in ("a_inv", "b", "n"):
            if state[name].shape != getattr(self, name).shape:
                raise ValueError(f"saved `{name}` has shape {state[name].shape}, expected {getattr(self, name).shape}")
        self.a_inv, self.b, self.n = (np.array(state[k]) for k in ("a_inv", "b", "n"))
        self.theta = np.einsum("ade,ae->ad", self.a_inv, self.b)


class ModelKind(enum.StrEnum):
    JOINT = "joint"
    INDEPENDENT = "independent"


class HitModel(Protocol):
    """Predicts, for context x, the probability that each allocation of `space` retrieves the
    entity the user acts on, and learns from a search's per-strategy outcomes."""

    arms: LinearArms

    def sample(self, x: np.ndarray, n_samples: int, rng: np.random.Generator) -> np.ndarray:
        """Thompson draws of every allocation's hit probability, float64 (n_samples, A)."""

    def winners(self, x: np.ndarray, n_samples: int, rng: np.random.Generator, cost: np.ndarray) -> np.ndarray:
        """int64 (n_samples,): per Thompson draw, the allocation whose drawn hit probability less
        `cost` (float64 (A,)) is largest (the first on ties): `(sample(...) - cost).argmax(axis=1)`."""

    def mean(self, x: np.ndarray, ucb_alpha: float = 0.0) -> np.ndarray:
        """Posterior mean (plus ucb_alpha posterior standard deviations) per allocation, (A,)."""

    def observations(self, level: np.ndarray, rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """What one search reveals: the arms (int64, distinct) whose hit it shows and those hits
        (float64, 0 or 1). level: int64 (S,), the level index each strategy answered at (0 = not
        called or no answer); rank: int64 (S,), the acted-on entity's 1-based rank in its list, 0 = absent."""

    def update(self, x: np.ndarray, level: np.ndarray, rank: np.ndarray) -> None:
        """Learn `observations(level, rank)` at context x."""


def level_prior(levels: Sequence[int], prior_hit_rate: float) -> np.ndarray:
    """float64 (L,): the prior hit probability of one strategy at each level,
    prior_hit_rate * sqrt(q / max level) (0 at level 0)."""
    lv = np.asarray(levels, dtype=np.float64)
    return prior_hit_rate * np.sqrt(lv / lv[-1])


class IndependentModel:
    """Arms per (strategy, level), arm index s * L + l; union of independent misses."""

    def __init__(self, space: AllocationSpace, dim: int, *, prior_precision: float, noise: float,
                 prior_hit_rate: float) -> None:
        self.space = space
        self.shape = (len(space.strategies), len(space.levels))
        prior = np.tile(level_prior(space.levels, prior_hit_rate), self.shape[0])
        self.arms = LinearArms(self.shape[0] * self.shape[1], dim, prior_precision=prior_precision, noise=noise,
                               prior_mean=prior)

    def sample(self, x: np.ndarray, n_samples: int, rng: np.random.Generator) -> np.ndarray:
        return self.space.union_hit(self.arms.sample(x, n_samples, rng).reshape(n_samples, *self.shape))

    def winners(self, x: np.ndarray, n_samples: int, rng: np.random.Generator, cost: np.ndarray) -> np.ndarray:
        return (self.sample(x, n_samples, rng) - cost[None, :]).argmax(axis=1)

    def mean(self, x: np.ndarray, ucb_alpha: float = 0.0) -> np.ndarray:
        mean, var = self.arms.predict(x)
        return self.space.union_hit((mean + ucb_alpha * np.sqrt(var)).reshape(1, *self.shape))[0]

    def observations(self, level: np.ndarray, rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lv = np.asarray(self.space.levels)
        n_levels = lv.size
        arms, rewards = [], []
        for s in np.flatnonzero(level > 0).tolist():
            for li in range(1, int(level[s]) + 1):
                arms.append(s * n_levels + li)
                rewards.append(1.0 if 0 < rank[s] <= lv[li] else 0.0)
        return np.asarray(arms, dtype=np.int64), np.asarray(rewards, dtype=np.float64)

    def update(self, x: np.ndarray, level: np.ndarray, rank: np.ndarray) -> None:
        self.arms.update(x, *self.observations(level, rank))


class JointModel:
    """One arm per allocation of `space` (module docstring). Predictions are made monotone: an
    allocation that gives every strategy at least the quota of another can only find more, so its
    hit probability (each Thompson draw too) is raised to the largest of the allocations it
    dominates. An allocation never tried (the whole budget on one strategy) thus starts from what
    the smaller ones it contains have learned, not from its prior."""

    def __init__(self, space: AllocationSpace, dim: int, *, prior_precision: float, noise: float,
                 prior_hit_rate: float) -> None:
        self.space = space
        self.alloc = space.allocations
        per_level = level_prior(space.levels, prior_hit_rate)
        prior = space.union_hit(np.tile(per_level, (1, len(space.strategies), 1)))[0]
        self.arms = LinearArms(len(self.alloc), dim, prior_precision=prior_precision, noise=noise, prior_mean=prior)
        self.quota = np.asarray(space.levels)[self.alloc]  # (A, S)
        self.layers = _dominance_layers(self.alloc)
        # the layers end to end, for the kernel: a member's predecessors are all in earlier layers
        self.members = np.concatenate([m for m, _ in self.layers]) if self.layers else np.zeros(0, np.int64)
        self.preds = (np.concatenate([p for _, p in self.layers]) if self.layers
                      else np.zeros((0, self.alloc.shape[1]), np.int64))

    def _monotone(self, p: np.ndarray) -> np.ndarray:
        """p: float64 (M, A), in place: each allocation's value raised to its predecessors' (one
        strategy one level lower), layer by layer, which is the maximum over all it dominates."""
        for members, preds in self.layers:
            p[:, members] = np.maximum(p[:, members], p[:, preds].max(axis=2))
        return p

    def sample(self, x: np.ndarray, n_samples: int, rng: np.random.Generator) -> np.ndarray:
        return self._monotone(self.arms.sample(x, n_samples, rng))

    def winners(self, x: np.ndarray, n_samples: int, rng: np.random.Generator, cost: np.ndarray) -> np.ndarray:
        """As `(sample(...) - cost).argmax(axis=1)`, draw for draw (the same normals from `rng`, the
        same arithmetic), in one compiled pass: the broker decides every search this way, and
        numpy's calls on (n_samples, 53) arrays cost more than the work."""
        mean, var = self.arms.predict(x)
        z = self.arms.draws(n_samples, rng)
        out = np.empty(n_samples, dtype=np.int64)
        _winners_jit()(mean, self.arms.noise * np.sqrt(var), z, np.ascontiguousarray(cost, dtype=np.float64),
                       self.members, self.preds, out)
        return out

    def mean(self, x: np.ndarray, ucb_alpha: float = 0.0) -> np.ndarray:
        mean, var = self.arms.predict(x)
        return self._monotone((mean + ucb_alpha * np.sqrt(var))[None])[0]

    def observations(self, level: np.ndarray, rank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        dominated = np.flatnonzero((self.alloc <= level[None, :]).all(axis=1))
        found = (rank[None, :] > 0) & (rank[None, :] <= self.quota[dominated])
        return dominated, found.any(axis=1).astype(np.float64)

    def update(self, x: np.ndarray, level: np.ndarray, rank: np.ndarray) -> None:
        self.arms.update(x, *self.observations(level, rank))


def _dominance_layers(alloc: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The allocations (rows of level indexes) grouped by their level sum, from 2 up, each with
    its immediate predecessors: int64 (k,) members and int64 (k, S) predecessor rows, where a
    strategy at level 0 (no predecessor through it) repeats the member itself."""
    index = {tuple(row): i for i, row in enumerate(alloc.tolist())}
    total = alloc.sum(axis=1)
    layers = []
    for t in range(2, int(total.max()) + 1):
        members = np.flatnonzero(total == t)
        preds = np.empty((members.size, alloc.shape[1]), dtype=np.int64)
        for k, a in enumerate(members.tolist()):
            for s in range(alloc.shape[1]):
                row = list(alloc[a])
                row[s] -= 1
                preds[k, s] = index.get(tuple(row), a) if row[s] >= 0 else a
        layers.append((members, preds))
    return layers


def _winners(mean: np.ndarray, scale: np.ndarray, z: np.ndarray, cost: np.ndarray, members: np.ndarray,
             preds: np.ndarray, out: np.ndarray) -> None:
    """out[m] = argmax over allocations of monotone(mean + scale * z[m]) - cost, the first on ties;
    monotone: in `members` order, each member raised to the largest of its `preds` row (JointModel)."""
    n_arms = mean.size
    p = np.empty(n_arms)
    for m in range(z.shape[0]):
        for a in range(n_arms):
            p[a] = mean[a] + scale[a] * z[m, a]
        for i in range(members.size):
            best = p[members[i]]
            for s in range(preds.shape[1]):
                v = p[preds[i, s]]
                if v > best:
                    best = v
            p[members[i]] = best
        chosen, top = 0, p[0] - cost[0]
        for a in range(1, n_arms):
            v = p[a] - cost[a]
            if v > top:
                chosen, top = a, v
        out[m] = chosen


_winners_jit = lazy_njit(_winners)  # numba loads on first use (core.lazy_jit)


def warm_up() -> None:
    """Compile (or load from Numba's cache) the Thompson kernel, so a server's first search does not pay."""
    one = np.zeros(1)
    _winners_jit()(one, one, np.zeros((1, 1)), one, np.zeros(0, np.int64), np.zeros((0, 1), np.int64),
                   np.zeros(1, np.int64))


MODELS: dict[ModelKind, type[IndependentModel] | type[JointModel]] = {
    ModelKind.JOINT: JointModel, ModelKind.INDEPENDENT: IndependentModel,
}
