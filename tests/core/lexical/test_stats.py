"""The whole catalog's statistics and partition slicing (core.lexical.stats), against analysing the
partition's documents alone; and the float32 order every lexical list comes in."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.catalog import demo_catalog_path, load_jsonl
from core.collection import Collection
from core.lexical.build import analyse
from core.lexical.index import FieldSpec, LexicalConfig, LexicalIndex, write_index
from core.lexical.reference import decode_term, impacts_reference
from core.lexical.stats import CorpusStats, partition_postings
from core.query import Query
from tests.core.lexical.test_build import make_catalog

FIELDS = [FieldSpec(name="title", weight=2.0), FieldSpec(name="artist")]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 60), share=st.floats(0.0, 1.0),
       groups=st.sampled_from([((0, 1),), ((0,), (1,))]))
def test_partition_postings_equal_analysing_the_partition_alone(seed: int, n: int, share: float,
                                                                groups: tuple[tuple[int, ...], ...]) -> None:
    entities = make_catalog(seed, n, ["title", "artist"])
    ordinals = np.flatnonzero(np.random.default_rng(seed).random(n) < share).astype(np.int64)
    whole = analyse(entities, FIELDS, groups, progress=False)
    sliced, df = partition_postings(whole, ordinals)
    alone = analyse([entities[i] for i in ordinals.tolist()], FIELDS, groups, progress=False)
    assert sliced.terms == alone.terms
    for name in ("offsets", "doc_ids", "tfs", "lengths"):
        assert np.array_equal(getattr(sliced, name), getattr(alone, name)), name
    keys = [(g, t) for g, terms in enumerate(whole.terms) for t in terms]  # a term may be in several groups
    whole_df = dict(zip(keys, np.diff(whole.offsets).tolist(), strict=True))
    assert df.tolist() == [whole_df[g, t] for g, terms in enumerate(sliced.terms) for t in terms]


def test_corpus_stats_of_lengths_counts_by_hand() -> None:
    lengths = np.array([[3, 0, 5, 0], [0, 0, 2, 7]], dtype=np.uint32)
    stats = CorpusStats.of_lengths(lengths, ((0,), (1,)))
    assert stats == CorpusStats(entities=4, group_docs=(2, 2), length_sums=(8, 9), field_docs=(2, 2))
    assert CorpusStats.of_lengths(lengths, ((0, 1),)).group_docs == (3,)
    assert stats.avgdl().tolist() == [4.0, 4.5]
    assert CorpusStats.from_params(stats.to_params()) == stats


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"entities": 1, "group_docs": (1,), "length_sums": (1, 2), "field_docs": (1,)},
     "`length_sums` and `field_docs` must have one value per field, but got 2 and 1"),
    ({"entities": -1, "group_docs": (), "length_sums": (), "field_docs": ()}, "must be ints >= 0"),
])
def test_corpus_stats_rejects(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CorpusStats(**kwargs)  # type: ignore[arg-type]


def test_partition_postings_rejects_unsorted_ordinals() -> None:
    whole = analyse(make_catalog(1, 5, ["title"]), FIELDS[:1], ((0,),), progress=False)
    with pytest.raises(ValueError, match="`ordinals` must be ascending, distinct and in"):
        partition_postings(whole, np.array([3, 1], dtype=np.int64))


@pytest.mark.parametrize("pruning", [True, False])
def test_lists_are_ordered_by_float32_score_then_ordinal(tmp_path: object, pruning: bool) -> None:
    """Regression: distinct float64 scores rounding to one float32 came in float64 order, so a
    list contradicted the wire's rule (ties in score broken by catalog order) and P partitions
    merged by that rule differed from one index (the first query: 8.922283574314628 and ...626,
    both 8.922283 in float32, on the demo's first 2,500 tracks). Oracle: every match scored
    in float64 with the NumPy reference's impacts, cast to float32, sorted by (score desc, ordinal asc)."""
    entities = load_jsonl(demo_catalog_path())[:2500]
    config = LexicalConfig.from_options({"fields": "title^2,artist^1.5,album^0.5", "scoring": "sum",
                                         "pruning": pruning})
    write_index(entities, config, str(tmp_path), progress=False)
    index = LexicalIndex.load(str(tmp_path), Collection.build(entities))
    collided = 0
    b = index.blocks
    for text in ("All Day And Night - Jax Jones & Martin Solveig Present Europa", "love remix", "the night"):
        tids, weights = index.query_terms(text)
        scores = np.zeros(len(entities))  # float64, summed in query order
        for tid, w in zip(tids.tolist(), weights.tolist(), strict=True):
            docs, tfs = decode_term(b["term_blocks"], b["block_first"], b["block_n"], b["block_words"],
                                    b["block_bits"], b["words"], tid)
            scores[docs] += w * impacts_reference(docs, tfs, index.norm_code, index.norm_table, index.inner_w,
                                                  config.k1)
        docs = np.flatnonzero(scores)
        scores = scores[docs]
        s32 = scores.astype(np.float32)
        collided += len(np.unique(scores)) > len(np.unique(s32))
        order = np.lexsort((docs, -s32))
        for quota in (1, 10, 11, 37, 200):
            hits = index.retrieve(Query(text=text), quota, None)
            assert hits.ordinals.tolist() == docs[order][:quota].tolist(), (text, quota)
            assert hits.scores.tolist() == s32[order][:quota].tolist(), (text, quota)
    assert collided  # the data holds the case this guards
