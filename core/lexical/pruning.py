"""Block-max pruning for the BM25F kernel: per-block score bounds and the pruned top-k kernel.

Plain functions in the Numba subset; `core.lexical.jit` compiles them and
`core.lexical.reference` holds their NumPy references.
"""

from __future__ import annotations

import numpy as np

from core.lexical.codec import BLOCK, decode_block, decode_docs
from core.lexical.scoring import block_contributions, drain_heap, posting_contribution, sift_down, worse

# Relative margin on every block bound: covers the rounding of impact() against the bound's own
# arithmetic (a few ulps), so a bound is never below a posting's computed impact.
BOUND_MARGIN = 1e-9


def block_upper_bounds(block_max_tf: np.ndarray, min_len_inv_norm: np.ndarray, inner_w: np.ndarray,
                       k1: float) -> np.ndarray:
    """Upper bound of the BM25F impact of every posting of each block.

    block_max_tf: uint32 (B, F), the largest frequency per field in the block (codec).
    min_len_inv_norm: float32 (B, F), inv_norm evaluated at the block's shortest field length
        (`block_min_len`), with the same quantisation and float32 rounding as the documents'
        (looked up in the same norm_table).
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


# Columns of the cursor table `cur` (int64, (t, 4)), one row per query term in query order: the
# current block, the term's end block, the position in the block and the current document
# (n_docs once exhausted). Moving to a new block sets the document to the block's first without
# decoding it; `loaded[i]` is the block whose documents are in row i of the scratch arrays and
# `scored[i]` the block whose contributions are too (-1: none). An essential term's documents all
# need their contributions, a non-essential term's only where it is probed and found: its block
# decodes its documents only, and a contribution is read from the packed frequencies when needed.
BLK, END, POS, DOC = 0, 1, 2, 3
# Relative slack on the pruning threshold: a partial score summed in another order than the final
# one may differ from it by a few ulps, and a score is rounded to float32 before it is ranked
# (core.lexical.scoring), which may raise it by half a float32 ulp (<= 2**-24 relative) to tie
# the threshold and win on document id: neither may prune a document that would enter.
THRESHOLD_SLACK = 2.0**-23


def init_cursors(term_ids: np.ndarray, term_blocks: np.ndarray, block_first: np.ndarray, n_docs: int) -> np.ndarray:
    """The cursor table (int64, (t, 4)) at each query term's first document."""
    cur = np.empty((term_ids.shape[0], 4), dtype=np.int64)
    for i in range(term_ids.shape[0]):
        cur[i, BLK] = term_blocks[term_ids[i]]
        cur[i, END] = term_blocks[term_ids[i] + 1]
        cur[i, POS] = 0
        cur[i, DOC] = block_first[cur[i, BLK]] if cur[i, BLK] < cur[i, END] else n_docs
    return cur


def load(cur: np.ndarray, i: int, loaded: np.ndarray, scored: np.ndarray, weight: float, sdocs: np.ndarray,
         scon: np.ndarray, tfs: np.ndarray, words: np.ndarray, block_words: np.ndarray, block_bits: np.ndarray,
         block_first: np.ndarray, block_n: np.ndarray, norm_code: np.ndarray, norm_table: np.ndarray,
         inner_w: np.ndarray, k1: float) -> None:
    """Decode cursor i's current block into sdocs[i] and its contributions into scon[i].

    Callers test `scored[i] != cur[i, BLK]` first: a call passing a dozen arrays pays their
    reference counts, which add up when paid per document.
    """
    b = cur[i, BLK]
    n = decode_block(words, block_words, block_bits, block_first, block_n, b, sdocs[i], tfs)
    block_contributions(sdocs[i], tfs, n, norm_code, norm_table, inner_w, k1, weight, scon[i])
    loaded[i] = b
    scored[i] = b


def seek(cur: np.ndarray, i: int, target: int, block_first: np.ndarray, block_last: np.ndarray, n_docs: int
         ) -> bool:
    """Move cursor i, without decoding, to the first block whose last document is >= target.
    True when target lies inside that block past the cursor (the block must be scanned)."""
    b = cur[i, BLK]
    end = cur[i, END]
    if b < end and block_last[b] < target:
        lo = b + 1  # binary search the block ends: windows can skip far
        hi = end
        while lo < hi:
            mid = (lo + hi) >> 1
            if block_last[mid] < target:
                lo = mid + 1
            else:
                hi = mid
        cur[i, BLK] = lo
        cur[i, POS] = 0
        cur[i, DOC] = block_first[lo] if lo < end else n_docs
    return cur[i, DOC] < target


