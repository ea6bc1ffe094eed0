"""Reciprocal-rank fusion against the formula, with ties, weights and limits."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.fusion import DEFAULT_RRF_K, reciprocal_rank_fusion


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
