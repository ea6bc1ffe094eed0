"""Bayesian linear regression arms, one per (strategy, quota level): the hit-probability models.

Arm (s, l) predicts p(x) = theta_sl . x, the probability that the entity the user acts on is in
strategy s's top-q_l for context x. Prior theta ~ N(m_l e_0, I / prior_precision) (feature 0 is
the bias, so m_l is the prior hit probability of level l in every context); observations r in
{0, 1} with noise scale `noise`. The posterior is kept as A^-1 (Sherman-Morrison updates) and b:
    mean = A^-1 b,   Cov = noise^2 A^-1,   A = prior_precision I + sum x x^T,
    b = prior_precision m_l e_0 + sum r x.
Only the prediction at the current x is ever needed, so Thompson sampling draws the scalar
theta . x ~ N(mean . x, noise^2 x^T A^-1 x) instead of a whole theta.
"""

from __future__ import annotations

import numpy as np


class LinearArms:
    """a_inv: float64 (S, L, d, d); b: float64 (S, L, d); n: int64 (S, L) observations per arm.
    Level 0 (not called) is kept for shape only and never updated."""

    def __init__(self, n_strategies: int, n_levels: int, dim: int, *, prior_precision: float = 1.0,
                 noise: float = 0.5, prior_mean: np.ndarray | None = None) -> None:
        """prior_mean: float64 (n_levels,), the prior hit probability of each level, carried by the
        bias feature (x[0] = 1): theta's prior mean is prior_mean[l] * e_0, so before any data
        every context predicts prior_mean[l]. None: zero."""
        if dim < 1:
            raise ValueError(f"`dim` must be >= 1, but got {dim}")
        if prior_precision <= 0 or noise <= 0:
            raise ValueError(f"`prior_precision` and `noise` must be > 0, got {prior_precision}, {noise}")
        self.noise = noise
        self.a_inv = np.tile(np.eye(dim) / prior_precision, (n_strategies, n_levels, 1, 1))
        self.b = np.zeros((n_strategies, n_levels, dim))
        if prior_mean is not None:
            if np.shape(prior_mean) != (n_levels,):
                raise ValueError(f"`prior_mean` must have shape ({n_levels},), but got {np.shape(prior_mean)}")
            self.b[:, :, 0] = prior_precision * np.asarray(prior_mean, dtype=np.float64)
        self.n = np.zeros((n_strategies, n_levels), dtype=np.int64)
        self._mean_theta: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return int(self.b.shape[2])

    def _theta(self) -> np.ndarray:
        if self._mean_theta is None:
            self._mean_theta = np.einsum("slde,sle->sld", self.a_inv, self.b)
        return self._mean_theta

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean, var) of theta . x for every arm, float64 (S, L) each; var excludes noise^2."""
        if x.shape != (self.dim,):
            raise ValueError(f"`x` must have shape ({self.dim},), but got {x.shape}")
        mean = self._theta() @ x
        var = np.einsum("slde,d,e->sl", self.a_inv, x, x)
        return mean, np.maximum(var, 0.0)

    def sample(self, x: np.ndarray, n_samples: int, rng: np.random.Generator) -> np.ndarray:
        """Thompson draws of theta . x, float64 (n_samples, S, L)."""
        mean, var = self.predict(x)
        z = rng.standard_normal((n_samples, *mean.shape))
        return mean[None] + self.noise * np.sqrt(var)[None] * z

    def update(self, x: np.ndarray, strategy: int, level: int, reward: float) -> None:
        """One observation for arm (strategy, level): Sherman-Morrison on A^-1."""
        a_inv = self.a_inv[strategy, level]
        ax = a_inv @ x
        a_inv -= np.outer(ax, ax) / (1.0 + x @ ax)
        self.b[strategy, level] += reward * x
        self.n[strategy, level] += 1
        self._mean_theta = None

    def state(self) -> dict[str, np.ndarray]:
        return {"a_inv": self.a_inv, "b": self.b, "n": self.n}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        for name in ("a_inv", "b", "n"):
            if state[name].shape != getattr(self, name).shape:
                raise ValueError(f"saved `{name}` has shape {state[name].shape}, expected {getattr(self, name).shape}")
        self.a_inv, self.b, self.n = (np.array(state[k]) for k in ("a_inv", "b", "n"))
        self._mean_theta = None
