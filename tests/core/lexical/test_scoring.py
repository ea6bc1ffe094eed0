"""The Numba kernels against the NumPy reference on random corpora."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.lexical import jit
from core.lexical.index import lucene_length
from core.lexical.reference import bm25_topk_reference, impacts_reference


def random_postings(rng: np.random.Generator, n_docs: int, n_terms: int, n_fields: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    lists = [np.sort(rng.choice(n_docs, size=int(rng.integers(0, n_docs + 1)), replace=False)) for _ in range(n_terms)]
    offsets = np.zeros(n_terms + 1, dtype=np.int64)
    np.cumsum([len(x) for x in lists], out=offsets[1:])
    doc_ids = np.concatenate(lists).astype(np.uint32) if offsets[-1] else np.zeros(0, dtype=np.uint32)
    tfs = rng.integers(1, 6, size=doc_ids.size).astype(np.float32)
    term_field = rng.integers(0, n_fields, size=n_terms).astype(np.int64)
    norms = rng.uniform(0.2, 2.0, size=(n_fields, n_docs)).astype(np.float32)
    return offsets, doc_ids, tfs, term_field, norms


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_docs=st.integers(1, 200), n_terms=st.integers(1, 12),
       k=st.integers(1, 50), use_mask=st.booleans(), use_prior=st.booleans(), ties=st.booleans())
def test_kernel_matches_reference(seed: int, n_docs: int, n_terms: int, k: int, use_mask: bool, use_prior: bool,
                                  ties: bool) -> None:
    rng = np.random.default_rng(seed)
    offsets, doc_ids, tfs, term_field, norms = random_postings(rng, n_docs, n_terms, 2)
    if ties:  # identical norms and tfs: many exactly equal scores, broken by doc order
        norms[:] = 1.0
        tfs[:] = 1.0
    impacts = jit.impacts(doc_ids, tfs, term_field, offsets, norms)
    np.testing.assert_array_equal(impacts, impacts_reference(doc_ids, tfs, term_field, offsets, norms))
    q = rng.choice(n_terms, size=int(rng.integers(1, n_terms + 1)), replace=False).astype(np.int64)
    qw = rng.uniform(0.5, 3.0, size=q.size)
    idf = rng.uniform(0.1, 5.0, size=n_terms)
    mask = (rng.random(n_docs) < 0.6).astype(np.uint8) if use_mask else np.zeros(0, dtype=np.uint8)
    prior = rng.uniform(0, 2, size=n_docs).astype(np.float32) if use_prior else np.zeros(0, dtype=np.float32)
    got = jit.bm25_topk(q, qw, offsets, idf, doc_ids, impacts, mask, prior, n_docs, k)
    want = bm25_topk_reference(q, qw, offsets, idf, doc_ids, impacts, mask, prior, n_docs, k)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert got[2] == want[2]


def test_topk_orders_by_score_then_document() -> None:
    scores = np.array([1.0, 3.0, 3.0, 2.0, 3.0])
    docs, top = jit.select_topk(scores, np.array([4, 3, 2, 1, 0], dtype=np.int64), 5, 4)
    assert docs.tolist() == [1, 2, 4, 3]
    assert top.tolist() == [3.0, 3.0, 3.0, 2.0]


def test_topk_of_nothing_is_empty() -> None:
    docs, top = jit.select_topk(np.zeros(3), np.zeros(0, dtype=np.int64), 0, 10)
    assert docs.size == 0 and top.size == 0


@pytest.mark.parametrize(("length", "lucene"), [
    (0, 0), (1, 1), (23, 23), (24, 24), (40, 40), (41, 40), (100, 96), (1000, 984), (5000, 4632),
])
def test_lucene_length_matches_smallfloat(length: int, lucene: int) -> None:
    """Expected values from Lucene's SmallFloat.byte4ToInt(SmallFloat.intToByte4(length))."""
    assert lucene_length(np.array([length]))[0] == lucene
