"""The simulator's per-search MRR@10 and nDCG@10: ir-measures on bounded qrels, exact against
ir-measures on the full qrels."""

from __future__ import annotations

import ir_measures
import numpy as np
import pytest
from ir_measures import RR, nDCG

from core.simulator.metrics import GAINS, NO_DOC, Records, bounded_qrels, rank_measures

MEASURES = [RR(rel=2) @ 10, nDCG(gains=GAINS) @ 10]


def full_measures(shown: np.ndarray, relevant: np.ndarray, target: int) -> list[float]:
    """RR and nDCG of the top 10 through ir-measures on the full qrels: the target grade 2, every
    other relevant ordinal grade 1."""
    qrels = {"q": {str(d): 1 for d in relevant.tolist()} | {str(target): 2}}
    run = {"q": {str(d): float(10 - r) for r, d in enumerate(shown[:10].tolist())}}
    got = {m.measure: m.value for m in ir_measures.iter_calc(MEASURES, qrels, run)} if shown.size else {}
    return [got.get(m, 0.0) for m in MEASURES]


def bounded_measures(searches: list[tuple[np.ndarray, np.ndarray, int]]) -> np.ndarray:
    """float64 (N, 2) through bounded_qrels and one rank_measures batch, as Records does."""
    n = len(searches)
    shown, judged = np.full((n, 10), NO_DOC), np.full((n, 11), NO_DOC)
    grades = np.zeros((n, 11), dtype=np.int8)
    for i, (s, relevant, target) in enumerate(searches):
        docs, g = bounded_qrels(s, relevant, target)
        shown[i, : min(s.size, 10)] = s[:10]
        judged[i, : docs.size], grades[i, : docs.size] = docs, g
    return rank_measures(shown, judged, grades)


def small_cases() -> list[tuple[np.ndarray, np.ndarray, int]]:
    a = np.array
    return [
        (a([5, 9, 7]), a([7, 9]), 7),  # target third, another relevant second
        (a([1, 2]), a([7, 9]), 7),  # nothing relevant shown
        (a([], dtype=np.int64), a([3, 4]), 3),  # nothing shown
        (a(list(range(20, 30))), a(list(range(0, 40))), 35),  # ten relevant shown, target not
        (a([35, 0, 50, 1]), a(list(range(0, 40))), 35),  # the ideal needs unseen relevant ones
        (a([8, 3]), a([3]), 3),  # the target is the whole relevant set
        (a([2, 6]), a([1, 2, 4]), 6),  # a target outside the relevant set still grades 2
    ]


def test_bounded_qrels_equal_ir_measures_on_the_full_qrels() -> None:
    cases = small_cases()
    np.testing.assert_allclose(bounded_measures(cases), [full_measures(*c) for c in cases], rtol=0, atol=1e-12)


def test_bounded_qrels_equal_the_full_qrels_on_random_searches() -> None:
    rng = np.random.default_rng(13)
    cases = []
    for _ in range(200):
        n_items = int(rng.integers(2, 300))
        relevant = np.unique(rng.choice(n_items, size=int(rng.integers(1, n_items))))
        target = int(rng.choice(relevant))
        shown = rng.permutation(n_items)[: int(rng.integers(0, 25))].astype(np.int64)
        cases.append((shown, relevant, target))
    np.testing.assert_allclose(bounded_measures(cases), [full_measures(*c) for c in cases], rtol=0, atol=1e-12)


def test_bounded_qrels_stay_small_on_large_relevant_sets() -> None:
    relevant = np.arange(5000, dtype=np.int64)
    docs, grades = bounded_qrels(np.arange(100, 120, dtype=np.int64), relevant, 4000)
    assert docs.size == 11 and docs[0] == 4000 and grades.tolist() == [2] + [1] * 10
    docs, grades = bounded_qrels(np.array([9000], dtype=np.int64), relevant, 4000)
    assert docs.size == 10 and set(docs[1:].tolist()).isdisjoint({4000, 9000})


def test_by_hand() -> None:
    # exponential gains: target 3, other relevant 1; the ideal holds the target then one more
    (rr, ndcg), = bounded_measures([(np.array([5, 9, 7]), np.array([7, 9]), 7)])
    assert rr == pytest.approx(1 / 3)
    assert ndcg == pytest.approx((1 / np.log2(3) + 3 / np.log2(4)) / (3 + 1 / np.log2(3)))


def test_records_measure_pending_rows_in_one_batch_and_again_after_a_rewrite() -> None:
    rec = Records.empty("p", ("lexical",), 3)
    assert rec.rr.tolist() == [0.0, 0.0, 0.0] and rec.ndcg.tolist() == [0.0, 0.0, 0.0]  # nothing shown
    rec.set_ranking(0, np.array([4, 2, 8]), np.array([2, 8]), 8)
    rec.set_ranking(2, np.array([8]), np.array([2, 8]), 8)
    assert rec.rr.tolist() == pytest.approx([1 / 3, 0.0, 1.0])
    assert rec.ndcg[2] == pytest.approx(3 / (3 + 1 / np.log2(3)))
    rec.set_ranking(0, np.array([8, 2]), np.array([2, 8]), 8)  # a row written again is measured again
    assert rec.rr[0] == 1.0 and rec.ndcg[0] == pytest.approx(1.0)
    assert rec.summary()["mrr@10"] == pytest.approx((1 + 0 + 1) / 3)


def test_bad_cutoff_is_refused() -> None:
    with pytest.raises(ValueError, match="`k` must be >= 1, but got 0"):
        bounded_qrels(np.array([1]), np.array([1]), 1, 0)
