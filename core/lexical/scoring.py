"""BM25F scoring and top-k selection as plain functions over flat typed arrays.

These functions are written in the subset of Python that Numba compiles; `core.lexical.jit`
applies `numba.njit` to them in one place, and `core.lexical.reference` holds the NumPy
reference they are tested against. Postings are read from the block layout of
`core.lexical.codec`; `core.lexical.pruning` holds the block-max pruned kernel, which returns the
same top k with bit-identical scores.

One scoring definition, BM25F (Robertson, Zaragoza & Taylor 2004; Lucene's CombinedFieldQuery);
the per-field sum of BM25 scores is its special case:
    inv_norm[f, d] = float32(1 / (1 - b + b * L_f(d) / avgdl_f)),
                     read as norm_table[f, norm_code[f, d]] (core.lexical.norms)
    tfw(t, d)      = sum over fields f = 0..F-1 with tf_f > 0 of
                     inner_w[f] * tf_f(t, d) * float64(inv_norm[f, d])
    impact(t, d)   = tfw / (k1 + tfw)                  (0 when tfw = 0, so 1 when k1 = 0 < tfw)
    score(d)       = sum over query terms t, in query order, of term_weight[t] * impact(t, d),
                     then + float64(prior[d]) when a prior is given; all in float64
with term_weight[t] = qtf_t * outer_w(t) * idf_t. For BM25F inner_w are the field weights and
outer_w = 1. For the per-field sum inner_w = 1, a term's postings hold one field and outer_w is
that field's weight: tf * inv / (k1 + tf * inv) = tf / (tf + k1 * (1 - b + b * L / avgdl)), which
is Lucene's BM25 (>= 8). Results are ordered by (score desc, document id asc), the score rounded
to float32 first: the wire carries float32 scores and every list breaks ties between equal scores
by catalog order (protos: Candidate.rank), so two documents whose float64 scores differ but round
to one float32 rank by document id; partitions' lists merge by that rule (core.partitions).
"""

from __future__ import annotations

import numpy as np

from core.lexical.codec import BLOCK, decode_block


def worse(score_a: float, doc_a: int, score_b: float, doc_b: int) -> bool:
    """True when (score_a, doc_a) ranks below (score_b, doc_b): lower score, or equal and later doc."""
    return score_a < score_b or (score_a == score_b and doc_a > doc_b)


def sift_down(heap_s: np.ndarray, heap_d: np.ndarray, size: int, i: int) -> None:
    """Restore the min-heap (worst entry at the root) below position i."""
    s = heap_s[i]
    d = heap_d[i]
    while True:
        child = 2 * i + 1
        if child >= size:
            break
        right = child + 1
        if right < size and worse(heap_s[right], heap_d[right], heap_s[child], heap_d[child]):
            child = right
        if not worse(heap_s[child], heap_d[child], s, d):
            break
        heap_s[i] = heap_s[child]
        heap_d[i] = heap_d[child]
        i = child
    heap_s[i] = s
    heap_d[i] = d


