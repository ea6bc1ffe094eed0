"""A live lexical index: the immutable base plus an in-memory delta segment (Lucene/tantivy segments).

- The base is a LexicalIndex, memory-mapped, never modified. Added documents go to the delta
  segment, analysed with the base's analyzers into the base's fields and vocabulary groups, with
  the same one-byte (or exact) norms and popularity prior. Deleting a document marks its ordinal
  deleted; an upsert of an existing id deletes the old copy, then adds the new one.
- Ordinals: the live ordinal space is the base's ordinals 0..n_base-1, then the delta's documents
  n_base.. in write order, dead copies included (a deleted or replaced copy keeps its ordinal
  until a merge). `allowed` bitmaps are over this space.
- Statistics: every search scores base and delta with ONE set of statistics over base + delta:
  N per vocabulary group, df per term, average field lengths. As in Lucene, deleted documents
  (and replaced copies) still count in them until a merge removes them, so a live search equals,
  bit for bit, a search of one fresh offline build (core.lexical.index.write_index) of every copy
  ever written, base first then writes in order, with the dead copies masked out. The base's
  block bounds depend on these statistics (avgdl), so they are recomputed with them and pruning
  stays exact. A search reads a view (statistics, masks) built once per version of the index.
- Merge: base + delta - dead copies are folded, at the postings level (no re-analysis of the
  base), into a new base written atomically (core.storage); its files equal a fresh offline build
  of the live catalog (base order, then writes) byte for byte. The index then swaps to it by one
  reference assignment: searches running on the old segments finish on them. Writes made while
  the merge ran are carried over to the new delta. Ordinals are renumbered by a merge.
- Costs: an add analyses one document (about 15,000 per second on the demo catalog, one thread);
  the first search after a write builds the view, O(blocks + terms + base documents) (about 1 ms
  for the demo catalog's 18k-document base), so with writes streaming in, searches pay it at most
  once per version; a search scores the delta exhaustively in NumPy (see
  benchmarks/live_lexical.py for figures).
"""

from __future__ import annotations

import copy
import os
import threading
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
from pyroaring import BitMap

from core.catalog import Entity
from core.collection import Collection
from core.errors import NotFoundError
from core.lexical.index import LexicalIndex, term_idf, write_postings
from core.lexical.live_merge import merged_postings
from core.lexical.segments import DeltaSegment, Segments, View
from core.lexical.stats import CorpusStats
from core.query import Query
from core.types import Hits, StrategyKind


