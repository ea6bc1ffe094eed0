"""Merging strategy lists into one candidate set, keeping provenance.

The broker unions the lists the strategies returned in time; for every candidate it keeps which
strategies found it, at what rank and with what score. The ranker reads these as features and the
policy's reward reads the ranks (was the acted-on entity in strategy s's top-q, for every q).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class StrategyList:
    """One strategy's answer: entity ids best first and their strategy-native scores (float32)."""

    strategy: str
    entity_ids: Sequence[str]
    scores: np.ndarray

    def __post_init__(self) -> None:
        if len(self.entity_ids) != len(self.scores):
            raise ValueError(f"strategy {self.strategy!r}: {len(self.entity_ids)} ids but {len(self.scores)} scores")


@dataclass(frozen=True, slots=True)
class Merged:
    """The union of several strategy lists.

    strategies: column order of `ranks` and `scores`.
    entity_ids: the candidates, ordered by their best rank in any list, then by column order.
    ranks: int32, shape (n, S), 1-based rank of candidate i in strategy j's list, 0 = absent.
    scores: float32, shape (n, S), score in that list, NaN = absent.
    """

    strategies: tuple[str, ...]
    entity_ids: list[str]
    ranks: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.entity_ids)

    def found_by(self, i: int) -> list[str]:
        """Names of the strategies whose lists hold candidate i."""
        return [s for s, r in zip(self.strategies, self.ranks[i].tolist(), strict=True) if r > 0]


def merge(lists: Sequence[StrategyList], strategies: Sequence[str]) -> Merged:
    """Union `lists` by entity id. `strategies` fixes the columns; each list's strategy must be
    among them and appear at most once. A strategy without a list has an all-absent column."""
    column = {s: j for j, s in enumerate(strategies)}
    seen: set[str] = set()
    for lst in lists:
        if lst.strategy not in column:
            raise ValueError(f"strategy {lst.strategy!r} is not one of {list(strategies)}")
        if lst.strategy in seen:
            raise ValueError(f"strategy {lst.strategy!r} appears twice")
        seen.add(lst.strategy)
    row: dict[str, int] = {}
    at = [row.setdefault(e, len(row)) for lst in lists for e in lst.entity_ids]  # each entry's candidate
    n, s = len(row), len(strategies)
    ranks = np.zeros((n, s), dtype=np.int32)
    scores = np.full((n, s), np.nan, dtype=np.float32)
    order = np.zeros(0, dtype=np.int64)
    if at:
        i_idx = np.array(at, dtype=np.int64)
        r_val = np.concatenate([np.arange(1, len(lst.entity_ids) + 1) for lst in lists])
        j_idx = np.concatenate([np.full(len(lst.entity_ids), column[lst.strategy]) for lst in lists])
        ranks[i_idx, j_idx] = r_val
        scores[i_idx, j_idx] = np.concatenate([lst.scores for lst in lists])
        best = np.full(n, np.iinfo(np.int64).max)  # per candidate, its best (rank, column) as rank * s + column
        np.minimum.at(best, i_idx, r_val * s + j_idx)
        order = np.argsort(best)  # no ties: one (rank, column) is one list's one entry
    ids = list(row)
    return Merged(tuple(strategies), [ids[i] for i in order.tolist()], ranks[order], scores[order])
