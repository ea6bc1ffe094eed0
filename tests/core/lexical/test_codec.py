"""Block-compressed postings: what is encoded decodes to the same postings and block bounds."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from core.lexical import jit
from core.lexical.codec import BLOCK


def random_postings(rng: np.random.Generator, n_docs: int, n_terms: int, n_fields: int, max_tf: int
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    lists = [np.unique(rng.integers(0, n_docs, size=int(rng.integers(1, min(n_docs, 700) + 1))))
             for _ in range(n_terms)]
    offsets = np.zeros(n_terms + 1, dtype=np.int64)
    np.cumsum([len(x) for x in lists], out=offsets[1:])
    doc_ids = np.concatenate(lists).astype(np.uint32)
    tfs = rng.integers(0, max_tf + 1, size=(n_fields, doc_ids.size)).astype(np.uint32)
    tfs[0, tfs.sum(axis=0) == 0] = 1  # every posting holds the term in some field
    lengths = rng.integers(1, 3000, size=(n_fields, n_docs)).astype(np.uint32)
    return offsets, doc_ids, tfs, lengths


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_docs=st.sampled_from([1, 7, 128, 129, 300, 5000, 2**22]),
       n_terms=st.integers(1, 6), n_fields=st.integers(1, 3), max_tf=st.sampled_from([1, 3, 70_000]))
def test_blocks_decode_to_the_postings(seed: int, n_docs: int, n_terms: int, n_fields: int, max_tf: int) -> None:
    rng = np.random.default_rng(seed)
    offsets, doc_ids, tfs, lengths = random_postings(rng, n_docs, n_terms, n_fields, max_tf)
    term_blocks, first, last, block_n, block_words, bits, max_tfs, min_len, words = \
        jit.encode(offsets, doc_ids, tfs, lengths)
    docs = np.zeros(BLOCK, dtype=np.int64)
    got_tfs = np.zeros((n_fields, BLOCK), dtype=np.uint32)
    for t in range(n_terms):
        got_d: list[np.ndarray] = []
        got_t: list[np.ndarray] = []
        for b in range(term_blocks[t], term_blocks[t + 1]):
            start = offsets[t] + BLOCK * (b - term_blocks[t])
            n = jit.decode_block(words, block_words, bits, first, block_n, b, docs, got_tfs)
            assert n == min(BLOCK, offsets[t + 1] - start)
            assert docs[0] == first[b] and docs[n - 1] == last[b]
            got_d.append(docs[:n].copy())
            got_t.append(got_tfs[:, :n].copy())
            want_tf = tfs[:, start:start + n]
            held = want_tf > 0
            np.testing.assert_array_equal(max_tfs[b], want_tf.max(axis=1))
            block_lengths = lengths[:, doc_ids[start:start + n].astype(np.int64)]
            shortest = np.where(held, block_lengths, np.iinfo(np.uint32).max).min(axis=1)
            np.testing.assert_array_equal(min_len[b], np.where(held.any(axis=1), shortest, 0))
        np.testing.assert_array_equal(np.concatenate(got_d), doc_ids[offsets[t]:offsets[t + 1]])
        np.testing.assert_array_equal(np.concatenate(got_t, axis=1), tfs[:, offsets[t]:offsets[t + 1]])


def test_dense_postings_take_about_a_bit_per_gap() -> None:
    """Every document holds the term once: gaps are 0 and frequencies 1, so a block of 128 costs
    4 words (the frequency stream at one bit each) and no gap words."""
    doc_ids = np.arange(1024, dtype=np.uint32)
    enc = jit.encode(np.array([0, 1024], dtype=np.int64), doc_ids, np.ones((1, 1024), dtype=np.uint32),
                     np.ones((1, 1024), dtype=np.uint32))
    assert enc[-1].size == 8 * 4


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_docs=st.sampled_from([1, 129, 5000, 2**22]), n_fields=st.integers(1, 3),
       max_tf=st.sampled_from([1, 3, 70_000]))
def test_documents_alone_and_single_frequencies_read_as_decode_block(seed: int, n_docs: int, n_fields: int,
                                                                     max_tf: int) -> None:
    rng = np.random.default_rng(seed)
    offsets, doc_ids, tfs, lengths = random_postings(rng, n_docs, 4, n_fields, max_tf)
    _, first, _, block_n, block_words, bits, _, _, words = jit.encode(offsets, doc_ids, tfs, lengths)
    docs = np.zeros(BLOCK, dtype=np.int64)
    alone = np.zeros(BLOCK, dtype=np.int64)
    got_tfs = np.zeros((n_fields, BLOCK), dtype=np.uint32)
    for b in range(first.size):
        n = jit.decode_block(words, block_words, bits, first, block_n, b, docs, got_tfs)
        assert jit.decode_docs(words, block_words, bits, first, block_n, b, alone) == n
        np.testing.assert_array_equal(alone[:n], docs[:n])
