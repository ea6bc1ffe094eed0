"""The exhaustive BM25F kernel and the block bounds against their NumPy references, on random
block-encoded corpora."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.lexical import codec, jit
from core.lexical.codec import BLOCK
from core.lexical.index import lucene_length
from core.lexical.norms import norm_codes, norm_table
from core.lexical.reference import (
    block_upper_bounds_reference,
    bm25_topk_reference,
    impacts_reference,
)


@dataclass(frozen=True, kw_only=True)
class Corpus:
    """A block-encoded random corpus with its BM25F statistics."""

    n_docs: int
    n_terms: int
    layout: tuple[np.ndarray, ...]  # term_blocks, block_first, block_last, block_n, block_words, block_bits, words
    block_max_tf: np.ndarray
    block_min_len: np.ndarray
    norm_code: np.ndarray
    norm_table: np.ndarray
    min_len_inv_norm: np.ndarray
    inner_w: np.ndarray
    k1: float
    block_ub: np.ndarray

    def args(self, term_ids: np.ndarray, weights: np.ndarray, mask: np.ndarray, prior: np.ndarray, k: int
             ) -> tuple[Any, ...]:
        """The kernels' arguments for one query."""
        prior_max = float(prior.max()) if prior.size else 0.0
        return (term_ids, weights, *self.layout, self.block_ub, self.norm_code, self.norm_table, self.inner_w, self.k1,
                mask, prior, prior_max, self.n_docs, k)


def inv_norm_of(lengths: np.ndarray, avgdl: np.ndarray, b: float, quantize: bool) -> np.ndarray:
    """float32 1 / (1 - b + b * L / avgdl) per field row, as the index computes it."""
    q = lucene_length(lengths.ravel()).reshape(lengths.shape) if quantize else lengths.astype(np.int64)
    with np.errstate(divide="ignore"):
        return (1.0 / (1.0 - b + b * q / avgdl[:, None])).astype(np.float32)


def random_corpus(rng: np.random.Generator, *, n_docs: int, n_terms: int, n_fields: int, skewed: bool,
                  ties: bool, k1: float, b: float, quantize: bool, one_field_per_term: bool) -> Corpus:
    """Random postings, block-encoded. skewed: a few long lists, many short, Zipf-like tfs.
    ties: every tf 1, every length equal, so each term's impacts are all equal. Lengths are
    drawn below 30, 300 or 100,000, so that exact norm codes come as uint8, uint16 or uint32."""
    lengths = rng.integers(0, rng.choice([30, 300, 100_000]), size=(n_fields, n_docs)).astype(np.uint32)
    lengths[:, rng.random(n_docs) < 0.1] = 0  # some empty fields
    lengths[0, lengths.sum(axis=0) == 0] = 1 + rng.integers(0, 50)
    if ties:
        lengths[:] = 20
    if skewed:
        dfs = np.minimum(n_docs, (n_docs * rng.pareto(1.0, size=n_terms) / 20).astype(np.int64) + 1)
    else:
        dfs = rng.integers(0, n_docs + 1, size=n_terms)
    lists = [np.sort(rng.choice(n_docs, size=int(df), replace=False)) for df in dfs]
    offsets = np.zeros(n_terms + 1, dtype=np.int64)
    np.cumsum([x.size for x in lists], out=offsets[1:])
    doc_ids = np.concatenate(lists).astype(np.uint32)
    shape = (n_fields, doc_ids.size)
    tfs = rng.zipf(2.0, size=shape) if skewed else rng.integers(1, 6, size=shape)
    tfs = np.minimum(tfs, 1000).astype(np.uint32)
    held = rng.random((n_fields, doc_ids.size)) < 0.6
    if one_field_per_term:  # the per-field sum: a term's postings hold one field
        field = np.repeat(rng.integers(0, n_fields, size=n_terms), np.diff(offsets))
        held = np.arange(n_fields)[:, None] == field[None, :]
    held &= lengths[:, doc_ids.astype(np.int64)] > 0
    first = np.argmax(lengths[:, doc_ids.astype(np.int64)] > 0, axis=0)  # a non-empty field
    held[first, np.arange(doc_ids.size)] |= ~held.any(axis=0)
    tfs = np.where(held, 1 if ties else tfs, 0).astype(np.uint32)
    enc = jit.encode(offsets, doc_ids, tfs, lengths)
    term_blocks, block_first, block_last, block_n, block_words, block_bits, max_tf, min_len, words = enc
    avgdl = np.maximum(lengths.sum(axis=1) / np.maximum((lengths > 0).sum(axis=1), 1), 1e-9)
    inner_w = np.ones(n_fields) if ties else rng.uniform(0.1, 3.0, size=n_fields)
    quantization = "lucene" if quantize else "exact"
    code = norm_codes(lengths, quantization)
    table = norm_table(avgdl, b, quantization, code)
    min_len_inv_norm = inv_norm_of(min_len.T, avgdl, b, quantize).T.copy()
    return Corpus(n_docs=n_docs, n_terms=n_terms,
                  layout=(term_blocks, block_first, block_last, block_n, block_words, block_bits, words),
                  block_max_tf=max_tf, block_min_len=min_len, norm_code=code,
                  norm_table=table, min_len_inv_norm=min_len_inv_norm, inner_w=inner_w, k1=k1,
                  block_ub=jit.block_upper_bounds(max_tf, min_len_inv_norm, inner_w, k1))