def select_topk(scores: np.ndarray, docs: np.ndarray, count: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best min(k, count) of docs[:count] by (scores[doc] desc, doc asc).

    scores: float64, shape (n,), indexed by doc; docs: int64 candidates, distinct.
    Returns (docs int64, scores float64), best first. A size-k min-heap; most candidates are
    rejected by one comparison with its root.
    """
    kk = min(k, count)
    heap_s = np.empty(kk, dtype=np.float64)
    heap_d = np.empty(kk, dtype=np.int64)
    for i in range(kk):
        heap_s[i] = scores[docs[i]]
        heap_d[i] = docs[i]
    for i in range(kk // 2 - 1, -1, -1):
        sift_down(heap_s, heap_d, kk, i)
    for i in range(kk, count):
        d = docs[i]
        s = scores[d]
        if s < heap_s[0] or not worse(heap_s[0], heap_d[0], s, d):
            continue
        heap_s[0] = s
        heap_d[0] = d
        sift_down(heap_s, heap_d, kk, 0)
    return drain_heap(heap_s, heap_d, kk)


def drain_heap(heap_s: np.ndarray, heap_d: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Empty a min-heap of `size` entries into (docs int64, scores float64), best first."""
    out_d = np.empty(size, dtype=np.int64)
    out_s = np.empty(size, dtype=np.float64)
    for n in range(size, 0, -1):
        out_d[n - 1] = heap_d[0]
        out_s[n - 1] = heap_s[0]
        heap_s[0] = heap_s[n - 1]
        heap_d[0] = heap_d[n - 1]
        sift_down(heap_s, heap_d, n - 1, 0)
    return out_d, out_s


def block_contributions(docs: np.ndarray, tfs: np.ndarray, n: int, norm_code: np.ndarray, norm_table: np.ndarray,
                        inner_w: np.ndarray, k1: float, weight: float, out: np.ndarray) -> None:
    """out[j] = weight * impact of the block's posting j, for j < n: the one place the BM25F
    impact is computed (see the module docstring).

    docs: int64 (BLOCK,); tfs: uint32 (F, BLOCK), as decode_block leaves them; out: float64 (BLOCK,).
    norm_code: unsigned (F, n_docs); norm_table: float32 (F, C), C > every code.
    Fields where the document lacks the term are skipped (their code is that of length 0).
    """
    for j in range(n):
        d = docs[j]
        tfw = 0.0
        for f in range(tfs.shape[0]):
            tf = tfs[f, j]
            if tf > 0:
                tfw += inner_w[f] * np.float64(tf) * np.float64(norm_table[f, norm_code[f, d]])
        out[j] = weight * (tfw / (k1 + tfw)) if tfw > 0.0 else 0.0


def bm25_topk(
    term_ids: np.ndarray, term_weights: np.ndarray, term_blocks: np.ndarray, block_first: np.ndarray,
    block_last: np.ndarray, block_n: np.ndarray, block_words: np.ndarray, block_bits: np.ndarray,
    words: np.ndarray, block_ub: np.ndarray, norm_code: np.ndarray, norm_table: np.ndarray, inner_w: np.ndarray,
    k1: float,
    mask: np.ndarray, prior: np.ndarray, prior_max: float, n_docs: int, k: int,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Exhaustive top-k BM25F: decodes every block of every query term (term at a time).

    term_ids: int64 (t,), the query's terms; term_weights: float64 (t,), qtf * outer_w * idf.
    term_blocks, block_first, block_last, block_n, block_words, block_bits, words: the block
    layout of `core.lexical.codec.encode` (F = block_bits.shape[1] - 1 fields).
    block_ub: float64 (B,) and prior_max: unused here (the pruned kernel's bounds).
    norm_code: (F, n_docs), uint8 (Lucene's one-byte norm) or the exact lengths (any unsigned
    dtype); norm_table: float32 (F, C) with norm_table[f, norm_code[f, d]] = inv_norm[f, d]
    (core.lexical.norms); inner_w: float64 (F,); k1 >= 0.
    mask: uint8 (n_docs,), 0 = never returned, or (0,) for no restriction.
    prior: float32 (n_docs,), added to every matched document's score, or (0,).
    Returns (docs int64 (m,), scores float64 (m,), count), best first, where count is the exact
    number of matched allowed documents and m = min(k, count); the scores are float32 values.
    """
    scores = np.zeros(n_docs, dtype=np.float64)
    seen = np.zeros(n_docs, dtype=np.uint8)
    touched = np.empty(n_docs, dtype=np.int64)
    docs = np.empty(BLOCK, dtype=np.int64)
    tfs = np.empty((block_bits.shape[1] - 1, BLOCK), dtype=np.uint32)
    con = np.empty(BLOCK, dtype=np.float64)
    m = 0
    for t in range(term_ids.shape[0]):
        tid = term_ids[t]
        w = term_weights[t]
        for b in range(term_blocks[tid], term_blocks[tid + 1]):
            n = decode_block(words, block_words, block_bits, block_first, block_n, b, docs, tfs)
            block_contributions(docs, tfs, n, norm_code, norm_table, inner_w, k1, w, con)
            for j in range(n):
                d = docs[j]
                # Branch-free first-touch bookkeeping: the branch would mispredict often.
                touched[m] = d
                m += 1 - int(seen[d])
                seen[d] = 1
                scores[d] += con[j]
    count = 0
    for i in range(m):
        d = touched[i]
        if mask.shape[0] == 0 or mask[d] != 0:
            touched[count] = d
            count += 1
    if prior.shape[0] > 0:
        for i in range(count):
            d = touched[i]
            scores[d] += np.float64(prior[d])
    for i in range(count):  # ranked by the float32 score (module docstring)
        d = touched[i]
        scores[d] = np.float64(np.float32(scores[d]))
    top_d, top_s = select_topk(scores, touched, count, k)
    return top_d, top_s, count
