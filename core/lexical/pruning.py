"""Block-max pruning for the BM25F kernel: per-block score bounds and the pruned top-k kernel.

Plain functions in the Numba subset; `core.lexical.jit` compiles them and
`core.lexical.reference` holds their NumPy references.
"""

from __future__ import annotations

import numpy as np

from core.lexical.codec import BLOCK, decode_block, decode_docs, packed_value, stream_words
from core.lexical.scoring import block_contributions, drain_heap, sift_down, worse

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
# `scored[i]` the block whose contributions are too (-1: none).
BLK, END, POS, DOC = 0, 1, 2, 3
# Relative slack on the pruning threshold: a partial score summed in another order than the final
# one may differ from it by a few ulps, and a score is rounded to float32 before it is ranked
# (core.lexical.scoring), which may raise it by half a float32 ulp (<= 2**-24 relative) to tie
# the threshold and win on document id: neither may prune a document that would enter.
THRESHOLD_SLACK = 2.0**-23
# Widest window, in documents: its float64 bound per document stays in the L2 cache.
WINDOW = 16384
# Above this k the best documents are kept as ordering keys (built in bm25_topk_pruned, read back
# by drain_keys) in a buffer, cut back to the best k by selection when full, rather than in a heap:
# at large k a heap's sift-downs cost more than selections, at small k its threshold rises sooner.
HEAP_K = 128
# Columns of the per-window block table `tab` (int64, (t, rows, 4)): for each block of a term that
# overlaps the window, the index of its first posting in the window's lists, the block, that
# posting's position in the block, and 1 when the window's lists hold its contributions.
START, BLOCK_ID, OFFSET, EXACT = 0, 1, 2, 3


def init_cursors(term_ids: np.ndarray, term_blocks: np.ndarray, block_first: np.ndarray, n_docs: int) -> np.ndarray:
    """The cursor table (int64, (t, 4)) at each query term's first document."""
    cur = np.empty((term_ids.shape[0], 4), dtype=np.int64)
    for i in range(term_ids.shape[0]):
        cur[i, BLK] = term_blocks[term_ids[i]]
        cur[i, END] = term_blocks[term_ids[i] + 1]
        cur[i, POS] = 0
        cur[i, DOC] = block_first[cur[i, BLK]] if cur[i, BLK] < cur[i, END] else n_docs
    return cur


def load(b: int, i: int, loaded: np.ndarray, scored: np.ndarray, weight: float, sdocs: np.ndarray, scon: np.ndarray,
         tfs: np.ndarray, words: np.ndarray, block_words: np.ndarray, block_bits: np.ndarray, block_first: np.ndarray,
         block_n: np.ndarray, norm_code: np.ndarray, norm_table: np.ndarray, inner_w: np.ndarray, k1: float) -> None:
    """Decode block b of term i into sdocs[i] and its contributions into scon[i]."""
    n = decode_block(words, block_words, block_bits, block_first, block_n, b, sdocs[i], tfs)
    block_contributions(sdocs[i], tfs, n, norm_code, norm_table, inner_w, k1, weight, scon[i])
    loaded[i] = b
    scored[i] = b


def seek(cur: np.ndarray, i: int, target: int, block_first: np.ndarray, block_last: np.ndarray, n_docs: int
         ) -> None:
    """Move cursor i, without decoding, to the first block whose last document is >= target."""
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


def select_keys(keys: np.ndarray, size: int, k: int) -> np.uint64:
    """Keep the k largest of keys[:size] (size >= k) in keys[:k]; returns the smallest of them."""
    keys[:size] = np.partition(keys[:size], size - k)
    keys[:k] = keys[size - k:size]
    return keys[0]  # the partition's pivot: every key after it is at least as large


