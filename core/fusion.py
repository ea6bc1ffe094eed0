"""Reciprocal-rank fusion (RRF) of ranked lists: the broker's cold-start ranker and fusion baseline.

Cormack, Clarke & Büttcher, "Reciprocal Rank Fusion outperforms Condorcet and individual rank
learning methods" (SIGIR 2009): an item's fused score is

    score(d) = sum over lists L containing d of  weight_L / (k + rank_L(d)),   rank starting at 1,

with k = 60 as in the paper (a large k flattens the gap between the first ranks, so one list's
top item cannot outvote agreement between lists). Scores of the inputs are ignored: only ranks
count, which is why RRF needs no calibration between strategies.

`rrf_scores` is the formula, over a rank matrix (core.merge.Merged.ranks: the RRF ranker and the
`rrf` ranking feature of core.ranking); `reciprocal_rank_fusion` fuses lists of ids with it.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import TypeVar

import numpy as np

DEFAULT_RRF_K = 60.0

T = TypeVar("T", bound=Hashable)


def rrf_scores(ranks: np.ndarray, k: float = DEFAULT_RRF_K, weights: Sequence[float] | None = None) -> np.ndarray:
    """float64 (n,): the RRF score of each row of `ranks`.

    ranks: integer (n, S), 1-based rank of item i in list j, 0 (or less) when absent. k: finite,
    > 0. weights: S finite values >= 0, one per column (default all 1). The sum runs column by
    column in order, so a row's score is the same float whatever S (numpy's sum(axis=1) regroups
    its terms from 8 columns on), and equals the left-to-right sum over the lists.
    """
    if not (math.isfinite(k) and k > 0):
        raise ValueError(f"`k` must be finite and > 0, but got {k}")
    if ranks.ndim != 2:
        raise ValueError(f"`ranks` must have shape (n, S), but got shape {ranks.shape}")
    w = [1.0] * ranks.shape[1] if weights is None else [float(x) for x in weights]
    if len(w) != ranks.shape[1]:
        raise ValueError(f"`weights` must have {ranks.shape[1]} values (one per ranked list), but got {len(w)}")
    if any(not (math.isfinite(x) and x >= 0) for x in w):
        raise ValueError(f"`weights` must be finite and >= 0, but got {w}")
    r = ranks.astype(np.float64)
    out = np.zeros(r.shape[0])
    for j, weight in enumerate(w):
        out += np.where(r[:, j] > 0, weight / (k + r[:, j]), 0.0)
    return out


def reciprocal_rank_fusion(rankings: Sequence[Sequence[T]], *, k: float = DEFAULT_RRF_K,
                           weights: Sequence[float] | None = None,
                           limit: int | None = None) -> list[tuple[T, float]]:
    """Fuse ranked lists of ids (each best first) into one list of (id, fused score), best first.

    rankings: one sequence of ids per system; an id repeated within one list counts at its
    first (best) rank only. k: > 0. weights: one non-negative weight per list (default all 1).
    limit: keep the best `limit` (None = all). Ties are broken by the best rank the id reached
    in any list, then by the order ids were first seen (list by list), so the output is
    deterministic.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"`limit` must be >= 0 or None, but got {limit}")
    row: dict[T, int] = {}  # id -> row, in order of first sight
    for ranking in rankings:
        for item in ranking:
            row.setdefault(item, len(row))
    ranks = np.zeros((len(row), len(rankings)), dtype=np.int64)
    best_rank = [0] * len(row)
    for j, ranking in enumerate(rankings):
        for rank, item in enumerate(ranking, start=1):
            i = row[item]
            if ranks[i, j] == 0:  # an id repeated in one list keeps its first (best) rank
                ranks[i, j] = rank
                best_rank[i] = min(best_rank[i] or rank, rank)
    scores = rrf_scores(ranks, k, weights).tolist()
    ids = list(row)
    order = sorted(range(len(ids)), key=lambda i: (-scores[i], best_rank[i], i))
    fused = [(ids[i], scores[i]) for i in order]
    return fused if limit is None else fused[:limit]
