"""Plain NumPy reference of core.lexical.scoring.bm25_topk, for tests. Same contract, same values."""

from __future__ import annotations

import numpy as np


def impacts_reference(doc_ids: np.ndarray, tfs: np.ndarray, term_field: np.ndarray, offsets: np.ndarray,
                      norms: np.ndarray) -> np.ndarray:
    fields = np.repeat(term_field, np.diff(offsets))
    return (tfs / (tfs + norms[fields, doc_ids.astype(np.int64)])).astype(np.float32)


def bm25_topk_reference(
    term_ids: np.ndarray, query_weights: np.ndarray, offsets: np.ndarray, idf: np.ndarray, doc_ids: np.ndarray,
    impacts: np.ndarray, mask: np.ndarray, prior: np.ndarray, n_docs: int, k: int,
) -> tuple[np.ndarray, np.ndarray, int]:
    scores = np.zeros(n_docs, dtype=np.float64)
    matched = np.zeros(n_docs, dtype=bool)
    for tid, qw in zip(term_ids, query_weights, strict=True):
        docs = doc_ids[offsets[tid]:offsets[tid + 1]].astype(np.int64)
        scores[docs] += (qw * idf[tid]) * impacts[offsets[tid]:offsets[tid + 1]].astype(np.float64)
        matched[docs] = True
    if mask.size:
        matched &= mask.astype(bool)
    if prior.size:
        scores[matched] += prior[matched].astype(np.float64)
    docs = np.flatnonzero(matched)
    order = np.lexsort((docs, -scores[docs]))[:k]
    return docs[order].astype(np.int64), scores[docs[order]], int(matched.sum())