def drain_keys(keys: np.ndarray, size: int, k: int, bits32: np.ndarray, bits32u: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """The best min(k, size) of keys[:size] as (docs int64, scores float64), best first."""
    best = np.sort(keys[:size])[::-1][:k]
    docs = np.empty(best.shape[0], dtype=np.int64)
    scores = np.empty(best.shape[0], dtype=np.float64)
    for j in range(best.shape[0]):
        docs[j] = 0xFFFFFFFF - np.int64(best[j] & np.uint64(0xFFFFFFFF))
        bits32u[0] = np.uint32(best[j] >> np.uint64(32))
        scores[j] = bits32[0]
    return docs, scores


def collect(perm: np.ndarray, ne: int, wd: np.ndarray, tab: np.ndarray, wn: np.ndarray, ub: np.ndarray, lo: int,
            cutoff: float, mask: np.ndarray, cands: np.ndarray, cand_ub: np.ndarray) -> int:
    """The window's candidates: the essential terms' allowed documents whose bound ub reaches
    cutoff, each once (its ub is set to -inf), into cands with their bounds in cand_ub."""
    nc = 0
    for j in range(ne, perm.shape[0]):
        i = perm[j]
        ui = np.uint64(i)
        for m in range(np.uint64(tab[i, wn[i], START])):
            d = wd[ui, m]
            o = np.uint64(d - lo)
            v = ub[o]
            if v != -np.inf and v >= cutoff and (mask.shape[0] == 0 or mask[d] != 0):
                ub[o] = -np.inf
                cands[nc] = d
                cand_ub[nc] = v
                nc += 1
    return nc


def bm25_topk_pruned(
    term_ids: np.ndarray, term_weights: np.ndarray, term_blocks: np.ndarray, block_first: np.ndarray,
    block_last: np.ndarray, block_n: np.ndarray, block_words: np.ndarray, block_bits: np.ndarray,
    words: np.ndarray, block_ub: np.ndarray, norm_code: np.ndarray, norm_table: np.ndarray, inner_w: np.ndarray,
    k1: float,
    mask: np.ndarray, prior: np.ndarray, prior_max: float, n_docs: int, k: int,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Top-k BM25F with block-max MaxScore over windows: the same top k, scores and order as
    `core.lexical.scoring.bm25_topk`.

    Arguments as bm25_topk's, plus block_ub (float64 (B,), `block_upper_bounds`) and prior_max
    (>= every prior[d]); term_weights and priors must be >= 0.
    Documents are visited in windows of WINDOW ids. In a window every term is bounded by its
    largest block bound there; the terms whose bounds sum (+ prior_max) below the threshold (the
    k-th best score so far) are non-essential, and a window with no essential term is skipped
    without decoding. Otherwise every term's postings in the window are decoded and each adds to
    a per-document bound: its contribution where its block's bound alone could reach the
    threshold (the block is scored), else its block's bound. Only an essential term's document
    whose bound reaches the threshold is scored, its contributions summed in query order, so its
    score is bit-identical to the exhaustive kernel's: documents matched by one term are mostly
    dismissed on bounds, without computing a contribution.
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
    width = min(WINDOW, max(n_docs, 1))
    most = 1  # the most blocks of one query term: sizes the window's lists
    for i in range(t):
        most = max(most, cur[i, END] - cur[i, BLK])
    ub = np.zeros(width, dtype=np.float64)
    at = np.empty((t, width), dtype=np.int32)
    wd = np.empty((t, min(width, most * BLOCK)), dtype=np.int64)
    wc = np.empty((t, min(width, most * BLOCK)), dtype=np.float64)
    tab = np.empty((t, min(width, most) + 1, 4), dtype=np.int64)
    wn = np.zeros(t, dtype=np.int64)
    cands = np.empty(width, dtype=np.int64)
    cand_ub = np.empty(width, dtype=np.float64)
    wb = np.zeros(t, dtype=np.float64)
    prefix = np.zeros(t, dtype=np.float64)
    perm = np.arange(t)  # terms by window bound, ascending; perm[:ne] are non-essential
    by_keys = kk > HEAP_K and n_docs <= 0xFFFFFFFF
    heap_s = np.empty(0 if by_keys else kk, dtype=np.float64)
    heap_d = np.empty(0 if by_keys else kk, dtype=np.int64)
    # A document's key: its float32 score's bits (scores are >= 0, so they order as the scores),
    # then 0xFFFFFFFF - its id (ties go to the first document).
    keys = np.empty(2 * kk if by_keys else 0, dtype=np.uint64)
    floor = np.uint64(0)  # smaller keys cannot enter
    bits32 = np.empty(1, dtype=np.float32)
    bits32u = bits32.view(np.uint32)
    size = 0
    count = 0
    threshold = -np.inf  # bounds below it cannot enter (it carries THRESHOLD_SLACK)
    lo = 0
    while kk > 0:
        start = n_docs
        for i in range(t):
            seek(cur, i, lo, block_first, block_last, n_docs)
            start = min(start, max(cur[i, DOC], lo))
        if start >= n_docs:
            break
        lo = start
        hi = min(n_docs - 1, lo + width - 1)
        window_bounds(cur, term_weights, lo, hi, block_first, block_last, block_ub, n_docs, wb)
        ne = partition(perm, wb, prefix, threshold - pm)
        if ne < t:
            # Every term's postings in [lo, hi]: their documents into wd[i] and one row per
            # overlapping block into tab[i]; a block whose bound alone reaches the threshold is
            # scored (its contributions into wc[i], EXACT), another only has its documents decoded.
            # ub[d - lo] gains each posting's contribution, or its block's bound, and at[i, d - lo]
            # the posting's index in wd[i] (stale for documents without the term). The cursor
            # ends past hi. Written out here, not called: a call passing arrays pays their
            # reference counts (atomic), a quarter of the time when paid per term and window.
            for i in range(t):
                exact_cut = threshold - pm
                weight = term_weights[i]
                inside = False
                m = 0
                nb = 0
                b = cur[i, BLK]
                end = cur[i, END]
                p = cur[i, POS]
                while b < end and block_first[b] <= hi:
                    bound = weight * block_ub[b]
                    exact = bound >= exact_cut
                    if exact and scored[i] != b:
                        load(b, i, loaded, scored, weight, sdocs, scon, tfs, words, block_words, block_bits,
                             block_first, block_n, norm_code, norm_table, inner_w, k1)
                    elif loaded[i] != b:
                        decode_docs(words, block_words, block_bits, block_first, block_n, b, sdocs[i])
                        loaded[i] = b
                    n = int(block_n[b]) + 1
                    while p < n and sdocs[i, p] < lo:
                        p += 1
                    tab[i, nb, START] = m
                    tab[i, nb, BLOCK_ID] = b
                    tab[i, nb, OFFSET] = p
                    tab[i, nb, EXACT] = exact
                    nb += 1
                    ui = np.uint64(i)
                    if exact:
                        while p < n and sdocs[i, p] <= hi:
                            d = sdocs[i, p]
                            o = np.uint64(d - lo)
                            um = np.uint64(m)
                            wd[ui, um] = d
                            wc[ui, um] = scon[i, p]
                            ub[o] += scon[i, p]
                            at[ui, o] = m
                            m += 1
                            p += 1
                    else:
                        while p < n and sdocs[i, p] <= hi:
                            d = sdocs[i, p]
                            o = np.uint64(d - lo)
                            wd[ui, np.uint64(m)] = d
                            ub[o] += bound
                            at[ui, o] = m
                            m += 1
                            p += 1
                    if p < n:
                        cur[i, BLK] = b
                        cur[i, POS] = p
                        cur[i, DOC] = sdocs[i, p]
                        inside = True
                        break
                    b += 1
                    p = 0
                if not inside:
                    cur[i, BLK] = b
                    cur[i, POS] = 0
                    cur[i, DOC] = block_first[b] if b < end else n_docs
                tab[i, nb, START] = m
                wn[i] = nb
            nc = collect(perm, ne, wd, tab, wn, ub, lo, threshold - pm, mask, cands, cand_ub)
            for c in range(nc):
                d = cands[c]
                if cand_ub[c] + pm < threshold:  # the threshold rose since
                    continue
                # d's contributions summed in query order, as the exhaustive kernel sums them; a
                # posting of a block not scored reads its frequencies from the packed streams
                # (decode_block's layout) and weighs them as block_contributions does, bit for bit
                # (tests/core/lexical/test_index: the pruned top k equals the exhaustive one).
                o = d - lo
                score = 0.0
                for i in range(t):
                    r = wn[i]
                    x = at[i, o]
                    if x < 0 or x >= tab[i, r, START] or wd[i, x] != d:
                        continue
                    while tab[i, r, START] > x:
                        r -= 1
                    if tab[i, r, EXACT]:
                        score += wc[i, x]
                    else:
                        bb = tab[i, r, BLOCK_ID]
                        jj = tab[i, r, OFFSET] + x - tab[i, r, START]
                        nn = int(block_n[bb]) + 1
                        pos = int(block_words[bb]) + stream_words(nn - 1, int(block_bits[bb, 0]))
                        tfw = 0.0
                        for f in range(block_bits.shape[1] - 1):
                            bits = int(block_bits[bb, 1 + f])
                            if bits > 0:
                                tf = packed_value(words, pos, jj, bits)
                                tfw += inner_w[f] * np.float64(tf) * np.float64(norm_table[f, norm_code[f, d]])
                            pos += stream_words(nn, bits)
                        score += term_weights[i] * (tfw / (k1 + tfw)) if tfw > 0.0 else 0.0
                if prior.shape[0] > 0:
                    score += np.float64(prior[d])
                score = np.float64(np.float32(score))  # ranked by the float32 score, as bm25_topk
                count += 1
                if by_keys:
                    bits32[0] = score
                    key = (np.uint64(bits32u[0]) << np.uint64(32)) | np.uint64(0xFFFFFFFF - d)
                    if key >= floor:
                        keys[size] = key
                        size += 1
                        if size == kk or size == keys.shape[0]:
                            floor = select_keys(keys, size, kk)
                            size = kk
                            bits32u[0] = np.uint32(floor >> np.uint64(32))
                            low = np.float64(bits32[0])
                            threshold = max(threshold, low - abs(low) * THRESHOLD_SLACK)
                elif size < kk or worse(heap_s[0], heap_d[0], score, d):
                    size = offer(heap_s, heap_d, size, score, d)
                    if size == kk:
                        threshold = max(threshold, heap_s[0] - abs(heap_s[0]) * THRESHOLD_SLACK)
            for i in range(t):  # clear the window's bounds
                ui = np.uint64(i)
                for m in range(np.uint64(tab[i, wn[i], START])):
                    ub[np.uint64(wd[ui, m] - lo)] = 0.0
        lo = hi + 1
    if by_keys:
        top_d, top_s = drain_keys(keys, size, kk, bits32, bits32u)
        return top_d, top_s, count
    if size < kk:  # fewer than k documents: offer never built the heap
        for i in range(size // 2 - 1, -1, -1):
            sift_down(heap_s, heap_d, size, i)
    top_d, top_s = drain_heap(heap_s, heap_d, size)
    return top_d, top_s, count

