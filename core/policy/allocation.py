"""Joint quota allocations and what they are worth.

An allocation gives every strategy a quota level (0 = not called). Its value, for predicted hit
probabilities p[s, level] (the acted-on entity is in strategy s's top-q), is the probability that
the union holds the entity, assuming strategies miss independently, minus the costs:

    value(a) = 1 - prod_s (1 - p[s, a_s]) - cost_per_candidate * sum_s n(s, a_s)
               - cost_per_ms * max_s latency_s [a_s > 0]

where n(s, l) is how many candidates strategy s returns when asked for levels[l] (at most that
quota: a filter or a memory can have fewer to give), and strategies run in parallel, so the
search waits for the slowest one called.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_LEVELS = (0, 50, 100, 200)
DEFAULT_BUDGET = 200


@dataclass(frozen=True, kw_only=True)
class AllocationSpace:
    """strategies: names, in column order; levels: ascending quotas starting at 0; budget: the most
    candidates one search may fetch in all. `allocations` is int64 (A, S) of level indexes."""

    strategies: tuple[str, ...]
    levels: tuple[int, ...] = DEFAULT_LEVELS
    budget: int = DEFAULT_BUDGET

    def __post_init__(self) -> None:
        if not self.strategies or len(set(self.strategies)) != len(self.strategies):
            raise ValueError(f"`strategies` must be distinct and non-empty, but got {self.strategies}")
        if self.levels[0] != 0 or list(self.levels) != sorted(set(self.levels)):
            raise ValueError(f"`levels` must ascend strictly from 0, but got {self.levels}")
        if self.budget < self.levels[1]:
            raise ValueError(f"`budget` must allow at least one call ({self.levels[1]}), but got {self.budget}")

    @property
    def allocations(self) -> np.ndarray:
        return _feasible(self.levels, len(self.strategies), self.budget)

    def quotas(self, allocation: int) -> tuple[int, ...]:
        return tuple(self.levels[i] for i in self.allocations[allocation])

    def index_of(self, quotas: Sequence[int]) -> int:
        """The allocation with these per-strategy quotas; ValueError if it is not feasible."""
        try:
            want = [self.levels.index(q) for q in quotas]
        except ValueError:
            raise ValueError(f"quotas {list(quotas)} are not all among the levels {self.levels}") from None
        hits = np.flatnonzero((self.allocations == want).all(axis=1))
        if hits.size == 0:
            raise ValueError(f"quotas {list(quotas)} exceed the budget {self.budget}")
        return int(hits[0])

    def marginals(self, probs: np.ndarray, allocation: int) -> tuple[float, ...]:
        """Per strategy, the probability under `probs` (float64 (A,), over the allocations) that it
        gets the quota level `allocation` gives it."""
        alloc = self.allocations
        return tuple(float(probs[alloc[:, s] == alloc[allocation, s]].sum()) for s in range(alloc.shape[1]))

    def union_hit(self, p: np.ndarray) -> np.ndarray:
        """P(some called strategy hits) of every allocation under independent misses, float64 (M, A).
        p: float64 (M, S, L) per-strategy hit probabilities by level (column 0 ignored)."""
        miss = np.log1p(-np.clip(p, 0.0, 1.0 - 1e-12))
        miss[:, :, 0] = 0.0
        cols = np.arange(len(self.strategies))
        return -np.expm1(miss[:, cols[None, :], self.allocations].sum(axis=2))

    def fetched(self, returned: np.ndarray) -> np.ndarray:
        """float64 (A,): the candidates each allocation fetches. returned: (S, L), how many
        candidates strategy s returns when asked for levels[l] (column 0 ignored)."""
        n = np.asarray(returned, dtype=np.float64).copy()
        n[:, 0] = 0.0
        return n[np.arange(len(self.strategies))[None, :], self.allocations].sum(axis=1)

    def cost(self, latency_ms: np.ndarray, cost_per_candidate: float, cost_per_ms: float,
             returned: np.ndarray) -> np.ndarray:
        """float64 (A,): cost_per_candidate * candidates fetched + cost_per_ms * slowest latency
        called. latency_ms: float64 (S,); returned: as in `fetched`."""
        alloc = self.allocations
        cost = cost_per_candidate * self.fetched(returned)
        return cost + cost_per_ms * np.where(alloc > 0, latency_ms[None, :], 0.0).max(axis=1)


_FEASIBLE: dict[tuple[tuple[int, ...], int, int], np.ndarray] = {}


def _feasible(levels: tuple[int, ...], n: int, budget: int) -> np.ndarray:
    key = (levels, n, budget)
    if key not in _FEASIBLE:
        rows = [c for c in itertools.product(range(len(levels)), repeat=n)
                if sum(levels[i] for i in c) <= budget and any(c)]
        _FEASIBLE[key] = np.array(rows, dtype=np.int64).reshape(-1, n)
    return _FEASIBLE[key]


def equal_split(space: AllocationSpace) -> tuple[int, ...]:
    """The largest level every strategy can get under the budget: the static equal-quota plan."""
    share = space.budget / len(space.strategies)
    level = max(q for q in space.levels if q <= share) if share >= space.levels[1] else space.levels[1]
    return tuple([level] * len(space.strategies)) if level * len(space.strategies) <= space.budget else \
        tuple(level if i < math.floor(space.budget / level) else 0 for i in range(len(space.strategies)))
