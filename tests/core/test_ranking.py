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
    MATCH_FIELDS,
    MISSING_RANK,
    BlendRanker,
    EntityTable,
    RankerKind,
    RRFRanker,
    candidate_features,
    feature_names,
    make_ranker,
)

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
    assert x[a, col("album_match")] == 0 and x[a, col("title_exact")] == 0 and x[a, col("artist_exact")] == 0
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


def test_make_ranker_falls_back_to_cold_start_without_a_model(tmp_path: Path, table: EntityTable) -> None:
    assert isinstance(make_ranker("lambdamart", table, tmp_path / "none.txt"), BlendRanker)
    assert isinstance(make_ranker("lambdamart", table, None, cold_start="rrf"), RRFRanker)
    (tmp_path / "bad.txt").write_text("not a model")
    with pytest.raises(IndexFormatError, match=r"bad\.txt"):
        make_ranker(RankerKind.LAMBDAMART, table, tmp_path / "bad.txt")


def test_merged_type_is_what_rankers_take() -> None:
    m = Merged(("lexical",), [], np.zeros((0, 1), np.int32), np.zeros((0, 1), np.float32))
    order, scores = RRFRanker().rank(m, "q", 5)
    assert order.shape == (0,) and scores.shape == (0,)


ARTIST_QUERY = [  # 'beyonce' on the demo catalog, in small
    Entity(id="gente", fields={"title": "Mi Gente (feat. Beyoncé)", "artist": "J Balvin",
                               "album": "Mi Gente (feat. Beyoncé)"}, popularity=80.0),
    Entity(id="duet", fields={"title": "Perfect Duet (Ed Sheeran & Beyoncé)", "artist": "Ed Sheeran",
                              "album": "Perfect Duet (Ed Sheeran & Beyoncé)"}, popularity=80.0),
    Entity(id="halo", fields={"title": "Halo", "artist": "Beyoncé", "album": "I AM...SASHA FIERCE"}, popularity=70.0),
    Entity(id="jealous", fields={"title": "Jealous", "artist": "Beyoncé", "album": "BEYONCÉ"}, popularity=50.0),
]


@pytest.mark.parametrize("lexical", [["gente", "duet", "halo", "jealous"], ["duet", "gente", "jealous", "halo"]])
def test_the_artist_own_tracks_rank_above_a_feat_appearance(lexical: list[str]) -> None:
    """Regression: 'beyonce' on the demo catalog showed "Mi Gente (feat. Beyoncé) — J Balvin" first.
    The lexical strategy ranks it first (per-field BM25: 'beyonce' is rare in titles, common among
    artists); RRF, the cold start then, passed a lone strategy's list through, and the blend counted
    the credit as a title word. The cold-start ranker must put the artist's own tracks first, even
    when the only list it gets ranks the guest appearances first."""
    table = EntityTable.from_entities(ARTIST_QUERY)
    m = merge([lst("lexical", lexical)], NAMES)
    ranker = make_ranker(RankerKind.LAMBDAMART, table, None)  # no model yet: the cold start
    order, _ = ranker.rank(m, "beyonce", k=4)
    assert {m.entity_ids[i] for i in order[:2]} == {"halo", "jealous"}
    x = candidate_features(m, "Beyoncé", table)
    gente = m.entity_ids.index("gente")
    assert x[gente, col("title_match")] == 0 and x[gente, col("album_match")] == 0  # a credit is not a title
    assert x[m.entity_ids.index("halo"), col("artist_exact")] == 1


def test_recording_keys_of_the_table(table: EntityTable) -> None:
    assert table.recordings(["a", "zzz"]) == ["love story / taylor swift", ""]


TERMS = st.sampled_from(["love", "night", "blue", "river", "song", "rock", "dance"])


@given(st.lists(st.tuples(st.frozensets(TERMS), st.frozensets(TERMS), st.frozensets(TERMS)), min_size=1, max_size=8),
       st.frozensets(st.sampled_from(["love", "blue", "song", "zzz"])), st.data())
def test_match_fractions_are_the_shared_share_of_query_terms(
        fields: list[tuple[frozenset[str], ...]], query: frozenset[str], data: st.DataObject) -> None:
    """Per field: |query terms & entity terms| / |query terms| (unknown terms count in the
    denominator; rows of -1 are all zero), as the module docstring defines the *_match features."""
    n = len(fields)
    t = EntityTable(ids=tuple(f"e{i}" for i in range(n)), popularity=np.zeros(n),
                    terms={f: tuple(row[j] for row in fields) for j, f in enumerate(MATCH_FIELDS)},
                    title_keys=("",) * n, artist_keys=("",) * n, recording_keys=("",) * n)
    rows = np.array(data.draw(st.lists(st.integers(-1, n - 1), max_size=12)), dtype=np.int64)
    got = t.match_fractions(query, rows)
    for i, r in enumerate(rows.tolist()):
        want = [len(query & fields[r][j]) / len(query) if r >= 0 and query else 0.0 for j in range(3)]
        np.testing.assert_allclose(got[i], want, rtol=1e-6)


def test_match_fractions_refuse_a_row_out_of_range(table: EntityTable) -> None:
    """The counting kernel reads without bounds checks, so a row past the table is an error, not a read."""
    with pytest.raises(IndexError, match="out of range"):
        table.match_fractions(frozenset({"love"}), np.array([0, len(table.ids)], dtype=np.int64))
