from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.catalog import Entity
from core.errors import IndexFormatError
from core.fusion import reciprocal_rank_fusion
from core.merge import Merged, StrategyList, merge
from core.ranking import (
    FEATURE_NAMES,
    MISSING_RANK,
    BlendRanker,
    EntityTable,
    LambdaMartRanker,
    RankerKind,
    RRFRanker,
    TrainingGroup,
    TrainParams,
    candidate_features,
    feature_names,
    graded_labels,
    make_ranker,
    ndcg_at,
    train_lambdamart,
)
from core.types import EventType

NAMES = ("lexical", "semantic", "attribute", "memory")
WORDS = ("love", "night", "dance", "blue", "river", "fire", "heart", "summer", "rain", "gold", "city", "dream")


def lst(name: str, ids: list[str]) -> StrategyList:
    return StrategyList(name, ids, np.linspace(10, 1, num=len(ids), dtype=np.float32))


def col(name: str, strategies: tuple[str, ...] = NAMES) -> int:
    return feature_names(strategies).index(name)


@pytest.fixture(scope="module")
def table() -> EntityTable:
    ents = [Entity(id="a", fields={"title": "Love Story", "artist": "Taylor Swift", "album": "Fearless"},
                   popularity=80.0),
            Entity(id="b", fields={"title": "Shake It Off", "artist": "Taylor Swift"}, popularity=90.0),
            Entity(id="c", fields={"title": "Stories", "artist": "Avicii"}, popularity=0.0),
            Entity(id="d", fields={"title": "Love", "artist": "Lana Del Rey"}, popularity=50.0)]
    return EntityTable.from_entities(ents)


def test_rrf_matches_a_hand_computation() -> None:
    m = merge([lst("lexical", ["a", "b", "c"]), lst("memory", ["c", "d"])], NAMES)
    order, scores = RRFRanker().rank(m, "q", k=10)
    # c: 1/63 + 1/61; a: 1/61; b and d: 1/62 each, tied -> Merged order (b before d).
    assert [m.entity_ids[i] for i in order] == ["c", "a", "b", "d"]
    np.testing.assert_allclose(scores, [1 / 63 + 1 / 61, 1 / 61, 1 / 62, 1 / 62], rtol=1e-6)
    assert order.dtype == np.int64 and scores.dtype == np.float32
    order2, _ = RRFRanker().rank(m, "q", k=2)
    assert order2.tolist() == order[:2].tolist()


@given(st.lists(st.lists(st.sampled_from("abcdefghij"), unique=True, max_size=10), min_size=4, max_size=4))
def test_rrf_agrees_with_core_fusion(id_lists: list[list[str]]) -> None:
    m = merge([lst(n, ids) for n, ids in zip(NAMES, id_lists, strict=True)], NAMES)
    order, scores = RRFRanker().rank(m, "q", k=len(m))
    want = dict(reciprocal_rank_fusion(id_lists))
    assert {m.entity_ids[i]: s for i, s in zip(order.tolist(), scores.tolist(), strict=True)} == \
        pytest.approx(want, rel=1e-6)
    assert np.all(np.diff(scores) <= 0)


def test_feature_shapes_and_missing_indicators(table: EntityTable) -> None:
    m = merge([lst("lexical", ["a", "b"]), lst("memory", ["b", "zzz"])], NAMES)
    x = candidate_features(m, "taylor love", table)
    assert x.shape == (3, len(FEATURE_NAMES)) and x.dtype == np.float32
    a, b, z = (m.entity_ids.index(e) for e in ("a", "b", "zzz"))
    assert x[a, col("rank_lexical")] == 1 and x[a, col("missing_lexical")] == 0
    assert x[a, col("rank_memory")] == MISSING_RANK and x[a, col("score_memory")] == 0
    assert x[a, col("missing_memory")] == 1 and x[a, col("missing_semantic")] == 1
    assert x[b, col("memory_score")] == 10.0 and x[b, col("n_strategies")] == 2
    assert x[a, col("log1p_popularity")] == pytest.approx(math.log1p(80))
    assert x[a, col("title_match")] == 0.5 and x[a, col("artist_match")] == 0.5
    assert x[a, col("album_match")] == 0 and x[a, col("title_exact")] == 0
    assert x[z, col("log1p_popularity")] == 0 and x[z, col("title_match")] == 0  # not in the table
    assert x[a, col("rrf")] == pytest.approx(1 / 61)


