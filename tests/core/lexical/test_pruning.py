"""The block-max pruned kernel returns the exhaustive kernel's top k: same documents, same
scores bit for bit, same order, ties included."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.lexical import jit, pruning
from tests.core.lexical.test_scoring import Corpus, random_corpus, random_query

NO_MASK = np.zeros(0, dtype=np.uint8)
NO_PRIOR = np.zeros(0, dtype=np.float32)


def assert_same_topk(args: tuple[object, ...]) -> tuple[int, int]:
    """Run both kernels on `args`; returns (pruned count, exhaustive count)."""
    want = jit.bm25_topk(*args)
    got = jit.bm25_topk_pruned(*args)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert got[2] <= want[2]
    return int(got[2]), int(want[2])


corpora = st.fixed_dictionaries({
    "n_docs": st.sampled_from([1, 130, 1000, 5000, 20_000, 20_000]), "n_terms": st.integers(1, 10),
    "n_fields": st.integers(1, 3), "skewed": st.booleans(), "ties": st.booleans(),
    "k1": st.sampled_from([0.0, 0.9, 1.2, 3.0]), "b": st.sampled_from([0.0, 0.75, 1.0]),
    "quantize": st.booleans(), "one_field_per_term": st.booleans(),
})


@settings(max_examples=150, deadline=None)
@given(corpus=corpora, seed=st.integers(0, 2**32 - 1), use_mask=st.booleans(), use_prior=st.booleans())
def test_pruned_equals_exhaustive(corpus: dict[str, object], seed: int, use_mask: bool, use_prior: bool) -> None:
    rng = np.random.default_rng(seed)
    c = random_corpus(rng, **corpus)  # type: ignore[arg-type]
    for k in (1, 10, 100, 1000):
        for _ in range(2):
            query = random_query(rng, c, use_mask=use_mask, use_prior=use_prior, ties=bool(corpus["ties"]))
            assert_same_topk(c.args(*query, k))


@pytest.fixture(scope="module")
def skewed() -> Corpus:
    """20,000 documents, a few long posting lists and many short ones, Zipf-like frequencies."""
    return random_corpus(np.random.default_rng(7), n_docs=20_000, n_terms=40, n_fields=2, skewed=True, ties=False,
                         k1=1.2, b=0.75, quantize=True, one_field_per_term=False)


def test_pruning_skips_work_on_a_skewed_corpus(skewed: Corpus) -> None:
    """Not a speed test: the pruned kernel fully scores fewer documents than match, at top 10.

    Regression: these queries first caught a non-essential term read from a stale scratch block,
    when its cursor sat, not yet decoded, on the candidate (its block's first document)."""
    rng = np.random.default_rng(1)
    pruned = total = 0
    for _ in range(30):
        terms = rng.choice(skewed.n_terms, size=4, replace=False).astype(np.int64)
        got, want = assert_same_topk(skewed.args(terms, rng.uniform(0.5, 3, size=4), NO_MASK, NO_PRIOR, 10))
        pruned += got
        total += want
    assert pruned < total / 2


@pytest.mark.parametrize("k", [1, 10, 100, 1000])
def test_one_term(skewed: Corpus, k: int) -> None:
    longest = int(np.argmax(np.diff(skewed.layout[0])))
    assert_same_topk(skewed.args(np.array([longest]), np.array([2.0]), NO_MASK, NO_PRIOR, k))


def test_everything_masked_returns_nothing(skewed: Corpus) -> None:
    args = skewed.args(np.arange(5), np.ones(5), np.zeros(skewed.n_docs, dtype=np.uint8), NO_PRIOR, 10)
    docs, scores, count = jit.bm25_topk_pruned(*args)
    assert docs.size == 0 and scores.size == 0 and count == 0


def test_k_above_the_matches_returns_every_match(skewed: Corpus) -> None:
    shortest = int(np.argmin(np.diff(skewed.layout[0])))
    got, want = assert_same_topk(skewed.args(np.array([shortest, 0]), np.ones(2), NO_MASK, NO_PRIOR, 50_000))
    assert got == want


def test_empty_posting_lists_match_nothing() -> None:
    c = random_corpus(np.random.default_rng(3), n_docs=300, n_terms=3, n_fields=1, skewed=False, ties=False, k1=1.2,
                      b=0.75, quantize=False, one_field_per_term=False)
    empty_blocks = np.repeat(c.layout[0][:1], 4)  # three terms, no blocks
    layout = (empty_blocks, *c.layout[1:])
    args = (np.arange(3), np.ones(3), *layout, c.block_ub, c.norm_code, c.norm_table, c.inner_w, c.k1, NO_MASK,
            NO_PRIOR, 0.0, c.n_docs, 10)
    docs, _, count = jit.bm25_topk_pruned(*args)
    assert docs.size == 0 and count == 0


def test_single_block_terms_with_a_prior(skewed: Corpus) -> None:
    sizes = np.diff(skewed.layout[0])
    single = np.flatnonzero(sizes == 1)[:4].astype(np.int64)
    prior = np.random.default_rng(2).uniform(0, 3, size=skewed.n_docs).astype(np.float32)
    for k in (1, 10, 100):
        assert_same_topk(skewed.args(single, np.linspace(1, 2, single.size), NO_MASK, prior, k))


@pytest.mark.parametrize("ties", [False, True])
def test_many_windows(ties: bool) -> None:
    """Documents spread over several windows (pruning.WINDOW ids each), blocks straddling their
    edges; with a mask and a prior, at every k."""
    rng = np.random.default_rng(11)
    c = random_corpus(rng, n_docs=4 * pruning.WINDOW + 100, n_terms=6, n_fields=2, skewed=True, ties=ties, k1=1.2,
                      b=0.75, quantize=True, one_field_per_term=False)
    for k in (1, 10, 100, 1000):
        for use_mask, use_prior in ((False, False), (True, True)):
            query = random_query(rng, c, use_mask=use_mask, use_prior=use_prior, ties=ties)
            assert_same_topk(c.args(*query, k))
