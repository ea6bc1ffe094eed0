"""nDCG@k, the one implementation behind the simulator's per-search records and the ranker's report.

Järvelin & Kekäläinen, "Cumulated gain-based evaluation of IR techniques" (TOIS 2002), with the
discount 1 / log2(rank + 1) of Burges et al. (ICML 2005), as trec_eval's ndcg_cut and
ir-measures' nDCG@k compute it:

    DCG@k = sum over ranks r = 1 .. min(k, n) of  gain_r / log2(r + 1)
    nDCG@k = DCG@k / ideal DCG@k,   the ideal being the DCG@k of the k largest gains, decreasing.

Gains, not grades, come in: pass 2^grade - 1 for the exponential gain (Burges; LightGBM's
lambdarank; ir-measures' nDCG(gains={g: 2^g - 1})), the grade itself for trec_eval's default
linear gain. The ranking is the order given: ties in scores are the caller's to break (core.ranking
keeps candidate order; trec_eval, and ir-measures through it, put the larger document id first).
"""

from __future__ import annotations

import itertools

import numpy as np

# Discounts are precomputed for ranks 1..DISCOUNT_TABLE_RANKS (every k in use is 10; the
# experiment's shown list is at most 100 long) and computed per call beyond.
DISCOUNT_TABLE_RANKS = 100
_DISCOUNT = 1.0 / np.log2(np.arange(2, DISCOUNT_TABLE_RANKS + 2, dtype=np.float64))


def _discount(n: int) -> np.ndarray:
    """float64 (n,): 1 / log2(r + 1) for ranks r = 1..n."""
    return _DISCOUNT[:n] if n <= DISCOUNT_TABLE_RANKS else 1.0 / np.log2(np.arange(2, n + 2, dtype=np.float64))


def _checked_gains(name: str, values: np.ndarray) -> np.ndarray:
    g = np.asarray(values, dtype=np.float64)
    if g.ndim != 1:
        raise ValueError(f"`{name}` must be a 1-D array of gains, but got shape {g.shape}")
    if not (np.isfinite(g).all() and (g >= 0).all()):
        raise ValueError(f"`{name}` must be finite and >= 0, but got {g[~(np.isfinite(g) & (g >= 0))][:3]} among them")
    return g


def ndcg_at_k(gains: np.ndarray, ideal_gains: np.ndarray, k: int, *, no_relevant: float = 0.0) -> float:
    """nDCG@k of one ranking, in [0, 1] when `gains` are drawn from `ideal_gains`.

    gains: float64 (n,), the gain of each ranked item, best first (0 for items without one).
    ideal_gains: float64 (m,), the gains of the judged items, in any order; only the k largest
    count, so items of gain 0 and all but the k best may be left out. k: integer >= 1.
    no_relevant: the value when the ideal DCG is 0 (nothing has a gain): 0 as trec_eval and
    ir-measures score such a query; LightGBM counts such a group 1.

    DCG is one dot product; the ideal DCG sums, per gain level, the level times the sum of the
    discounts of its block of ranks (the ideal ranking holds each level in one block). These are
    the float operations the simulator's committed figures came from: keep them (see
    tests/core/simulator/test_metrics.py).
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"`k` must be an integer >= 1, but got {k!r}")
    top = _checked_gains("gains", gains)[:k]
    ideal = np.sort(_checked_gains("ideal_gains", ideal_gains))[::-1][:k]
    disc = _discount(max(top.size, ideal.size))
    dcg = float(top @ disc[:top.size])
    ideal_dcg = 0.0
    blocks = [0, *(np.flatnonzero(np.diff(ideal)) + 1).tolist(), ideal.size] if ideal.size else []
    for start, end in itertools.pairwise(blocks):
        if ideal[start] > 0:
            ideal_dcg += float(ideal[start]) * float(disc[start:end].sum())
    return dcg / ideal_dcg if ideal_dcg > 0 else no_relevant
