from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.analysis import text_key
from core.merge import StrategyList
from core.partitions import (
    document_partition,
    merge_partitions,
    partition_quota,
    query_partition,
    refetch_needed,
)


def test_partition_quota_follows_vespas_formula() -> None:
    # q/n + z * sqrt(q (1/n)(1 - 1/n)) with z(0.9999) = 3.719: 50 + 3.719 * 5 = 68.6 -> 69
    assert partition_quota(100, 2) == 69
    # 10 + 3.719 * sqrt(100 * 0.1 * 0.9) = 10 + 11.16 -> 22
    assert partition_quota(100, 10) == 22
    assert partition_quota(100, 1) == 100
    assert partition_quota(100, 2, probability=1.0) == 100
    assert partition_quota(1, 8) == 1  # never below 1 ...
    assert partition_quota(3, 2) == 3  # ... nor above the quota


@pytest.mark.parametrize("bad", [0, -1, True, 2.0])
def test_partition_quota_rejects_bad_counts(bad: object) -> None:
    with pytest.raises(ValueError, match="must be an int >= 1"):
        partition_quota(bad, 2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`partitions` must be an int >= 1"):
        partition_quota(10, bad)  # type: ignore[arg-type]


def test_assignment_is_stable_and_spreads() -> None:
    ids = [f"spotify:track:{i:06d}" for i in range(4000)]
    parts = [document_partition(e, 4) for e in ids]
    assert parts == [document_partition(e, 4) for e in ids]
    counts = np.bincount(parts, minlength=4)
    assert counts.min() > 900  # uniform: 1000 each, sd ~27
    assert query_partition("  Taylor SWIFT! ", 8) == query_partition("taylor swift", 8)
    assert query_partition("Beyoncé", 3) == query_partition(text_key("beyonce"), 3)
    with pytest.raises(ValueError, match="non-empty"):
        document_partition("", 2)


def _global_top(scores: np.ndarray, q: int) -> list[int]:
    return np.lexsort((np.arange(scores.size), -scores))[:q].tolist()


def _partition_list(docs: np.ndarray, scores: np.ndarray, k: int) -> StrategyList:
    order = np.lexsort((docs, -scores[docs]))[:k]  # each partition: score desc, then catalog position
    top = docs[order]
    return StrategyList("lexical", [f"d{d}" for d in top], scores[top].astype(np.float32))


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 300), parts=st.integers(1, 5), q=st.integers(1, 120), levels=st.integers(1, 6),
       seed=st.integers(0, 2**32 - 1))
def test_merge_with_refetch_equals_one_index(n: int, parts: int, q: int, levels: int, seed: int) -> None:
    """Few distinct scores: many ties across partitions; the merged list must still equal one index's."""
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, levels, size=n).astype(np.float32)
    ids = [f"d{i}" for i in range(n)]
    owner = np.array([document_partition(e, parts) for e in ids])
    positions = {e: i for i, e in enumerate(ids)}
    docs = [np.flatnonzero(owner == p) for p in range(parts)]
    asked = [partition_quota(q, parts)] * parts
    lists: list[StrategyList | None] = [_partition_list(d, scores, k) for d, k in zip(docs, asked, strict=True)]
    merged = merge_partitions("lexical", lists, q, positions)
    for p in refetch_needed(lists, asked, merged, q):
        lists[p], asked[p] = _partition_list(docs[p], scores, q), q
    merged = merge_partitions("lexical", lists, q, positions)
    assert merged.entity_ids == [f"d{i}" for i in _global_top(scores, q)]
    assert merged.scores.tolist() == scores[_global_top(scores, q)].tolist()


def test_missing_partition_and_unknown_positions() -> None:
    a = StrategyList("s", ["x", "y"], np.array([3, 1], dtype=np.float32))
    b = StrategyList("s", ["z"], np.array([3], dtype=np.float32))
    # no positions: equal scores go by partition, then rank
    assert merge_partitions("s", [a, None, b], 10).entity_ids == ["x", "z", "y"]
    assert merge_partitions("s", [a, b], 10, {"z": 0}).entity_ids == ["z", "x", "y"]
    assert merge_partitions("s", [None, None], 5).entity_ids == []
    # b answered fewer than asked: it has nothing more; a's last hit made the top 3: ask a again
    assert refetch_needed([a, b], [2, 2], merge_partitions("s", [a, b], 3), 3) == [0]
    # asked for the whole quota already: nothing to refetch
    assert refetch_needed([a, b], [3, 3], merge_partitions("s", [a, b], 3), 3) == []
