"""The simulator's per-search nDCG@k: core.metrics behind it, the former formula's floats kept."""

from __future__ import annotations

import numpy as np
import pytest

from core.simulator.metrics import ndcg_at

_FORMER_DISCOUNT = 1.0 / np.log2(np.arange(2, 102, dtype=np.float64))  # rank 1..100


def former_ndcg_at(shown: np.ndarray, relevant: np.ndarray, target: int, k: int) -> float:
    """core.simulator.metrics.ndcg_at as it was before it called core.metrics.ndcg_at_k."""
    top = shown[:k]
    gains = np.isin(top, relevant).astype(np.float64)
    gains[top == target] = 3.0
    dcg = float(gains @ _FORMER_DISCOUNT[: top.size])
    n_rest = min(k - 1, max(relevant.size - 1, 0))
    ideal = 3.0 + float(_FORMER_DISCOUNT[1: 1 + n_rest].sum())
    return dcg / ideal


@pytest.mark.parametrize("k", [1, 2, 5, 9, 10, 11, 17, 50, 100])
def test_per_search_ndcg_is_unchanged_bit_for_bit(k: int) -> None:
    """Guards the move of the simulator's nDCG onto core.metrics.ndcg_at_k: every per-search value
    must equal the former formula's float exactly, or the experiment's committed figures move."""
    rng = np.random.default_rng(k)
    for _ in range(3000):
        n_items = int(rng.integers(1, 400))
        relevant = np.unique(rng.choice(n_items, size=int(rng.integers(1, n_items + 1))))
        target = int(rng.choice(relevant))
        shown = rng.permutation(n_items)[: int(rng.integers(0, min(n_items, 100) + 1))].astype(np.int64)
        got, want = ndcg_at(shown, relevant, target, k), former_ndcg_at(shown, relevant, target, k)
        assert got == want, (k, shown.tolist(), relevant.tolist(), target)


def test_grades_by_hand() -> None:
    # target 2 (gain 3), other relevant 1 (gain 1); the ideal holds the target then one more.
    shown, relevant = np.array([5, 9, 7], dtype=np.int64), np.array([7, 9], dtype=np.int64)
    want = (1 / np.log2(3) + 3 / np.log2(4)) / (3 + 1 / np.log2(3))
    assert ndcg_at(shown, relevant, 7, 10) == pytest.approx(want)
    assert ndcg_at(shown[1:], relevant, 9, 10) == pytest.approx(1.0)
    assert ndcg_at(np.array([1, 2], dtype=np.int64), relevant, 7, 10) == 0.0
