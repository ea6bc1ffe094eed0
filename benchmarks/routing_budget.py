"""Choosing the routing benchmark's candidate budget: target recall of the static plans at a few
budgets, from the strategies' lists alone (no simulation).

For a budget B (levels (0, B/4, B/2, B), benchmarks.routing_run.routing_levels) and every fixed
allocation of that space, the expected target recall of a query is the grade-weighted share of its
judged documents in the union of the allocation's lists (the target is drawn from the judged set
by grade, benchmarks.routing_data); the stream draws queries with Zipf weights over a random
permutation, so each query's expected share of searches is the same and the pooled figure is the
mean over queries. The memory strategy starts empty, so here it retrieves nothing.

The budget must leave room to learn: when a static plan already retrieves nearly every judged
document, no routing can do better. Held-out collections (HELD_OUT) are refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.routing_data import STRATEGIES, PooledData
from benchmarks.routing_run import routing_levels
from core.policy.allocation import AllocationSpace, equal_split

HELD_OUT = ("cranfield", "cacm", "lisa")  # the project's acceptance sets (../shared/data/README.md)
DEFAULT_SWEEP = (20, 40, 100, 200)


def query_recall(lists: np.ndarray, judged: dict[int, float], space: AllocationSpace) -> np.ndarray:
    """float64 (A,): grade-weighted share of `judged` (ordinal -> grade) inside the union of each
    allocation's lists. lists: object (S, L) of sets of ordinals, strategy s's top-levels[l]."""
    docs = np.array(list(judged), dtype=np.int64)
    grades = np.array(list(judged.values()), dtype=np.float64)
    inside = np.array([[np.isin(docs, np.fromiter(lists[s, lv], dtype=np.int64, count=len(lists[s, lv])))
                        for lv in range(lists.shape[1])] for s in range(lists.shape[0])])  # (S, L, D)
    cols = np.arange(len(space.strategies))
    found = inside[cols[None, :], space.allocations].any(axis=1)  # (A, D)
    return np.asarray(found @ grades / grades.sum(), dtype=np.float64)


def budget_sweep(data: PooledData, root: Path, budgets: Sequence[int] = DEFAULT_SWEEP) -> dict[int, dict[str, float]]:
    """Per budget: pooled target recall of each single strategy, the equal split, lexical +
    semantic halves, and the best fixed allocation (named `best <quotas>`)."""
    from core.simulator.retrieval import InProcessStrategies

    bad = sorted(set(data.collections) & set(HELD_OUT))
    if bad:
        raise ValueError(f"the budget must not be chosen on held-out collections, but got {bad}")
    names = [s for s in STRATEGIES if s != "memory"]
    loaded = InProcessStrategies(root, names, max(budgets))
    ordinal = loaded.ordinal
    out: dict[int, dict[str, float]] = {}
    for budget in budgets:
        levels = routing_levels(budget)
        space = AllocationSpace(strategies=STRATEGIES, levels=levels, budget=budget)
        per_query = []
        for q, text in data.queries.items():
            lists = np.empty((len(STRATEGIES), len(levels)), dtype=object)
            for s, name in enumerate(STRATEGIES):
                for lv, level in enumerate(levels):
                    lists[s, lv] = set(loaded.top_ordinals(name, text, level)) if name in names and level else set()
            per_query.append(query_recall(lists, {ordinal[d]: g for d, g in data.qrels[q].items()}, space))
        mean = np.mean(per_query, axis=0)
        row = {f"{s}-only": float(mean[space.index_of(tuple(budget if t == s else 0 for t in STRATEGIES))])
               for s in STRATEGIES}
        row["static-equal"] = float(mean[space.index_of(equal_split(space))])
        row["hybrid-rrf"] = float(mean[space.index_of(tuple(budget // 2 if s in ("lexical", "semantic") else 0
                                                          for s in STRATEGIES))])
        best = int(np.argmax(mean))
        row[f"best {space.quotas(best)}"] = float(mean[best])
        out[budget] = row
    loaded.close()
    return out
