"""The merge of a live lexical index (core.lexical.live): base + delta - dead copies, as Postings.

The base's blocks are decoded (no re-analysis: the base's texts are not kept), the delta's
postings appended, dead copies dropped, the survivors renumbered in order (base, then delta in
write order) and the vocabulary rebuilt from the terms some survivor holds, each group sorted.
The result is the Postings core.lexical.build.analyse returns for the live catalog, so
core.lexical.index.write_postings writes the same files as a fresh offline build of it.
"""

from __future__ import annotations

import numpy as np

from core.lexical import jit
from core.lexical.build import Postings
from core.lexical.codec import BLOCK
from core.lexical.index import LexicalIndex, postings_per_term
from core.lexical.segments import View


def base_postings(base: LexicalIndex) -> tuple[np.ndarray, np.ndarray]:
    """Every posting of the base, term by term, documents ascending: (docs int64 (P,), tfs uint32 (F, P))."""
    b = base.blocks
    sizes = b["block_n"].astype(np.int64) + 1
    starts = np.zeros(sizes.size + 1, dtype=np.int64)
    np.cumsum(sizes, out=starts[1:])
    n_fields = b["block_bits"].shape[1] - 1
    docs = np.empty(int(starts[-1]), dtype=np.int64)
    tfs = np.empty((n_fields, docs.size), dtype=np.uint32)
    scratch_d = np.empty(BLOCK, dtype=np.int64)
    scratch_t = np.empty((n_fields, BLOCK), dtype=np.uint32)
    for blk in range(sizes.size):
        n = jit.decode_block(b["words"], b["block_words"], b["block_bits"], b["block_first"], b["block_n"], blk,
                             scratch_d, scratch_t)
        docs[starts[blk]:starts[blk] + n] = scratch_d[:n]
        tfs[:, starts[blk]:starts[blk] + n] = scratch_t[:, :n]
    return docs, tfs


def merged_postings(view: View) -> tuple[Postings, list[str], np.ndarray, np.ndarray]:
    """(the postings of the live documents of `view`, their ids, their float32 popularity, and
    the new ordinal of every ordinal of the view, int64 (n_base + n_delta,), -1 for dead copies)."""
    base, delta = view.segments.base, view.segments.delta
    alive = np.ones(view.n_base + view.n_delta, dtype=bool)
    alive[np.asarray(view.deleted.to_array(), dtype=np.int64)] = False
    new_of_old = np.where(alive, np.cumsum(alive) - 1, -1)
    names, key, doc, tfs = every_posting(view)
    keep = alive[doc]
    key, doc, tfs = key[keep], new_of_old[doc[keep]], tfs[:, keep]
    terms, new_id = vocabulary(names, np.bincount(key, minlength=len(names)) > 0, len(base.vocab))
    tid = new_id[key]
    order = np.lexsort((doc, tid))
    offsets = np.zeros(sum(map(len, terms)) + 1, dtype=np.int64)
    np.cumsum(np.bincount(tid, minlength=offsets.size - 1), out=offsets[1:])
    lengths = np.concatenate([np.asarray(base.doc_lengths, dtype=np.uint32),
                              delta.lengths[:, :view.n_delta]], axis=1)[:, alive]
    postings = Postings(terms=terms, offsets=offsets, doc_ids=doc[order].astype(np.uint32),
                        tfs=np.ascontiguousarray(tfs[:, order]), lengths=np.ascontiguousarray(lengths))
    ids = [view.id_of(int(o)) for o in np.flatnonzero(alive)]
    popularity = np.concatenate([np.asarray(base.collection.popularity, dtype=np.float32),
                                 np.array([e.popularity for e in delta.entities[:view.n_delta]], dtype=np.float32)])
    return postings, ids, popularity[alive], new_of_old


def every_posting(view: View) -> tuple[list[tuple[int, str]], np.ndarray, np.ndarray, np.ndarray]:
    """Every posting of base and delta, dead copies included: (names, key int64 (P,), view ordinal
    int64 (P,), tfs uint32 (F, P)), names[key] = (group, term); the base's term ids are its keys,
    the delta's terms the base lacks get the next ones."""
    base, delta = view.segments.base, view.segments.delta
    names: list[tuple[int, str]] = [(0, "")] * len(base.df)
    for g, vocab in enumerate(base.vocab):
        for term, tid in vocab.items():
            names[tid] = (g, term)
    b_docs, b_tfs = base_postings(base)
    own = postings_per_term(base.blocks["term_blocks"], base.blocks["block_n"])  # a partition's df is global
    keys, docs, tfs = [np.repeat(np.arange(len(names), dtype=np.int64), own)], [b_docs], [b_tfs]
    for g, group_terms in enumerate(delta.postings):
        for term in list(group_terms):  # a copy: writes may add terms meanwhile
            d, t = delta.term(g, term, view.n_delta)
            if d.size == 0:
                continue
            key = base.vocab[g].get(term)
            if key is None:
                key = len(names)
                names.append((g, term))
            keys.append(np.full(d.size, key, dtype=np.int64))
            docs.append(d + view.n_base)
            tfs.append(t)
    return names, np.concatenate(keys), np.concatenate(docs), np.concatenate(tfs, axis=1)


def vocabulary(names: list[tuple[int, str]], held: np.ndarray, n_groups: int) -> tuple[list[list[str]], np.ndarray]:
    """The held terms, per group sorted (Postings.terms), and each key's new global term id
    (int64, -1 where not held); ids run group after group."""
    new_id = np.full(len(names), -1, dtype=np.int64)
    terms: list[list[str]] = []
    next_id = 0
    for g in range(n_groups):
        group = sorted((names[k][1], k) for k in np.flatnonzero(held).tolist() if names[k][0] == g)
        new_id[[k for _, k in group]] = np.arange(next_id, next_id + len(group))
        next_id += len(group)
        terms.append([t for t, _ in group])
    return terms, new_id