class LiveLexicalIndex:
    """A LexicalIndex that takes writes while serving: add (upsert), delete, search, merge.

    Writes are serialised by a lock; searches take no lock once the view of the current version
    exists. See the module docstring for ordinals, statistics and the merge."""

    kind = StrategyKind.LEXICAL
    vector_dim = 0

    def __init__(self, base: LexicalIndex, outside_df: Mapping[tuple[int, str], int] | None = None) -> None:
        if outside_df is None and base.n_docs and base.stats.entities != base.n_docs:
            raise ValueError("`base` must be an index of a whole catalog, but got a partition of "
                             f"{base.stats.entities} entities holding {base.n_docs} (pass `outside_df`)")
        self._lock = threading.Lock()
        self._merge_lock = threading.Lock()
        self._segments = Segments(base, list(base.collection.ids), DeltaSegment(base), dict(outside_df or {}))
        self._deleted = BitMap(base.collection.deleted)
        self._ordinal = {eid: i for i, eid in enumerate(base.collection.ids) if i not in self._deleted}
        self._version = 0
        self._view: View | None = None

    # -- writes -----------------------------------------------------------------------------------

    def add(self, entity: Entity) -> int:
        """Add `entity` (an upsert: a live copy with its id is deleted first); returns its ordinal."""
        with self._lock:
            old = self._ordinal.get(entity.id)
            if old is not None:
                self._deleted = self._deleted | BitMap([old])
            seg = self._segments
            ordinal = seg.base.n_docs + len(seg.delta)
            seg.delta.add(entity)
            self._ordinal[entity.id] = ordinal
            self._version += 1
            return ordinal

    def delete(self, entity_id: str) -> None:
        """Delete the live copy of `entity_id`; NotFoundError when there is none."""
        with self._lock:
            old = self._ordinal.pop(entity_id, None)
            if old is None:
                raise NotFoundError(f"entity {entity_id!r} is not in the index")
            self._deleted = self._deleted | BitMap([old])
            self._version += 1

    def __contains__(self, entity_id: str) -> bool:
        return entity_id in self._ordinal

    def __len__(self) -> int:
        """Live documents."""
        return len(self._ordinal)

    @property
    def delta_size(self) -> int:
        """Documents in the delta segment, dead copies included."""
        return len(self._segments.delta)

    # -- search -----------------------------------------------------------------------------------

    def view(self) -> View:
        """The view of the current version (built under the write lock on the first search after a write)."""
        view = self._view
        if view is not None and view.version == self._version:
            return view
        with self._lock:
            if self._view is None or self._view.version != self._version:
                self._view = make_view(self._segments, self._deleted, self._version)
            return self._view

    def retrieve(self, query: Query, quota: int, allowed: BitMap | None) -> Hits:
        """The top `quota` live documents among `allowed` (live ordinals; None: all) by (float32
        score desc, ordinal asc), over base and delta."""
        return search(self.view(), query.text, quota, allowed)

    def retrieve_ids(self, query: Query, quota: int, allowed: BitMap | None = None) -> tuple[list[str], Hits]:
        """retrieve, with the ids of the hits read from the same view (a merge renumbers ordinals)."""
        view = self.view()
        hits = search(view, query.text, quota, allowed)
        return [view.id_of(int(o)) for o in hits.ordinals], hits

    def warm_up(self) -> None:
        self._segments.base.warm_up()
        search(self.view(), "warm up", 1, None)

    def describe(self) -> dict[str, str]:
        return {**self._segments.base.describe(), "delta_documents": str(self.delta_size),
                "deleted": str(len(self._deleted))}

    # -- merge ------------------------------------------------------------------------------------

    def merge(self, root: str | os.PathLike[str]) -> list[str]:
        """Fold base + delta - dead copies into a new base written under `root` (its "lexical"
        component, atomically), then swap to it; writes made meanwhile are carried over. Returns
        the new base's ids by ordinal (the caller writes the collection component beside it)."""
        with self._merge_lock:
            view = self.view()
            postings, ids, popularity, new_of_old = merged_postings(view)
            write_postings(postings, view.segments.base.config, root, progress=False)
            collection = Collection(ids, popularity, BitMap(), {})
            base = LexicalIndex.load(root, collection, view.segments.base.config.to_params())
            ordinal = {eid: i for i, eid in enumerate(ids)}  # outside the lock: searches wait for it
            with self._lock:
                self._swap(view, base, ids, new_of_old, ordinal)
            return ids

    def _swap(self, view: View, base: LexicalIndex, ids: list[str], new_of_old: np.ndarray,
              ordinal: dict[str, int]) -> None:
        """Under the write lock: the new segments, with the writes made since `view`. ordinal: the
        new base's ordinal of each of `ids`, made before the lock (28k ids: 4-5 ms a search would
        wait), updated here with those writes."""
        old = self._segments
        boundary = view.n_base + view.n_delta
        gone = self._deleted - view.deleted
        deleted = BitMap(int(new_of_old[o]) for o in gone if o < boundary and new_of_old[o] >= 0)
        seg = Segments(base, ids, DeltaSegment(base))
        for o in deleted:
            del ordinal[ids[o]]
        for j in range(view.n_delta, len(old.delta)):
            entity = old.delta.entities[j]
            new = base.n_docs + len(seg.delta)
            seg.delta.add(entity)
            if old.base.n_docs + j in self._deleted:
                deleted.add(new)
            else:
                ordinal[entity.id] = new
        self._segments, self._deleted, self._ordinal = seg, deleted, ordinal
        self._version += 1


def make_view(seg: Segments, deleted: BitMap, version: int) -> View:
    """The view of `seg` as it is now (called under the write lock)."""
    base, delta = seg.base, seg.delta
    n_base, n_delta = base.n_docs, len(delta)
    stats = CorpusStats(entities=n_base + n_delta,
                        group_docs=tuple(a + b for a, b in zip(base.stats.group_docs, delta.group_docs, strict=True)),
                        length_sums=tuple(a + b for a, b in zip(base.stats.length_sums, delta.length_sums,
                                                                strict=True)),
                        field_docs=tuple(a + b for a, b in zip(base.stats.field_docs, delta.field_docs, strict=True)))
    delta_code = delta.codes[:, :n_delta]  # a view: a later add writes past n_delta or into a new array
    scored = copy.copy(base)
    scored.set_stats(stats, base.df + delta.base_df, delta_code)
    dead = np.asarray(deleted.to_array(), dtype=np.int64)
    base_live = np.zeros(0, dtype=np.uint8)
    if dead.size and dead[0] < n_base:
        base_live = np.ones(n_base, dtype=np.uint8)
        base_live[dead[dead < n_base]] = 0
    delta_live = np.ones(n_delta, dtype=bool)
    delta_live[dead[dead >= n_base] - n_base] = False
    return View(seg, scored, stats, n_delta, deleted, base_live, delta_live, delta_code, version)


