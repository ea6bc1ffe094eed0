"""How much any allocation policy could win, from one run's level tables: the hindsight bounds.

A run's level tables (core.simulator.runner.SearchObserver: per search, whether each strategy's
top-q holds the target at every quota level q) say, for every allocation of the space, whether it
would have retrieved that search's target, so one run prices every allocation on the same
searches. From them:

- best_fixed: the one allocation that retrieves the most targets over all searches, chosen with
  hindsight: the upper bound for any static plan;
- best_per_group: each group of searches (an intent, a collection) gets the allocation that
  retrieves the most of *its* targets, chosen with hindsight: the upper bound for a policy that
  routes by the group alone and knows it perfectly;
- leave_one_out: each search gets the allocation that retrieved the target most often on the
  *other* searches of its group (a query), ties going to the best fixed split of all the other
  searches: what a policy that knew each query's past, but not the wanted document, could reach;
- the oracle (`table.any(axis=1)`): some allocation retrieves it.

Ties between allocations go to fewer candidates asked, then the lower index (the simulator's
oracle_allocation). The tables come from one plan's run, so the memory strategy's lists are those
that plan's feedback built; the bounds are of that run, not of every possible one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from core.policy.allocation import AllocationSpace
from core.simulator.policies import oracle_allocation


def allocation_table(hits: np.ndarray, space: AllocationSpace) -> np.ndarray:
    """bool (N, A): whether each allocation of `space` retrieves each search's target, from the
    level tables `hits` (bool (N, S, L), levels as the space's)."""
    if hits.ndim != 3 or hits.shape[1:] != (len(space.strategies), len(space.levels)):
        raise ValueError(f"`hits` must have shape (N, {len(space.strategies)}, {len(space.levels)}), "
                         f"but got {hits.shape}")
    cols = np.arange(len(space.strategies))
    return np.stack([hits[:, cols, a].any(axis=1) for a in space.allocations], axis=1)


def best_fixed(table: np.ndarray, space: AllocationSpace) -> tuple[tuple[int, ...], float]:
    """(quotas, target recall) of the allocation retrieving the most targets of `table` (bool (N, A))."""
    recall = table.mean(axis=0)
    best = oracle_allocation(recall, space)
    return best.quotas, float(recall[best.allocation])


def best_per_group(table: np.ndarray, groups: Sequence[int] | np.ndarray, space: AllocationSpace) -> float:
    """Target recall when each group's searches get the group's hindsight best allocation."""
    found = 0
    for rows in _groups(table, groups):
        here = table[rows]
        found += int(here[:, oracle_allocation(here.sum(axis=0).astype(np.float64), space).allocation].sum())
    return found / len(table) if len(table) else float("nan")


def leave_one_out(table: np.ndarray, groups: Sequence[str] | np.ndarray, space: AllocationSpace) -> float:
    """Target recall when each search gets the allocation that retrieved the target most often on
    the other searches of its group, ties to the most on all other searches, then oracle_allocation's
    rule (module docstring). A search alone in its group thus gets the best fixed split of the others."""
    everywhere = table.sum(axis=0)
    found = np.zeros(len(table), dtype=bool)
    for rows in _groups(table, groups):
        here = table[rows].sum(axis=0)
        for r in rows.tolist():
            key = (here - table[r]) * (len(table) + 1) + (everywhere - table[r])  # the group first
            found[r] = table[r, oracle_allocation(key.astype(np.float64), space).allocation]
    return float(found.mean()) if found.size else float("nan")


def _groups(table: np.ndarray, groups: Sequence[str] | Sequence[int] | np.ndarray) -> list[np.ndarray]:
    """The rows of each group, int64 arrays in ascending order (one sort, so a table of mostly
    distinct queries costs O(N log N), not a scan per group)."""
    if len(groups) != len(table):
        raise ValueError(f"`groups` must have one id per search ({len(table)}), but got {len(groups)}")
    ids = np.unique(np.asarray(groups), return_inverse=True)[1].reshape(-1)
    order = np.argsort(ids, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(ids[order])) + 1) if ids.size else []
