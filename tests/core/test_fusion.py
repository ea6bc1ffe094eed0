"""Reciprocal-rank fusion against the formula, with ties, weights and limits."""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Sequence

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.fusion import DEFAULT_RRF_K, reciprocal_rank_fusion, rrf_scores


def test_formula_with_k_60() -> None:
    fused = dict(reciprocal_rank_fusion([["a", "b", "c"], ["b", "d"]]))
    assert DEFAULT_RRF_K == 60
    assert fused["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert fused["a"] == pytest.approx(1 / 61) and fused["d"] == pytest.approx(1 / 62)
    assert fused["c"] == pytest.approx(1 / 63)


def test_agreement_beats_one_top_rank() -> None:
    fused = reciprocal_rank_fusion([["x", "y"], ["z", "y"], ["w", "y"]])
    assert fused[0][0] == "y"


def test_ties_break_by_best_rank_then_first_seen() -> None:
    # "a" and "b" both score 1/62 + 1/63 (best rank 2), "c" and "d" both 1/61: first seen wins.
    fused = reciprocal_rank_fusion([["c", "a", "b"], ["d", "b", "a"]])
    assert [item for item, _ in fused] == ["a", "b", "c", "d"]
    assert [item for item, _ in reciprocal_rank_fusion([["c"], ["d"]])] == ["c", "d"]
    assert [item for item, _ in reciprocal_rank_fusion([["d"], ["c"]])] == ["d", "c"]


def test_repeats_within_a_list_count_once_and_weights_scale() -> None:
    fused = dict(reciprocal_rank_fusion([["a", "a", "b"]], k=1))
    assert fused == {"a": pytest.approx(1 / 2), "b": pytest.approx(1 / 4)}
    weighted = dict(reciprocal_rank_fusion([["a"], ["b"]], weights=[2.0, 0.0], k=1))
    assert weighted == {"a": pytest.approx(1.0), "b": 0.0}


def test_limit_and_integer_ids() -> None:
    fused = reciprocal_rank_fusion([[3, 1, 2], [1, 3]], limit=2)
    assert [item for item, _ in fused] == [3, 1]  # equal scores and best ranks; 3 was seen first
    assert len(fused) == 2 and reciprocal_rank_fusion([]) == [] and reciprocal_rank_fusion([[]]) == []


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"k": 0}, "`k` must be finite and > 0, but got 0"),
    ({"k": float("nan")}, "`k` must be finite"),
    ({"weights": [1.0]}, "`weights` must have 2 values"),
    ({"weights": [1.0, -1.0]}, "`weights` must be finite and >= 0"),
    ({"limit": -1}, "`limit` must be >= 0"),
])
def test_rejects(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        reciprocal_rank_fusion([["a"], ["b"]], **kwargs)  # type: ignore[arg-type]


@given(st.lists(st.lists(st.integers(0, 30), max_size=15), max_size=4))
def test_properties(rankings: list[list[int]]) -> None:
    fused = reciprocal_rank_fusion(rankings)
    items = [item for item, _ in fused]
    scores = [score for _, score in fused]
    assert sorted(items) == sorted({i for r in rankings for i in r})
    assert all(a >= b for a, b in itertools.pairwise(scores))
    for item, score in fused:
        expected = sum(1 / (60 + r.index(item) + 1) for r in rankings if item in r)
        assert score == pytest.approx(expected)


def test_rrf_scores_of_a_rank_matrix_by_hand() -> None:
    ranks = np.array([[1, 0, 3], [0, 0, 0], [2, 2, 0]], dtype=np.int32)
    np.testing.assert_allclose(rrf_scores(ranks), [1 / 61 + 1 / 63, 0.0, 2 / 62], rtol=1e-15)
    np.testing.assert_allclose(rrf_scores(ranks, 1.0, [0.5, 1.0, 2.0]), [0.5 / 2 + 2 / 4, 0.0, 0.5 / 3 + 1 / 3],
                               rtol=1e-15)
    assert rrf_scores(np.zeros((0, 4), dtype=np.int32)).shape == (0,)


@pytest.mark.parametrize(("ranks", "kwargs", "match"), [
    (np.ones(3, dtype=np.int32), {}, "`ranks` must have shape \\(n, S\\), but got shape \\(3,\\)"),
    (np.ones((2, 3), dtype=np.int32), {"weights": [1.0]}, "`weights` must have 3 values"),
    (np.ones((2, 1), dtype=np.int32), {"weights": [float("inf")]}, "`weights` must be finite and >= 0"),
    (np.ones((2, 1), dtype=np.int32), {"k": -1.0}, "`k` must be finite and > 0, but got -1.0"),
])
def test_rrf_scores_rejects(ranks: np.ndarray, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        rrf_scores(ranks, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("n_lists", [1, 2, 3, 4, 5, 7])
def test_rrf_scores_equal_the_former_ranking_formula_bit_for_bit(n_lists: int) -> None:
    """Guards the merge of core.ranking.rrf_scores into core.fusion: the RRF ranker's scores, and so
    the experiment's rankings (near-ties included), must not move by one ulp. The former formula is
    written out here; numpy's row sum adds left to right below 8 columns, as rrf_scores does."""
    ranks = np.random.default_rng(n_lists).integers(0, 300, size=(5000, n_lists)).astype(np.int32)
    r = ranks.astype(np.float64)
    former = np.where(r > 0, 1.0 / (DEFAULT_RRF_K + r), 0.0).sum(axis=1)
    assert np.array_equal(rrf_scores(ranks), former)


def former_fusion(rankings: Sequence[Sequence[Hashable]], k: float,
                  weights: Sequence[float]) -> list[tuple[Hashable, float]]:
    """reciprocal_rank_fusion as it was before it was built on rrf_scores (dicts, list by list)."""
    scores: dict[Hashable, float] = {}
    best_rank: dict[Hashable, int] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        seen: set[Hashable] = set()
        for rank, item in enumerate(ranking, start=1):
            if item in seen:
                continue
            seen.add(item)
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
            best_rank[item] = min(best_rank.get(item, rank), rank)
    first_seen = {item: i for i, item in enumerate(scores)}
    return sorted(scores.items(), key=lambda kv: (-kv[1], best_rank[kv[0]], first_seen[kv[0]]))


@given(st.lists(st.lists(st.integers(0, 40), max_size=30), max_size=12), st.sampled_from([1.0, 60.0, 2.5]),
       st.data())
def test_fusion_of_id_lists_is_unchanged_bit_for_bit(rankings: list[list[int]], k: float, data: st.DataObject) -> None:
    """Guards the rewrite of reciprocal_rank_fusion on rrf_scores: same ids, order and float scores
    as before, for any number of lists, repeats and weights."""
    weights = data.draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 3.0]), min_size=len(rankings),
                                 max_size=len(rankings)))
    assert reciprocal_rank_fusion(rankings, k=k, weights=weights) == former_fusion(rankings, k, weights)
