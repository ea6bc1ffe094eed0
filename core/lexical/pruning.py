"""Block-max pruning for the BM25F kernel: per-block score bounds and the pruned top-k kernel.

Plain functions in the Numba subset; `core.lexical.jit` compiles them and
`core.lexical.reference` holds their NumPy references.
"""

from __future__ import annotations

import numpy as np

from core.lexical.codec import BLOCK, decode_block
from core.lexical.scoring import drain_heap, impact, sift_down, worse

# Relative margin on every block bound: covers the rounding of impact() against the bound's own
# arithmetic (a few ulps), so a bound is never below a posting's computed impact.
BOUND_MARGIN = 1e-9


def block_upper_bounds(block_max_tf: np.ndarray, min_len_inv_norm: np.ndarray, inner_w: np.ndarray,
                       k1: float) -> np.ndarray:
    """Upper bound of the BM25F impact of every posting of each block.

    block_max_tf: uint32 (B, F), the largest frequency per field in the block (codec).
    min_len_inv_norm: float32 (B, F), inv_norm evaluated at the block's shortest field length
        (`block_min_len`), with the same quantisation and float32 rounding as the documents'.
    inner_w: float64 (F,); k1 >= 0.
    Returns float64 (B,): tfw_max / (k1 + tfw_max) * (1 + 1e-9), where tfw_max is the sum over
    fields holding the term of inner_w[f] * block_max_tf[b, f] * min_len_inv_norm[b, f]. Valid
    because inv_norm falls as length grows, and impact grows with tfw.
    """
    n_blocks = block_max_tf.shape[0]
    out = np.empty(n_blocks, dtype=np.float64)
    for b in range(n_blocks):
        tfw = 0.0
        for f in range(block_max_tf.shape[1]):
            tf = block_max_tf[b, f]
            if tf > 0:
                tfw += inner_w[f] * np.float64(tf) * np.float64(min_len_inv_norm[b, f])
        out[b] = tfw / (k1 + tfw) * (1.0 + BOUND_MARGIN) if tfw > 0.0 else 0.0
    return out


# Columns of the cursor table `cur` (int64, (t, 5)), one row per query term in ascending order of
# its score bound: the current block, the term's end block, the position in the decoded block,
# the current document (n_docs once exhausted) and the block held in the term's scratch (-1: none).
BLK, END, POS, DOC, DEC = 0, 1, 2, 3, 4
# Relative slack on the pruning threshold: a partial score summed in a different order than the
# final one may differ from it by a few ulps, and must never prune a document that enters.
THRESHOLD_SLACK = 1e-12


def ensure_decoded(cur: np.ndarray, s: int, sdocs: np.ndarray, stfs: np.ndarray, words: np.ndarray,
                   block_words: np.ndarray, block_bits: np.ndarray, block_first: np.ndarray,
                   block_n: np.ndarray) -> None:
    """Decode cursor s's current block into its scratch rows, once."""
    b = cur[s, BLK]
    if cur[s, DEC] != b:
        decode_block(words, block_words, block_bits, block_first, block_n, b, sdocs[s], stfs[s])
        cur[s, DEC] = b


def shallow_advance(cur: np.ndarray, s: int, target: int, block_first: np.ndarray, block_last: np.ndarray,
                    n_docs: int) -> None:
    """Move cursor s to the first block that may hold a document >= target, without decoding."""
    b = cur[s, BLK]
    end = cur[s, END]
    if b >= end or block_last[b] >= target:
        return
    b += 1
    if b < end and block_last[b] < target:  # a long skip: binary search the block ends
        b += np.searchsorted(block_last[b:end], target)
    cur[s, BLK] = b
    cur[s, POS] = 0
    cur[s, DOC] = block_first[b] if b < end else n_docs


def advance(cur: np.ndarray, s: int, target: int, sdocs: np.ndarray, stfs: np.ndarray, words: np.ndarray,
            block_words: np.ndarray, block_bits: np.ndarray, block_first: np.ndarray, block_last: np.ndarray,
            block_n: np.ndarray, n_docs: int) -> None:
    """Move cursor s to its first document >= target (n_docs when there is none)."""
    if cur[s, DOC] >= target:
        return
    shallow_advance(cur, s, target, block_first, block_last, n_docs)
    if cur[s, DOC] >= target:
        return
    ensure_decoded(cur, s, sdocs, stfs, words, block_words, block_bits, block_first, block_n)
    p = cur[s, POS]
    while sdocs[s, p] < target:
        p += 1
    cur[s, POS] = p
    cur[s, DOC] = sdocs[s, p]


def step(cur: np.ndarray, s: int, sdocs: np.ndarray, stfs: np.ndarray, words: np.ndarray, block_words: np.ndarray,
         block_bits: np.ndarray, block_first: np.ndarray, block_n: np.ndarray, n_docs: int) -> None:
    """Move cursor s to its next document."""
    b = cur[s, BLK]
    p = cur[s, POS] + 1
    if p > block_n[b]:
        cur[s, BLK] = b + 1
        cur[s, POS] = 0
        cur[s, DOC] = block_first[b + 1] if b + 1 < cur[s, END] else n_docs
        return
    ensure_decoded(cur, s, sdocs, stfs, words, block_words, block_bits, block_first, block_n)
    cur[s, POS] = p
    cur[s, DOC] = sdocs[s, p]


