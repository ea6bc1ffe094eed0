"""BM25 scoring and top-k selection as plain functions over flat typed arrays.

These functions are written in the subset of Python that Numba compiles; `core.lexical.jit`
applies `numba.njit` to them in one place, and `core.lexical.reference` holds the NumPy
reference they are tested against. Scores accumulate in float64, term by term in query order,
so the kernel and the reference produce identical values.

BM25, Lucene variant (Lucene >= 8, Anserini):
    score(q, d) = sum over query terms t of  w_t * tf / (tf + norm_f(d))
    w_t       = qtf_t * field_weight_f * ln(1 + (N_f - df_t + 0.5) / (df_t + 0.5))
    norm_f(d) = k1 * (1 - b + b * dl_f(d) / avgdl_f)
where f is the field the term belongs to, N_f the number of documents with a non-empty field f,
and dl_f(d) the number of terms of d in f (optionally quantised as Lucene stores it).
"""

from __future__ import annotations

import numpy as np


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
    out_d = np.empty(kk, dtype=np.int64)
    out_s = np.empty(kk, dtype=np.float64)
    for size in range(kk, 0, -1):
        out_d[size - 1] = heap_d[0]
        out_s[size - 1] = heap_s[0]
        heap_s[0] = heap_s[size - 1]
        heap_d[0] = heap_d[size - 1]
        sift_down(heap_s, heap_d, size - 1, 0)
    return out_d, out_s


def bm25_topk(
    term_ids: np.ndarray,
    query_weights: np.ndarray,
    offsets: np.ndarray,
    idf: np.ndarray,
    doc_ids: np.ndarray,
    impacts: np.ndarray,
    mask: np.ndarray,
    prior: np.ndarray,
    n_docs: int,
    k: int,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Top-k BM25 over the postings of the query terms.

    term_ids: int64, shape (t,), the query's terms (global ids, each once).
    query_weights: float64, shape (t,), occurrences in the query * field weight.
    offsets: int64, shape (T + 1,), each term's range in the postings arena.
    idf: float64, shape (T,), ln(1 + (N_f - df + 0.5) / (df + 0.5)).
    doc_ids: uint32, shape (P,), postings arena; ascending within a term's range.
    impacts: float32, shape (P,), tf / (tf + norm_f(d)) of each posting (see `impacts`).
    mask: uint8, shape (n_docs,) (1 = may be returned) or shape (0,) for no restriction.
    prior: float32, shape (n_docs,), added to the score of every matched doc, or shape (0,).
    Returns (docs int64 (m,), scores float64 (m,), total_matches), best first, m = min(k, matches).
    """
    scores = np.zeros(n_docs, dtype=np.float64)
    touched = np.empty(n_docs + 1, dtype=np.int64)
    m = 0
    for t in range(term_ids.shape[0]):
        tid = term_ids[t]
        w = query_weights[t] * idf[tid]
        for p in range(offsets[tid], offsets[tid + 1]):
            d = np.int64(doc_ids[p])
            # Branch-free first-touch bookkeeping: the branch would mispredict about half the time.
            touched[m] = d
            m += scores[d] == 0.0
            scores[d] += w * np.float64(impacts[p])
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
    top_d, top_s = select_topk(scores, touched, count, k)
    return top_d, top_s, count


def impacts(doc_ids: np.ndarray, tfs: np.ndarray, term_field: np.ndarray, offsets: np.ndarray,
            norms: np.ndarray) -> np.ndarray:
    """tf / (tf + norm_f(d)) for every posting, float32, shape (P,): the part of BM25 that does
    not depend on the query, computed once when the index is loaded.

    doc_ids: uint32 (P,); tfs: float32 (P,); term_field: int64 (T,); offsets: int64 (T + 1,);
    norms: float32 (F, N), k1 * (1 - b + b * dl_f(d) / avgdl_f).
    """
    out = np.empty(doc_ids.shape[0], dtype=np.float32)
    for t in range(term_field.shape[0]):
        row = term_field[t]
        for p in range(offsets[t], offsets[t + 1]):
            tf = tfs[p]
            out[p] = tf / (tf + norms[row, np.int64(doc_ids[p])])
    return out
