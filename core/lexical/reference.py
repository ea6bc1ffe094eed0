"""Plain NumPy references of the lexical kernels (core.lexical.scoring, core.lexical.pruning),
for tests. Same contracts, same values; postings are decoded with the plain-Python codec."""

from __future__ import annotations

import numpy as np

from core.lexical import codec
from core.lexical.pruning import BOUND_MARGIN


def decode_term(term_blocks: np.ndarray, block_first: np.ndarray, block_n: np.ndarray, block_words: np.ndarray,
                block_bits: np.ndarray, words: np.ndarray, tid: int) -> tuple[np.ndarray, np.ndarray]:
    """All postings of term tid: (docs int64 (P,), tfs uint32 (F, P))."""
    n_fields = block_bits.shape[1] - 1
    docs: list[np.ndarray] = [np.zeros(0, dtype=np.int64)]
    tfs: list[np.ndarray] = [np.zeros((n_fields, 0), dtype=np.uint32)]
    for b in range(int(term_blocks[tid]), int(term_blocks[tid + 1])):
        d = np.zeros(codec.BLOCK, dtype=np.int64)
        t = np.zeros((n_fields, codec.BLOCK), dtype=np.uint32)
        n = codec.decode_block(words, block_words, block_bits, block_first, block_n, b, d, t)
        docs.append(d[:n])
        tfs.append(t[:, :n])
    return np.concatenate(docs), np.concatenate(tfs, axis=1)


def impacts_reference(docs: np.ndarray, tfs: np.ndarray, norm_code: np.ndarray, norm_table: np.ndarray,
                      inner_w: np.ndarray, k1: float) -> np.ndarray:
    """BM25F impact of each posting, float64 (P,) (see core.lexical.scoring)."""
    tfw = np.zeros(docs.size)
    for f in range(tfs.shape[0]):
        held = tfs[f] > 0
        inv = np.where(held, norm_table[f][norm_code[f, docs]], 0).astype(np.float64)
        tfw += np.where(held, inner_w[f] * tfs[f].astype(np.float64) * inv, 0.0)
    out = np.zeros(docs.size)
    np.divide(tfw, k1 + tfw, out=out, where=tfw > 0)
    return out


def block_upper_bounds_reference(block_max_tf: np.ndarray, min_len_inv_norm: np.ndarray, inner_w: np.ndarray,
                                 k1: float) -> np.ndarray:
    tfw = np.zeros(block_max_tf.shape[0])
    for f in range(block_max_tf.shape[1]):
        held = block_max_tf[:, f] > 0
        inv = np.where(held, min_len_inv_norm[:, f], 0).astype(np.float64)
        tfw += np.where(held, inner_w[f] * block_max_tf[:, f].astype(np.float64) * inv, 0.0)
    out = np.zeros(tfw.size)
    np.divide(tfw, k1 + tfw, out=out, where=tfw > 0)
    return out * (1.0 + BOUND_MARGIN)


def bm25_topk_reference(
    term_ids: np.ndarray, term_weights: np.ndarray, term_blocks: np.ndarray, block_first: np.ndarray,
    block_last: np.ndarray, block_n: np.ndarray, block_words: np.ndarray, block_bits: np.ndarray,
    words: np.ndarray, block_ub: np.ndarray, norm_code: np.ndarray, norm_table: np.ndarray, inner_w: np.ndarray,
    k1: float,
    mask: np.ndarray, prior: np.ndarray, prior_max: float, n_docs: int, k: int,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Same contract as core.lexical.scoring.bm25_topk."""
    scores = np.zeros(n_docs)
    matched = np.zeros(n_docs, dtype=bool)
    for tid, w in zip(term_ids, term_weights, strict=True):
        docs, tfs = decode_term(term_blocks, block_first, block_n, block_words, block_bits, words, int(tid))
        scores[docs] += w * impacts_reference(docs, tfs, norm_code, norm_table, inner_w, k1)
        matched[docs] = True
    if mask.size:
        matched &= mask.astype(bool)
    if prior.size:
        scores[matched] += prior[matched].astype(np.float64)
    scores = scores.astype(np.float32).astype(np.float64)  # ranked by the float32 score
    docs = np.flatnonzero(matched)
    order = np.lexsort((docs, -scores[docs]))[:k]
    return docs[order].astype(np.int64), scores[docs[order]], int(matched.sum())
