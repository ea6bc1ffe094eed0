"""The contract every strategy honours; each strategy's tests subclass StrategyContract.

A subclass sets `strategy_name`, `matching_query` (a query that matches several entities of the
index) and provides an `index_dir` fixture (class scope) with that strategy built over the
session's synthetic catalog.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from core.indexing import open_strategy
from core.query import Filter, make_query
from core.types import Strategy


class StrategyContract:
    strategy_name: ClassVar[str]
    matching_query: ClassVar[str]

    @pytest.fixture(scope="class")
    @classmethod
    def strategy(cls, index_dir: Path) -> Strategy:
        s = open_strategy(index_dir, cls.strategy_name)
        s.warm_up()
        return s

    @pytest.mark.parametrize("quota", [1, 3, 50])
    def test_returns_at_most_quota_best_first_without_repeats(self, strategy: Strategy, quota: int) -> None:
        hits = strategy.retrieve(make_query(self.matching_query), quota, None)
        assert 0 < len(hits) <= quota
        assert hits.total_matches >= len(hits)
        assert len(set(hits.ordinals.tolist())) == len(hits)
        assert np.all(np.diff(hits.scores) <= 0)
        assert hits.ordinals.dtype == np.int64 and hits.scores.dtype == np.float32

    def test_smaller_quota_is_a_prefix(self, strategy: Strategy) -> None:
        """The per-strategy reward of the policy relies on top-q being a prefix of top-Q."""
        big = strategy.retrieve(make_query(self.matching_query), 20, None)
        small = strategy.retrieve(make_query(self.matching_query), 5, None)
        assert small.ordinals.tolist() == big.ordinals[:5].tolist()

    def test_honours_the_filter_bitmap(self, strategy: Strategy) -> None:
        query = make_query(self.matching_query, filters=[Filter(field="genre", values=("jazz",))])
        allowed = strategy.collection.allowed(query.filters)
        assert allowed is not None
        hits = strategy.retrieve(query, 50, allowed)
        assert set(hits.ordinals.tolist()) <= set(allowed)

    def test_deleted_entities_never_come_back(self, index_dir: Path, tmp_path: Path) -> None:
        import shutil

        copy = tmp_path / "index"
        shutil.copytree(index_dir, copy)
        before = open_strategy(copy, self.strategy_name)
        hits = before.retrieve(make_query(self.matching_query), 10, None)
        victim = before.collection.ids[int(hits.ordinals[0])]
        before.collection.delete([victim])
        before.collection.save(copy)
        after = open_strategy(copy, self.strategy_name)
        hits = after.retrieve(make_query(self.matching_query), 1000, after.collection.allowed([]))
        assert victim not in {after.collection.ids[o] for o in hits.ordinals}

    def test_describe_is_text(self, strategy: Strategy) -> None:
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in strategy.describe().items())