def offer(heap_s: np.ndarray, heap_d: np.ndarray, size: int, score: float, doc: int) -> int:
    """Add (score, doc) to the size-k min-heap (k = heap_s.shape[0]) if it ranks above the root;
    the heap is built once it holds k entries. Returns the new size."""
    k = heap_s.shape[0]
    if size < k:
        heap_s[size] = score
        heap_d[size] = doc
        size += 1
        if size == k:
            for i in range(k // 2 - 1, -1, -1):
                sift_down(heap_s, heap_d, k, i)
    elif worse(heap_s[0], heap_d[0], score, doc):
        heap_s[0] = score
        heap_d[0] = doc
        sift_down(heap_s, heap_d, k, 0)
    return size


def prepare(term_ids: np.ndarray, term_weights: np.ndarray, term_blocks: np.ndarray, block_first: np.ndarray,
            block_ub: np.ndarray, n_docs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Order the query terms by their score bound, term_weight * (largest block bound), ascending.

    Returns (order int64 (t,): query position of each sorted term, cur int64 (t, 5): the cursor
    table at each term's first document, bounds float64 (t,): the sorted bounds).
    """
    t = term_ids.shape[0]
    bounds = np.zeros(t, dtype=np.float64)
    for i in range(t):
        top = 0.0
        for b in range(term_blocks[term_ids[i]], term_blocks[term_ids[i] + 1]):
            top = max(top, block_ub[b])
        bounds[i] = term_weights[i] * top
    order = np.argsort(bounds, kind="mergesort")
    cur = np.empty((t, 5), dtype=np.int64)
    for s in range(t):
        tid = term_ids[order[s]]
        cur[s, BLK] = term_blocks[tid]
        cur[s, END] = term_blocks[tid + 1]
        cur[s, POS] = 0
        cur[s, DOC] = block_first[cur[s, BLK]] if cur[s, BLK] < cur[s, END] else n_docs
        cur[s, DEC] = -1
    return order, cur, bounds[order]


def window_bound(cur: np.ndarray, weights: np.ndarray, first_ess: int, lo: int, hi: int, block_first: np.ndarray,
                 block_last: np.ndarray, block_ub: np.ndarray, n_docs: int) -> float:
    """Upper bound of the term scores of every document in [lo, hi], where hi is at most the end
    of every essential cursor's current block: an essential term contributes its current block's
    bound (if its cursor is in the window), a non-essential one its largest block bound over the
    window (its cursor is moved, without decoding, to the block that may hold lo)."""
    bound = 0.0
    for s in range(first_ess):
        shallow_advance(cur, s, lo, block_first, block_last, n_docs)
        top = 0.0
        b = cur[s, BLK]
        while b < cur[s, END] and block_first[b] <= hi:
            top = max(top, block_ub[b])
            b += 1
        bound += weights[s] * top
    for s in range(first_ess, cur.shape[0]):
        if cur[s, DOC] <= hi:
            bound += weights[s] * block_ub[cur[s, BLK]]
    return bound


def bm25_topk_pruned(
    term_ids: np.ndarray, term_weights: np.ndarray, term_blocks: np.ndarray, block_first: np.ndarray,
    block_last: np.ndarray, block_n: np.ndarray, block_words: np.ndarray, block_bits: np.ndarray,
    words: np.ndarray, block_ub: np.ndarray, inv_norm: np.ndarray, inner_w: np.ndarray, k1: float,
    mask: np.ndarray, prior: np.ndarray, prior_max: float, n_docs: int, k: int,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Top-k BM25F with block-max MaxScore (Turtle & Flood 1995; Lucene 9's MaxScoreBulkScorer):
    the same top k, scores and order as `core.lexical.scoring.bm25_topk`.

    Arguments as bm25_topk's, plus block_ub (float64 (B,), `block_upper_bounds`) and prior_max
    (the largest prior, >= every prior[d]). term_weights and priors must be >= 0.
    Terms are sorted by bound; the lowest ones whose bounds sum (+ prior_max) below the threshold
    (the k-th best score so far) are non-essential: only documents of the essential terms are
    visited, document at a time, in windows that end where an essential cursor's block ends;
    a window whose summed block bounds cannot reach the threshold is skipped without decoding,
    and a non-essential term is read for a document only while the score so far plus the
    remaining terms' current block bounds can reach it. A document's score is the sum of its
    per-term contributions in query order, so it is bit-identical to the exhaustive kernel's.
    Returns (docs int64 (m,), scores float64 (m,), count), best first; count is the number of
    documents fully scored, a lower bound of the matches.
    """
    t = term_ids.shape[0]
    order, cur, bounds = prepare(term_ids, term_weights, term_blocks, block_first, block_ub, n_docs)
    weights = term_weights[order]
    prefix = np.cumsum(bounds)
    pm = prior_max if prior.shape[0] > 0 else 0.0
    sdocs = np.empty((t, BLOCK), dtype=np.int64)
    stfs = np.empty((t, block_bits.shape[1] - 1, BLOCK), dtype=np.uint32)
    contrib = np.zeros(t, dtype=np.float64)
    reach = np.zeros(t, dtype=np.float64)
    kk = max(0, min(k, n_docs))
    heap_s = np.empty(kk, dtype=np.float64)
    heap_d = np.empty(kk, dtype=np.int64)
    size = 0
    count = 0
    threshold = -np.inf  # scores below it cannot enter (with slack, see THRESHOLD_SLACK)
    first_ess = 0 if kk > 0 else t
    while first_ess < t:
        lo = n_docs
        for s in range(first_ess, t):
            lo = min(lo, cur[s, DOC])
        if lo >= n_docs:
            break
        hi = n_docs - 1
        if size == kk:
            for s in range(first_ess, t):
                if cur[s, DOC] < n_docs:
                    hi = min(hi, int(block_last[cur[s, BLK]]))
            if window_bound(cur, weights, first_ess, lo, hi, block_first, block_last, block_ub, n_docs) + pm \
                    < threshold:
                for s in range(first_ess, t):
                    advance(cur, s, hi + 1, sdocs, stfs, words, block_words, block_bits, block_first, block_last,
                            block_n, n_docs)
                continue
        while True:
            d = n_docs
            for s in range(first_ess, t):
                d = min(d, cur[s, DOC])
            if d > hi:
                break
            if mask.shape[0] > 0 and mask[d] == 0:
                for s in range(first_ess, t):
                    if cur[s, DOC] == d:
                        step(cur, s, sdocs, stfs, words, block_words, block_bits, block_first, block_n, n_docs)
                continue
            partial = 0.0
            for s in range(first_ess, t):
                if cur[s, DOC] == d:
                    ensure_decoded(cur, s, sdocs, stfs, words, block_words, block_bits, block_first, block_n)
                    c = weights[s] * impact(stfs[s], cur[s, POS], inv_norm, d, inner_w, k1)
                    contrib[order[s]] = c
                    partial += c
                    step(cur, s, sdocs, stfs, words, block_words, block_bits, block_first, block_n, n_docs)
            if first_ess > 0 and not probe(cur, weights, order, first_ess, d, partial, pm, threshold, contrib, reach,
                                           sdocs, stfs, words, block_words, block_bits, block_first, block_last,
                                           block_n, block_ub, inv_norm, inner_w, k1, n_docs):
                contrib[:] = 0.0
                continue
            score = 0.0
            for i in range(t):  # query order: the exhaustive kernel's summation
                score += contrib[i]
                contrib[i] = 0.0
            if prior.shape[0] > 0:
                score += np.float64(prior[d])
            count += 1
            size = offer(heap_s, heap_d, size, score, d)
            if size == kk and heap_s[0] - abs(heap_s[0]) * THRESHOLD_SLACK > threshold:
                threshold = heap_s[0] - abs(heap_s[0]) * THRESHOLD_SLACK
                while first_ess < t and prefix[first_ess] + pm < threshold:
                    first_ess += 1
                break  # a new threshold: a new window
    if size < kk:  # fewer than k documents: offer never built the heap
        for i in range(size // 2 - 1, -1, -1):
            sift_down(heap_s, heap_d, size, i)
    top_d, top_s = drain_heap(heap_s, heap_d, size)
    return top_d, top_s, count


def probe(cur: np.ndarray, weights: np.ndarray, order: np.ndarray, first_ess: int, d: int, partial: float, pm: float,
          threshold: float, contrib: np.ndarray, reach: np.ndarray, sdocs: np.ndarray, stfs: np.ndarray,
          words: np.ndarray, block_words: np.ndarray, block_bits: np.ndarray, block_first: np.ndarray,
          block_last: np.ndarray, block_n: np.ndarray, block_ub: np.ndarray, inv_norm: np.ndarray,
          inner_w: np.ndarray, k1: float, n_docs: int) -> bool:
    """Add the non-essential terms' contributions to document d (into contrib, by query position),
    highest bound first, while partial + the remaining terms' current block bounds + pm can reach
    the threshold. False when d is pruned."""
    acc = 0.0
    for s in range(first_ess):
        shallow_advance(cur, s, d, block_first, block_last, n_docs)
        b = cur[s, BLK]
        if b < cur[s, END] and block_first[b] <= d:
            acc += weights[s] * block_ub[b]
        reach[s] = acc
    for s in range(first_ess - 1, -1, -1):
        if partial + reach[s] + pm < threshold:
            return False
        b = cur[s, BLK]
        if b < cur[s, END] and block_first[b] <= d:
            advance(cur, s, d, sdocs, stfs, words, block_words, block_bits, block_first, block_last, block_n, n_docs)
            if cur[s, DOC] == d:
                ensure_decoded(cur, s, sdocs, stfs, words, block_words, block_bits, block_first, block_n)
                c = weights[s] * impact(stfs[s], cur[s, POS], inv_norm, d, inner_w, k1)
                contrib[order[s]] = c
                partial += c
    return True