def query_plan(view: View, text: str) -> list[tuple[int, str, int, float]]:
    """The query's known terms, group by group, in query order, as a fresh build of every copy
    would list them: (group, term, base term id or -1, weight qtf * outer_w * idf). A base term's
    idf is the view's (base + delta df); a term only the delta holds gets its own."""
    base, delta = view.base, view.segments.delta
    analysed = {cfg: Counter(a(text)) for cfg, a in base.analyzers.items()}
    plan: list[tuple[int, str, int, float]] = []
    new: list[tuple[int, int, int]] = []  # (position in plan, group, df) of the terms only the delta holds
    for g, vocab in enumerate(base.vocab):
        for term, qtf in analysed[base.group_analyzer[g]].items():
            tid = vocab.get(term, -1)
            if tid >= 0:
                plan.append((g, term, tid, qtf * base.outer_w[g] * float(base.idf[tid])))
                continue
            df = delta.term(g, term, view.n_delta)[0].shape[0] + view.segments.outside_df.get((g, term), 0)
            if df > 0:
                new.append((len(plan), g, df))
                plan.append((g, term, -1, float(qtf)))
    if new:
        idf = term_idf(np.array([df for _, _, df in new], dtype=np.int64), [1] * len(new),
                       [view.stats.group_docs[g] for _, g, _ in new])
        for (i, g, _), value in zip(new, idf, strict=True):
            plan[i] = (*plan[i][:3], plan[i][3] * base.outer_w[g] * float(value))
    return plan


def search(view: View, text: str, quota: int, allowed: BitMap | None) -> Hits:
    """Top `quota` over base and delta (see LiveLexicalIndex.retrieve)."""
    plan = query_plan(view, text)
    if not plan or quota <= 0:
        return Hits.empty()
    base = view.base
    base_mask = view.base_live
    delta_ok = view.delta_live
    if allowed is not None:
        ords = np.asarray(allowed.to_array(), dtype=np.int64)
        base_mask = np.zeros(view.n_base, dtype=np.uint8)
        base_mask[ords[ords < view.n_base]] = 1
        if view.base_live.shape[0]:
            base_mask &= view.base_live
        inside = ords[(ords >= view.n_base) & (ords < view.n_base + view.n_delta)] - view.n_base
        delta_ok = np.zeros(view.n_delta, dtype=bool)
        delta_ok[inside] = view.delta_live[inside]
    in_base = [(tid, w) for _, _, tid, w in plan if tid >= 0]
    docs, scores, count = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64), 0
    if in_base and view.n_base:
        docs, scores, count = base.search(np.array([t for t, _ in in_base], dtype=np.int64),
                                          np.array([w for _, w in in_base], dtype=np.float64), quota, base_mask,
                                          pruned=base.config.pruning)
    d_docs, d_scores, d_count = delta_topk(view, plan, quota, delta_ok)
    all_docs = np.concatenate([docs, d_docs + view.n_base])
    all_scores = np.concatenate([scores, d_scores])
    order = np.lexsort((all_docs, -all_scores))[:quota]
    return Hits(all_docs[order], all_scores[order].astype(np.float32), count + d_count)


def delta_topk(view: View, plan: Sequence[tuple[int, str, int, float]], quota: int, ok: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, int]:
    """The delta's top `quota` among documents where `ok`: (delta docs int64, float32-valued
    scores float64, matches), computed as core.lexical.scoring.bm25_topk computes a score:
    per term in query order, w * tfw / (k1 + tfw), tfw summed over fields in order."""
    base, delta = view.base, view.segments.delta
    scores = np.zeros(view.n_delta, dtype=np.float64)
    matched = np.zeros(view.n_delta, dtype=bool)
    k1 = float(base.config.k1)
    for g, term, _, w in plan:
        docs, tfs = delta.term(g, term, view.n_delta)
        if docs.size == 0:
            continue
        tfw = np.zeros(docs.size, dtype=np.float64)
        for f in range(tfs.shape[0]):
            held = tfs[f] > 0
            inv = base.norm_table[f][view.delta_code[f, docs]].astype(np.float64)
            tfw += np.where(held, base.inner_w[f] * tfs[f].astype(np.float64) * inv, 0.0)
        impact = np.zeros(docs.size, dtype=np.float64)
        np.divide(tfw, k1 + tfw, out=impact, where=tfw > 0)
        scores[docs] += w * impact
        matched[docs] = True
    matched &= ok
    hit = np.flatnonzero(matched)
    s = scores[hit]
    if delta.popularity_weight > 0:
        s = s + delta.prior[hit].astype(np.float64)
    s = s.astype(np.float32).astype(np.float64)
    order = np.lexsort((hit, -s))[:quota]
    return hit[order].astype(np.int64), s[order], int(hit.size)
