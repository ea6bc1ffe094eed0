"""The live lexical index (core.lexical.live) against fresh offline builds searched with the NumPy
reference kernel: after random adds, upserts and deletes, the same ids, order and float32 scores;
a merge writes the files a fresh build of the live catalog writes."""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyroaring import BitMap

from core.analysis import AnalyzerConfig
from core.catalog import Entity
from core.collection import Collection
from core.errors import NotFoundError
from core.lexical import codec
from core.lexical import live as live_module
from core.lexical.index import FieldSpec, LexicalConfig, LexicalIndex, write_index
from core.lexical.live import LiveLexicalIndex
from core.lexical.reference import bm25_topk_reference, impacts_reference
from core.query import Query
from core.storage import ComponentReader

WORDS = ["love", "loving", "night", "the", "blue", "moon", "dance", "queen", "abba", "rock", "zeta", "omega"]


def entity(eid: str, words: list[int], pop: float) -> Entity:
    """Title from the first half of `words`, artist from the rest (indices into WORDS)."""
    half = len(words) // 2 + 1
    return Entity(id=eid, fields={"title": " ".join(WORDS[w] for w in words[:half]),
                                  "artist": " ".join(WORDS[w] for w in words[half:])}, popularity=pop)


def config(scoring: str, quantization: str, pruning: bool, popularity_weight: float) -> LexicalConfig:
    analyzer = AnalyzerConfig()
    return LexicalConfig(fields=(FieldSpec(name="title", weight=2.0, analyzer=analyzer),
                                 FieldSpec(name="artist", weight=1.0, analyzer=analyzer)),
                         scoring=scoring, length_quantization=quantization, pruning=pruning,
                         popularity_weight=popularity_weight)


def load(entities: list[Entity], cfg: LexicalConfig, root: str) -> LexicalIndex:
    write_index(entities, cfg, root, progress=False)
    return LexicalIndex.load(root, Collection.build(entities))


