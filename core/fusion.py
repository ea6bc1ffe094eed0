"""Reciprocal-rank fusion (RRF) of ranked lists: the broker's cold-start fusion baseline.

Cormack, Clarke & Büttcher, "Reciprocal Rank Fusion outperforms Condorcet and individual rank
learning methods" (SIGIR 2009): an item's fused score is

    score(d) = sum over lists L containing d of  weight_L / (k + rank_L(d)),   rank starting at 1,

with k = 60 as in the paper (a large k flattens the gap between the first ranks, so one list's
top item cannot outvote agreement between lists). Scores of the inputs are ignored: only ranks
count, which is why RRF needs no calibration between strategies.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import TypeVar

DEFAULT_RRF_K = 60.0

T = TypeVar("T", bound=Hashable)


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
    if not (math.isfinite(k) and k > 0):
        raise ValueError(f"`k` must be finite and > 0, but got {k}")
    w = [1.0] * len(rankings) if weights is None else [float(x) for x in weights]
    if len(w) != len(rankings):
        raise ValueError(f"`weights` must have {len(rankings)} values (one per ranking), but got {len(w)}")
    if any(not (math.isfinite(x) and x >= 0) for x in w):
        raise ValueError(f"`weights` must be finite and >= 0, but got {w}")
    if limit is not None and limit < 0:
        raise ValueError(f"`limit` must be >= 0 or None, but got {limit}")
    scores: dict[T, float] = {}
    best_rank: dict[T, int] = {}
    for ranking, weight in zip(rankings, w, strict=True):
        seen: set[T] = set()
        for rank, item in enumerate(ranking, start=1):
            if item in seen:
                continue
            seen.add(item)
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
            best_rank[item] = min(best_rank.get(item, rank), rank)
    first_seen = {item: i for i, item in enumerate(scores)}
    fused = sorted(scores.items(), key=lambda kv: (-kv[1], best_rank[kv[0]], first_seen[kv[0]]))
    return fused if limit is None else fused[:limit]
