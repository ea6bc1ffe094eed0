"""The hindsight bounds of benchmarks.headroom on hand-made level tables (leave-one-out routing
is tested through the routing benchmark's per_query_routing, tests/benchmarks/test_routing.py)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.headroom import allocation_table, best_fixed, best_per_group, leave_one_out
from core.policy.allocation import AllocationSpace

# Two strategies, levels (0, 2, 4), budget 4: allocations (0,2) (0,4) (2,0) (2,2) (4,0)
SPACE = AllocationSpace(strategies=("a", "b"), levels=(0, 2, 4), budget=4)


def tables() -> np.ndarray:
    """Four searches. 0 and 1 (group 0): "a" finds the target from level 4. 2 (group 1): "b" from
    level 2. 3 (group 1): "a" from level 2 and "b" from level 4."""
    hits = np.zeros((4, 2, 3), dtype=bool)
    hits[0:2, 0, 2] = True
    hits[2, 1, 1:] = True
    hits[3, 0, 1:] = True
    hits[3, 1, 2] = True
    return hits


def test_an_allocation_finds_what_any_of_its_strategies_finds_within_its_quota() -> None:
    table = allocation_table(tables(), SPACE)
    quotas = [SPACE.quotas(i) for i in range(len(SPACE.allocations))]
    assert quotas == [(0, 2), (0, 4), (2, 0), (2, 2), (4, 0)]
    np.testing.assert_array_equal(table, [[0, 0, 0, 0, 1], [0, 0, 0, 0, 1], [1, 1, 0, 1, 0], [0, 1, 1, 1, 1]])
    with pytest.raises(ValueError, match="shape"):
        allocation_table(np.zeros((4, 3, 3), dtype=bool), SPACE)


def test_per_group_bounds_lie_between_the_best_fixed_split_and_the_oracle() -> None:
    table = allocation_table(tables(), SPACE)
    # (4, 0) finds three of four; so does nothing else
    assert best_fixed(table, SPACE) == ((4, 0), pytest.approx(3 / 4))
    # group 0 takes (4, 0) (both), group 1 (2, 2), the cheapest that finds both of its targets
    assert best_per_group(table, [0, 0, 1, 1], SPACE) == pytest.approx(1.0)
    # one group: the best fixed split
    assert best_per_group(table, [7, 7, 7, 7], SPACE) == pytest.approx(3 / 4)
    # search 2 alone in its group gets the best split of the others, (4, 0), which misses it
    assert leave_one_out(table, ["x", "x", "y", "z"], SPACE) == pytest.approx(3 / 4)
    assert table.any(axis=1).mean() == 1.0
    with pytest.raises(ValueError, match="one id per search"):
        best_per_group(table, [0, 1], SPACE)