def window_bounds(cur: np.ndarray, weights: np.ndarray, lo: int, hi: int, block_first: np.ndarray,
                  block_last: np.ndarray, block_ub: np.ndarray, n_docs: int, out: np.ndarray) -> None:
    """out[i] = weights[i] * the largest bound of term i's blocks that overlap [lo, hi] (0: none);
    moves each cursor, without decoding, to the block that may hold lo."""
    for i in range(cur.shape[0]):
        seek(cur, i, lo, block_first, block_last, n_docs)
        top = 0.0
        b = cur[i, BLK]
        while b < cur[i, END] and block_first[b] <= hi:
            top = max(top, block_ub[b])
            b += 1
        out[i] = weights[i] * top


def partition(perm: np.ndarray, bounds: np.ndarray, prefix: np.ndarray, cutoff: float) -> int:
    """Sort the terms (perm) by bound ascending, prefix[j] = sum of the j + 1 lowest bounds; return
    how many lowest terms are non-essential: their bounds sum below cutoff."""
    for j in range(1, perm.shape[0]):  # insertion sort: a query has a few terms
        i = perm[j]
        m = j
        while m > 0 and bounds[perm[m - 1]] > bounds[i]:
            perm[m] = perm[m - 1]
            m -= 1
        perm[m] = i
    acc = 0.0
    ne = 0
    for j in range(perm.shape[0]):
        acc += bounds[perm[j]]
        prefix[j] = acc
        if acc < cutoff:
            ne = j + 1
    return ne


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