def reference(index: LexicalIndex, text: str, k: int, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Top k of the NumPy reference kernel on a freshly built index: (ordinals, float32 scores)."""
    tids, weights = index.query_terms(text)
    if tids.size == 0 or index.n_docs == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    b = index.blocks
    docs, scores, _ = bm25_topk_reference(
        tids, weights, b["term_blocks"], b["block_first"], b["block_last"], b["block_n"], b["block_words"],
        b["block_bits"], b["words"], index.block_ub, index.norm_code, index.norm_table, index.inner_w,
        float(index.config.k1), mask, index.prior, index.prior_max, index.n_docs, k)
    return docs, scores.astype(np.float32)


class Model:
    """What the live index should hold: every copy written, in order, and which are dead."""

    def __init__(self, base: list[Entity]) -> None:
        self.copies = list(base)
        self.dead: set[int] = set()
        self.live = {e.id: i for i, e in enumerate(base)}

    def add(self, e: Entity) -> None:
        if e.id in self.live:
            self.dead.add(self.live[e.id])
        self.live[e.id] = len(self.copies)
        self.copies.append(e)

    def delete(self, eid: str) -> None:
        self.dead.add(self.live.pop(eid))

    def live_catalog(self) -> list[Entity]:
        return [e for i, e in enumerate(self.copies) if i not in self.dead]


words = st.lists(st.integers(0, len(WORDS) - 1), min_size=0, max_size=6)
ops = st.lists(st.tuples(st.sampled_from(["add", "add", "delete"]), st.integers(0, 14), words,
                         st.integers(0, 100)), max_size=25)
queries = st.lists(st.tuples(st.lists(st.integers(0, len(WORDS) - 1), min_size=1, max_size=3),
                             st.sampled_from([1, 3, 100]), st.integers(0, 2**32 - 1), st.booleans()),
                   min_size=1, max_size=4)
params = st.tuples(st.sampled_from(["bm25f", "sum"]), st.sampled_from(["lucene", "exact"]), st.booleans(),
                   st.sampled_from([0.0, 0.5]))


def apply(live: LiveLexicalIndex, model: Model, op: tuple[str, int, list[int], int]) -> None:
    kind, key, text, pop = op
    eid = f"id{key}"
    if kind == "add":
        e = entity(eid, text, float(pop))
        live.add(e)
        model.add(e)
    elif eid in model.live:
        live.delete(eid)
        model.delete(eid)
    else:
        with pytest.raises(NotFoundError, match="not in the index"):
            live.delete(eid)


def check_searches(live: LiveLexicalIndex, model: Model, ref: LexicalIndex, qs: list[Any]) -> None:
    n = len(model.copies)
    for q, k, seed, filtered in qs:
        text = " ".join(WORDS[w] for w in q)
        allowed = None
        mask = np.ones(n, dtype=np.uint8)
        if filtered:
            chosen = np.flatnonzero(np.random.default_rng(seed).random(n) < 0.6)
            allowed = BitMap(chosen.tolist())
            mask[:] = 0
            mask[chosen] = 1
        mask[sorted(model.dead)] = 0
        want_docs, want_scores = reference(ref, text, k, mask)
        ids, hits = live.retrieve_ids(Query(text=text), k, allowed)
        np.testing.assert_array_equal(hits.ordinals, want_docs)
        np.testing.assert_array_equal(hits.scores, want_scores)
        assert ids == [model.copies[int(d)].id for d in want_docs]
        assert not set(hits.ordinals.tolist()) & model.dead


@settings(max_examples=40, deadline=None)
@given(base=st.lists(st.tuples(words, st.integers(0, 100)), max_size=12), ops=ops, qs=queries, p=params)
def test_live_search_equals_fresh_build_of_every_copy(base: list[Any], ops: list[Any], qs: list[Any],
                                                      p: tuple[str, str, bool, float]) -> None:
    """Deleted copies stay in the statistics (Lucene): the oracle is a fresh build of every copy
    ever written, base then writes, with the dead ones masked out."""
    cfg = config(*p)
    base_entities = [entity(f"id{i}", w, float(pop)) for i, (w, pop) in enumerate(base)]
    with tempfile.TemporaryDirectory() as tmp:
        live = LiveLexicalIndex(load(base_entities, cfg, f"{tmp}/base"))
        model = Model(base_entities)
        for op in ops:
            apply(live, model, op)
        check_searches(live, model, load(model.copies, cfg, f"{tmp}/every_copy"), qs)
        assert len(live) == len(model.live)


def manifest_files(root: str) -> dict[str, Any]:
    return ComponentReader(root, "lexical").files


@settings(max_examples=30, deadline=None)
@given(base=st.lists(st.tuples(words, st.integers(0, 100)), max_size=12), ops=ops, later=ops, qs=queries,
       p=params)
def test_merge_equals_fresh_build(base: list[Any], ops: list[Any], later: list[Any], qs: list[Any],
                                  p: tuple[str, str, bool, float]) -> None:
    """The merged base's files are a fresh build's of the live catalog (same bytes); writes made
    while the merge runs (`later`, injected before it writes) are carried over to the new delta."""
    cfg = config(*p)
    base_entities = [entity(f"id{i}", w, float(pop)) for i, (w, pop) in enumerate(base)]
    with tempfile.TemporaryDirectory() as tmp:
        live = LiveLexicalIndex(load(base_entities, cfg, f"{tmp}/base"))
        model = Model(base_entities)
        for op in ops:
            apply(live, model, op)
        merged_catalog = model.live_catalog()
        after = Model(merged_catalog)
        write = live_module.write_postings

        def write_with_concurrent_writes(*args: Any, **kwargs: Any) -> None:
            for op in later:
                apply(live, after, op)
            write(*args, **kwargs)

        live_module.write_postings = write_with_concurrent_writes
        try:
            live.merge(f"{tmp}/merged")
        finally:
            live_module.write_postings = write
        write_index(merged_catalog, cfg, f"{tmp}/fresh", progress=False)
        assert manifest_files(f"{tmp}/merged") == manifest_files(f"{tmp}/fresh")
        assert live.delta_size == len(after.copies) - len(merged_catalog)
        check_searches(live, after, load(after.copies, cfg, f"{tmp}/every_copy"), qs)


def test_upsert_replaces_text_and_delete_hides(tmp_path: Path) -> None:
    cfg = config("bm25f", "lucene", True, 0.0)
    live = LiveLexicalIndex(load([entity("a", [0, 1], 1.0), entity("b", [2, 3], 1.0)], cfg, str(tmp_path / "b")))
    live.add(Entity(id="a", fields={"title": "omega"}))
    assert live.retrieve_ids(Query(text="love"), 10)[0] == []
    assert live.retrieve_ids(Query(text="omega"), 10)[0] == ["a"]
    live.add(Entity(id="new", fields={"title": "zeta night"}))
    assert live.retrieve_ids(Query(text="zeta"), 10)[0] == ["new"]
    live.delete("new")
    assert live.retrieve_ids(Query(text="zeta"), 10)[0] == []
    assert "new" not in live and len(live) == 2


def test_searches_never_fail_during_writes_and_merges(tmp_path: Path) -> None:
    """Writer and merger threads against searching threads: no search raises, none returns a
    document deleted before it started, every upserted document is found by its own word."""
    cfg = config("bm25f", "lucene", True, 0.0)
    live = LiveLexicalIndex(load([entity(f"b{i}", [i % 12, (i * 5) % 12], 1.0) for i in range(200)], cfg,
                                 str(tmp_path / "base")))
    errors: list[BaseException] = []
    stop = threading.Event()

    def searcher() -> None:
        try:
            while not stop.is_set():
                ids, _ = live.retrieve_ids(Query(text="love night omega"), 50)
                assert "b0" not in ids
        except BaseException as err:  # reported to the main thread
            errors.append(err)

    live.delete("b0")
    threads = [threading.Thread(target=searcher) for _ in range(2)]
    for t in threads:
        t.start()
    for i in range(300):
        live.add(Entity(id=f"w{i}", fields={"title": f"omega w{i}"}))
        if i % 100 == 50:
            live.merge(tmp_path / f"merged{i}")
        assert live.retrieve_ids(Query(text=f"w{i}"), 5)[0] == [f"w{i}"]
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[:1]


@pytest.mark.parametrize("quantization", ["lucene", "exact"])
def test_pruned_base_with_many_blocks_after_long_writes(tmp_path: Path, quantization: str) -> None:
    """Posting lists of several 128-document blocks, a delta of long documents (avgdl rises, so
    the base's block bounds must be recomputed for pruning to stay exact) and deletions."""
    rng = np.random.default_rng(3)
    zipf = np.minimum(rng.zipf(1.3, size=20_000), len(WORDS)) - 1

    def words(n: int) -> list[int]:
        return [int(w) for w in rng.choice(zipf, size=n)]

    cfg = config("bm25f", quantization, True, 0.5)
    base = [entity(f"id{i}", words(int(rng.integers(1, 6))), float(i % 50)) for i in range(700)]
    live = LiveLexicalIndex(load(base, cfg, str(tmp_path / "base")))
    model = Model(base)
    for i in range(300):
        apply(live, model, ("add", 700 + i if i % 3 else int(rng.integers(0, 700)), words(int(rng.integers(20, 200))),
                            i % 70))
        if i % 7 == 0:
            apply(live, model, ("delete", int(rng.integers(0, 1000)), [], 0))
    qs = [(words(int(rng.integers(1, 5))), k, seed, seed % 4 == 0) for seed, k in enumerate([1, 5, 10, 50] * 25)]
    check_searches(live, model, load(model.copies, cfg, str(tmp_path / "every_copy")), qs)
    # The invariant pruning rests on, checked directly: under the view's statistics (avgdl raised
    # by the long delta documents), no base posting's impact exceeds its block's bound.
    view = live.view()
    b = view.base.blocks
    for blk in range(b["block_first"].shape[0]):
        docs = np.zeros(128, dtype=np.int64)
        tfs = np.zeros((2, 128), dtype=np.uint32)
        n = codec.decode_block(b["words"], b["block_words"], b["block_bits"], b["block_first"], b["block_n"], blk,
                               docs, tfs)
        impacts = impacts_reference(docs[:n], tfs[:, :n], view.base.norm_code, view.base.norm_table,
                                    view.base.inner_w, float(cfg.k1))
        assert impacts.max() <= view.base.block_ub[blk]