def test_exact_title_and_attribute_match(table: EntityTable) -> None:
    m = merge([lst("attribute", ["a"]), lst("semantic", ["c"])], NAMES)
    x = candidate_features(m, "LOVE  story!", table)
    a, c = m.entity_ids.index("a"), m.entity_ids.index("c")
    assert x[a, col("title_exact")] == 1 and x[a, col("attribute_match")] == 1
    assert x[c, col("title_exact")] == 0 and x[c, col("attribute_match")] == 0
    assert candidate_features(m, "the", table)[:, col("title_match")].tolist() == [0, 0]  # stop word only


def test_features_align_to_other_strategy_orders(table: EntityTable) -> None:
    m = merge([lst("memory", ["a"])], ("memory",))
    x = candidate_features(m, "love", table, strategies=("lexical", "memory"))
    assert x.shape == (1, len(feature_names(("lexical", "memory"))))
    assert x[0, col("missing_lexical", ("lexical", "memory"))] == 1
    assert x[0, col("rank_memory", ("lexical", "memory"))] == 1
    empty = merge([], NAMES)
    assert candidate_features(empty, "love", table).shape == (0, len(FEATURE_NAMES))


def test_blend_matches_its_formula(table: EntityTable) -> None:
    m = merge([lst("lexical", ["c", "zzz"]), lst("semantic", ["b", "d"])], NAMES)
    blend = BlendRanker(table=table)
    order, scores = blend.rank(m, "shake", k=4)
    # c and b tie on RRF (1/61); b's title holds "shake" and b is popular. d (1/62) beats c on
    # popularity: one rank of RRF difference (1/61 - 1/62) is smaller than log1p(50) * 0.001.
    assert [m.entity_ids[i] for i in order] == ["b", "d", "c", "zzz"]
    want_b = 1 / 61 + blend.popularity_weight * math.log1p(90) + blend.title_weight * 1.0
    assert scores[0] == pytest.approx(want_b, rel=1e-6)
    assert scores[3] == pytest.approx(1 / 62, rel=1e-6)


@pytest.mark.parametrize("k", [-1, 1.5, True])
def test_bad_k(k: object) -> None:
    with pytest.raises(ValueError, match="`k` must be"):
        RRFRanker().rank(merge([lst("lexical", ["a"])], NAMES), "q", k)  # type: ignore[arg-type]


def test_graded_labels_take_the_best_event() -> None:
    m = merge([lst("lexical", ["a", "b", "c"])], NAMES)
    labels = graded_labels(m, [("a", EventType.CLICK), ("a", EventType.FAVORITE), ("b", EventType.SKIP),
                               ("c", EventType.PLAY), ("nope", EventType.LIKE)])
    assert labels.tolist() == [3, 0, 2]


def test_ndcg_hand_computation() -> None:
    labels, scores = np.array([0, 1, 2, 0]), np.array([4.0, 3.0, 2.0, 1.0])
    dcg = 1 / math.log2(3) + 3 / math.log2(4)
    idcg = 3 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at(labels, scores, [4]) == pytest.approx(dcg / idcg)
    assert ndcg_at(labels, scores, [2, 2], k=1) == pytest.approx((0 + 1) / 2)
    assert ndcg_at(np.array([0, 3]), np.array([1.0, 1.0]), [2], k=1) == 0.0  # a tie keeps input order
    assert ndcg_at(np.array([0, 0]), scores[:2], [2]) == 1.0  # LightGBM: a group without gain counts 1


