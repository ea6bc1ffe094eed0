"""nDCG@k: by hand, against ir-measures (trec_eval) on random graded cases, and its input errors."""

from __future__ import annotations

import math

import ir_measures
import numpy as np
import pytest
from ir_measures import Qrel, ScoredDoc, nDCG

from core.metrics import DISCOUNT_TABLE_RANKS, ndcg_at_k

GRADES = 4  # grades 0..3, the range of core.ranking_train.graded_labels
EXP_GAIN = {g: 2**g - 1 for g in range(GRADES)}


def test_by_hand() -> None:
    dcg = 1 / math.log2(3) + 3 / math.log2(4)
    ideal = 3 + 1 / math.log2(3)
    assert ndcg_at_k(np.array([0.0, 1.0, 3.0, 0.0]), np.array([1.0, 3.0]), 10) == pytest.approx(dcg / ideal)
    assert ndcg_at_k(np.array([0.0, 1.0, 3.0]), np.array([3.0, 1.0, 0.0]), 1) == 0.0
    assert ndcg_at_k(np.array([3.0, 1.0]), np.array([1.0, 3.0, 0.0]), 2) == pytest.approx(1.0)
    # Only the k largest ideal gains count.
    assert ndcg_at_k(np.array([1.0]), np.array([1.0, 1.0, 1.0]), 1) == 1.0


def test_no_relevant_item() -> None:
    assert ndcg_at_k(np.zeros(3), np.zeros(5), 10) == 0.0
    assert ndcg_at_k(np.zeros(3), np.zeros(0), 10, no_relevant=1.0) == 1.0
    assert ndcg_at_k(np.zeros(0), np.array([7.0]), 10) == 0.0


def test_ranks_beyond_the_discount_table() -> None:
    n = DISCOUNT_TABLE_RANKS + 20
    gains = np.zeros(n)
    gains[-1] = 1.0
    assert ndcg_at_k(gains, np.array([1.0]), n) == pytest.approx(1 / math.log2(n + 1))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"k": 0}, "`k` must be an integer >= 1, but got 0"),
    ({"k": 2.0}, "`k` must be an integer >= 1"),
    ({"k": True}, "`k` must be an integer >= 1"),
    ({"gains": np.ones((2, 2))}, "`gains` must be a 1-D array of gains, but got shape \\(2, 2\\)"),
    ({"gains": np.array([1.0, -1.0])}, "`gains` must be finite and >= 0"),
    ({"ideal_gains": np.array([np.nan])}, "`ideal_gains` must be finite and >= 0"),
])
def test_rejects(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"gains": np.ones(2), "ideal_gains": np.ones(2), "k": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        ndcg_at_k(**args)  # type: ignore[arg-type]


def random_case(rng: np.random.Generator, q: int) -> tuple[list[Qrel], list[ScoredDoc]]:
    """One query: up to 30 judged documents (grades 0..3, some never retrieved) and a run of up to
    25 documents (some unjudged) whose scores take few values, so ties are frequent."""
    docs = [f"d{i:03d}" for i in rng.permutation(60)[: rng.integers(1, 40)]]
    judged = docs[: rng.integers(0, min(len(docs), 30) + 1)]
    retrieved = [docs[i] for i in rng.permutation(len(docs))[: rng.integers(0, min(len(docs), 25) + 1)]]
    grades = rng.integers(0, GRADES, size=len(judged))
    scores = rng.integers(0, 6, size=len(retrieved)).astype(float)
    return ([Qrel(f"q{q}", d, int(g)) for d, g in zip(judged, grades, strict=True)],
            [ScoredDoc(f"q{q}", d, float(s)) for d, s in zip(retrieved, scores, strict=True)])


def ours(qrels: list[Qrel], run: list[ScoredDoc], k: int) -> float:
    """nDCG@k with the exponential gain, the run ordered as trec_eval orders it: by score, ties by
    document id, larger first (ir-measures computes nDCG through pytrec_eval, i.e. trec_eval)."""
    grade = {r.doc_id: r.relevance for r in qrels}
    ranked = sorted(run, key=lambda d: (d.score, d.doc_id), reverse=True)
    gains = np.array([EXP_GAIN[grade.get(d.doc_id, 0)] for d in ranked], dtype=np.float64)
    ideal = np.array([EXP_GAIN[r.relevance] for r in qrels], dtype=np.float64)
    return ndcg_at_k(gains, ideal, k)


@pytest.mark.parametrize("k", [1, 3, 10, 20])
def test_agrees_with_ir_measures(k: int) -> None:
    rng = np.random.default_rng(k)
    cases = [random_case(rng, q) for q in range(200)]
    qrels = [r for qr, _ in cases for r in qr]
    run = [d for _, rn in cases for d in rn]
    measure = nDCG(gains=EXP_GAIN) @ k
    theirs = {m.query_id: m.value for m in ir_measures.iter_calc([measure], qrels, run)}
    # trec_eval scores the queries that have judgements (a query without relevant ones: 0).
    mine = {qr[0].query_id: ours(qr, rn, k) for qr, rn in cases if qr}
    assert set(theirs) <= set(mine)
    for q, value in mine.items():
        assert value == pytest.approx(theirs.get(q, 0.0), abs=1e-12), q
    assert np.mean(list(mine.values())) == pytest.approx(ir_measures.calc_aggregate([measure], qrels, run)[measure],
                                                        abs=1e-12)