corpora = st.fixed_dictionaries({
    "n_docs": st.sampled_from([1, 5, 130, 400, 3000]), "n_terms": st.integers(1, 8), "n_fields": st.integers(1, 3),
    "skewed": st.booleans(), "ties": st.booleans(), "k1": st.sampled_from([0.0, 0.9, 1.2, 3.0]),
    "b": st.sampled_from([0.0, 0.4, 0.75, 1.0]), "quantize": st.booleans(), "one_field_per_term": st.booleans(),
})


def random_query(rng: np.random.Generator, corpus: Corpus, *, use_mask: bool, use_prior: bool, ties: bool
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(term_ids, term_weights, mask, prior) for a query of distinct terms."""
    n = corpus.n_docs
    term_ids = rng.choice(corpus.n_terms, size=int(rng.integers(1, corpus.n_terms + 1)), replace=False)
    weights = np.ones(term_ids.size) if ties else rng.uniform(0.1, 5.0, size=term_ids.size)
    mask = (rng.random(n) < 0.6).astype(np.uint8) if use_mask else np.zeros(0, dtype=np.uint8)
    prior = (rng.uniform(0, 2, size=n) if use_prior else np.zeros(0)).astype(np.float32)
    if use_prior and ties:
        prior[:] = 0.5
    return term_ids.astype(np.int64), weights, mask, prior


@settings(max_examples=80, deadline=None)
@given(corpus=corpora, seed=st.integers(0, 2**32 - 1), k=st.integers(1, 3500), use_mask=st.booleans(),
       use_prior=st.booleans())
def test_exhaustive_kernel_matches_reference(corpus: dict[str, object], seed: int, k: int, use_mask: bool,
                                             use_prior: bool) -> None:
    rng = np.random.default_rng(seed)
    c = random_corpus(rng, **corpus)  # type: ignore[arg-type]
    args = c.args(*random_query(rng, c, use_mask=use_mask, use_prior=use_prior, ties=bool(corpus["ties"])), k)
    got = jit.bm25_topk(*args)
    want = bm25_topk_reference(*args)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert got[2] == want[2]


@settings(max_examples=40, deadline=None)
@given(corpus=corpora, seed=st.integers(0, 2**32 - 1))
def test_block_bounds_hold_every_posting(corpus: dict[str, object], seed: int) -> None:
    rng = np.random.default_rng(seed)
    c = random_corpus(rng, **corpus)  # type: ignore[arg-type]
    np.testing.assert_array_equal(
        c.block_ub, block_upper_bounds_reference(c.block_max_tf, c.min_len_inv_norm, c.inner_w, c.k1))
    _, block_first, _, block_n, block_words, block_bits, words = c.layout
    docs = np.zeros(BLOCK, dtype=np.int64)
    tfs = np.zeros((block_bits.shape[1] - 1, BLOCK), dtype=np.uint32)
    for b in range(c.block_ub.size):
        n = codec.decode_block(words, block_words, block_bits, block_first, block_n, b, docs, tfs)
        impacts = impacts_reference(docs[:n], tfs[:, :n], c.norm_code, c.norm_table, c.inner_w, c.k1)
        assert np.all(impacts > 0)
        assert np.all(impacts <= c.block_ub[b])


def test_a_one_posting_query_scores_bm25() -> None:
    """One document, one field, tf 2, length 10 = avgdl, b = 0.75, k1 = 1.2: impact 2 / 3.2."""
    enc = jit.encode(np.array([0, 1], dtype=np.int64), np.array([0], dtype=np.uint32),
                     np.array([[2]], dtype=np.uint32), np.array([[10]], dtype=np.uint32))
    layout = (enc[0], enc[1], enc[2], enc[3], enc[4], enc[5], enc[8])
    code = norm_codes(np.array([[10]], dtype=np.uint32), "lucene")
    table = norm_table(np.array([10.0]), 0.75, "lucene", code)
    docs, scores, count = jit.bm25_topk(np.array([0], dtype=np.int64), np.array([1.5]), *layout, np.ones(1), code,
                                        table, np.ones(1), 1.2, np.zeros(0, dtype=np.uint8),
                                        np.zeros(0, dtype=np.float32), 0.0, 1, 10)
    assert docs.tolist() == [0] and count == 1
    assert scores[0] == pytest.approx(1.5 * 2 / 3.2)


def test_topk_orders_by_score_then_document() -> None:
    scores = np.array([1.0, 3.0, 3.0, 2.0, 3.0])
    docs, top = jit.select_topk(scores, np.array([4, 3, 2, 1, 0], dtype=np.int64), 5, 4)
    assert docs.tolist() == [1, 2, 4, 3]
    assert top.tolist() == [3.0, 3.0, 3.0, 2.0]


def test_topk_of_nothing_is_empty() -> None:
    docs, top = jit.select_topk(np.zeros(3), np.zeros(0, dtype=np.int64), 0, 10)
    assert docs.size == 0 and top.size == 0