def synthetic_table(seed: int = 3) -> EntityTable:
    rng = np.random.default_rng(seed)
    return EntityTable.from_entities(Entity(id=f"t{i}", fields={"title": " ".join(rng.choice(WORDS, size=2))},
                                            popularity=float(rng.integers(0, 100))) for i in range(400))


def synthetic_groups(table: EntityTable, n_groups: int, seed: int) -> list[TrainingGroup]:
    """Titles are random words; a candidate is relevant iff its title holds the query word. Strategy
    ranks are random, so only the title_match feature reveals relevance."""
    rng = np.random.default_rng(seed)
    groups = []
    for _ in range(n_groups):
        word = str(rng.choice(WORDS))
        ids = [table.ids[int(i)] for i in rng.choice(len(table.ids), size=20, replace=False)]
        lists = [lst(s, [str(e) for e in rng.permutation(ids)[: int(rng.integers(8, 21))]])
                 for s in ("lexical", "semantic")]
        m = merge(lists, ("lexical", "semantic"))
        rows = table.rows(m.entity_ids)
        labels = np.array([2 if word in table.terms["title"][r] else 0 for r in rows.tolist()], dtype=np.int32)
        groups.append(TrainingGroup(query_text=word, merged=m, labels=labels))
    return groups


def test_lambdamart_learns_the_relevance_feature_and_round_trips(tmp_path: Path) -> None:
    table = synthetic_table()
    groups = synthetic_groups(table, 160, seed=3)
    path = tmp_path / "ranker.txt"
    report = train_lambdamart(groups, path, TrainParams(num_boost_round=40, min_data_in_leaf=5), table=table)
    assert report.valid_groups >= 20 and report.train_groups + report.valid_groups <= 160
    assert report.ndcg_at_10 > 0.95 and report.ndcg_at_10 > report.rrf_ndcg_at_10 + 0.1
    ranker = make_ranker(RankerKind.LAMBDAMART, table, path)
    assert isinstance(ranker, LambdaMartRanker) and ranker.strategies == ("lexical", "semantic")
    reloaded = LambdaMartRanker.load(path, table)
    for g in synthetic_groups(table, 20, seed=99):
        order, scores = ranker.rank(g.merged, g.query_text, k=len(g.merged))
        n_rel = int((g.labels > 0).sum())
        assert (g.labels[order[:n_rel]] > 0).all(), "relevant candidates first"
        again = reloaded.rank(g.merged, g.query_text, k=len(g.merged))
        np.testing.assert_array_equal(again[0], order)
        np.testing.assert_array_equal(again[1], scores)


def test_make_ranker_falls_back_to_cold_start_without_a_model(tmp_path: Path, table: EntityTable) -> None:
    assert isinstance(make_ranker("lambdamart", table, tmp_path / "none.txt"), RRFRanker)
    assert isinstance(make_ranker("lambdamart", table, None, cold_start="blend"), BlendRanker)
    (tmp_path / "bad.txt").write_text("not a model")
    with pytest.raises(IndexFormatError, match=r"bad\.txt"):
        make_ranker(RankerKind.LAMBDAMART, table, tmp_path / "bad.txt")


def test_training_needs_a_positive_label(tmp_path: Path, table: EntityTable) -> None:
    m = merge([lst("lexical", ["a"])], NAMES)
    with pytest.raises(ValueError, match="positive label"):
        train_lambdamart([TrainingGroup(query_text="q", merged=m, labels=np.zeros(1, np.int32))],
                         tmp_path / "m.txt", table=table)


def test_merged_type_is_what_rankers_take() -> None:
    m = Merged(("lexical",), [], np.zeros((0, 1), np.int32), np.zeros((0, 1), np.float32))
    order, scores = RRFRanker().rank(m, "q", 5)
    assert order.shape == (0,) and scores.shape == (0,)