def bm25_topk_pruned(
    term_ids: np.ndarray, term_weights: np.ndarray, term_blocks: np.ndarray, block_first: np.ndarray,
    block_last: np.ndarray, block_n: np.ndarray, block_words: np.ndarray, block_bits: np.ndarray,
    words: np.ndarray, block_ub: np.ndarray, norm_code: np.ndarray, norm_table: np.ndarray, inner_w: np.ndarray,
    k1: float,
    mask: np.ndarray, prior: np.ndarray, prior_max: float, n_docs: int, k: int,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Top-k BM25F with block-max MaxScore (Turtle & Flood 1995, with per-window bounds as in
    Lucene 9.9's MaxScoreBulkScorer): the same top k, scores and order as
    `core.lexical.scoring.bm25_topk`.

    Arguments as bm25_topk's, plus block_ub (float64 (B,), `block_upper_bounds`) and prior_max
    (>= every prior[d]); term_weights and priors must be >= 0.
    Documents are visited in windows [lo, hi] that end where a leading term's block ends. In a
    window every term is bounded by its largest block bound there; the terms whose bounds sum
    (+ prior_max) below the threshold (the k-th best score so far) are non-essential. A window
    with no essential term is skipped without decoding; otherwise the essential terms' documents
    are visited document at a time, and a non-essential term is read for a document only while
    the score so far plus the remaining terms' current block bounds can reach the threshold.
    A document's score sums its per-term contributions in query order, so it is bit-identical
    to the exhaustive kernel's.
    Returns (docs int64 (m,), scores float64 (m,), count), best first; count is the number of
    documents fully scored, a lower bound of the matches.
    """
    t = term_ids.shape[0]
    kk = max(0, min(k, n_docs))
    cur = init_cursors(term_ids, term_blocks, block_first, n_docs)
    pm = prior_max if prior.shape[0] > 0 else 0.0
    loaded = np.full(t, -1, dtype=np.int64)
    scored = np.full(t, -1, dtype=np.int64)
    sdocs = np.empty((t, BLOCK), dtype=np.int64)
    scon = np.empty((t, BLOCK), dtype=np.float64)
    tfs = np.empty((block_bits.shape[1] - 1, BLOCK), dtype=np.uint32)
    contrib = np.zeros(t, dtype=np.float64)  # by query position: the final sum's order
    wb = np.zeros(t, dtype=np.float64)
    prefix = np.zeros(t, dtype=np.float64)
    reach = np.zeros(t, dtype=np.float64)
    perm = np.arange(t)  # terms by window bound, ascending; perm[:ne] are non-essential
    heap_s = np.empty(kk, dtype=np.float64)
    heap_d = np.empty(kk, dtype=np.int64)
    size = 0
    count = 0
    threshold = -np.inf  # bounds below it cannot enter (it carries THRESHOLD_SLACK)
    ne = 0
    done = 0  # every document < done is settled
    while kk > 0:
        lo = n_docs
        for i in range(t):
            seek(cur, i, done, block_first, block_last, n_docs)
            lo = min(lo, max(cur[i, DOC], done))
        if lo >= n_docs:
            break
        hi = n_docs - 1
        if size == kk:
            for j in range(min(ne, t - 1), t):  # the last window's essential terms lead
                i = perm[j]
                seek(cur, i, lo, block_first, block_last, n_docs)
                if cur[i, BLK] < cur[i, END]:
                    hi = min(hi, int(block_last[cur[i, BLK]]))
            window_bounds(cur, term_weights, lo, hi, block_first, block_last, block_ub, n_docs, wb)
            ne = partition(perm, wb, prefix, threshold - pm)
            if ne == t:
                done = hi + 1
                continue
        for j in range(ne, t):
            i = perm[j]
            if seek(cur, i, lo, block_first, block_last, n_docs):
                if scored[i] != cur[i, BLK]:
                    load(cur, i, loaded, scored, term_weights[i], sdocs, scon, tfs, words, block_words, block_bits,
                         block_first, block_n, norm_code, norm_table, inner_w, k1)
                p = cur[i, POS]
                while sdocs[i, p] < lo:
                    p += 1
                cur[i, POS] = p
                cur[i, DOC] = sdocs[i, p]
        done = hi + 1
        nxt = n_docs  # the essential terms' next document
        for j in range(ne, t):
            nxt = min(nxt, cur[perm[j], DOC])
        while nxt <= hi:
            d = nxt
            nxt = n_docs
            allowed = mask.shape[0] == 0 or mask[d] != 0
            partial = 0.0
            for j in range(ne, t):  # essential terms: add, step past d, find the next document
                i = perm[j]
                if cur[i, DOC] != d:
                    nxt = min(nxt, cur[i, DOC])
                    continue
                b = cur[i, BLK]
                p = cur[i, POS]
                if scored[i] != b and (allowed or (loaded[i] != b and p < block_n[b])):
                    load(cur, i, loaded, scored, term_weights[i], sdocs, scon, tfs, words, block_words, block_bits,
                         block_first, block_n, norm_code, norm_table, inner_w, k1)
                if allowed:
                    contrib[i] = scon[i, p]
                    partial += scon[i, p]
                if p < block_n[b]:
                    cur[i, POS] = p + 1
                    cur[i, DOC] = sdocs[i, p + 1]
                else:
                    cur[i, BLK] = b + 1
                    cur[i, POS] = 0
                    cur[i, DOC] = block_first[b + 1] if b + 1 < cur[i, END] else n_docs
                nxt = min(nxt, cur[i, DOC])
            if not allowed:
                continue
            if ne > 0 and partial + prefix[ne - 1] + pm < threshold:
                for i in range(t):  # pruned on the window bounds, without moving a cursor
                    contrib[i] = 0.0
                continue
            if ne > 0:
                # Non-essential terms, highest window bound first, while d can still enter.
                acc = 0.0
                for j in range(ne):
                    i = perm[j]
                    b = cur[i, BLK]
                    while b < cur[i, END] and block_last[b] < d:
                        b += 1
                    if b != cur[i, BLK]:
                        cur[i, BLK] = b
                        cur[i, POS] = 0
                        cur[i, DOC] = block_first[b] if b < cur[i, END] else n_docs
                    if b < cur[i, END] and block_first[b] <= d:
                        acc += term_weights[i] * block_ub[b]
                    reach[j] = acc
                j = ne - 1
                while j >= 0 and partial + reach[j] + pm >= threshold:
                    i = perm[j]
                    b = cur[i, BLK]
                    if b < cur[i, END] and cur[i, DOC] <= d:
                        if loaded[i] != b:
                            decode_docs(words, block_words, block_bits, block_first, block_n, b, sdocs[i])
                            loaded[i] = b
                        p = cur[i, POS]
                        while sdocs[i, p] < d:
                            p += 1
                        cur[i, POS] = p
                        cur[i, DOC] = sdocs[i, p]
                        if sdocs[i, p] == d:
                            c = scon[i, p] if scored[i] == b else posting_contribution(
                                words, block_words, block_bits, block_n, b, p, d, norm_code, norm_table, inner_w, k1,
                                term_weights[i])
                            contrib[i] = c
                            partial += c
                    j -= 1
                if j >= 0:  # pruned
                    for i in range(t):
                        contrib[i] = 0.0
                    continue
            score = 0.0
            for i in range(t):  # query order: the exhaustive kernel's summation
                score += contrib[i]
                contrib[i] = 0.0
            if prior.shape[0] > 0:
                score += np.float64(prior[d])
            score = np.float64(np.float32(score))  # ranked by the float32 score, as bm25_topk
            count += 1
            if size < kk or worse(heap_s[0], heap_d[0], score, d):
                size = offer(heap_s, heap_d, size, score, d)
                if size == kk and heap_s[0] - abs(heap_s[0]) * THRESHOLD_SLACK > threshold:
                    first = threshold == -np.inf
                    threshold = heap_s[0] - abs(heap_s[0]) * THRESHOLD_SLACK
                    if first:  # the heap is full: windows and bounds start after d
                        done = d + 1
                        break
                    while ne < t and prefix[ne] + pm < threshold:
                        ne += 1
                    if ne == t:
                        break
                    nxt = n_docs  # fewer essential terms
                    for j in range(ne, t):
                        nxt = min(nxt, cur[perm[j], DOC])
    if size < kk:  # fewer than k documents: offer never built the heap
        for i in range(size // 2 - 1, -1, -1):
            sift_down(heap_s, heap_d, size, i)
    top_d, top_s = drain_heap(heap_s, heap_d, size)
    return top_d, top_s, count
