"""The lexical index end to end against an independent brute-force BM25F / BM25 sum, computed
straight from the formula (core.lexical.index's docstring) with no index."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from core.analysis import Analyzer, AnalyzerConfig
from core.catalog import Entity
from core.errors import IndexFormatError
from core.indexing import build_index, open_strategy
from core.lexical.index import FieldSpec, LexicalConfig, lucene_length, parse_fields
from core.query import Filter, make_query
from core.storage import ComponentWriter
from core.types import Strategy
from tests.core.strategy_contract import StrategyContract

WEIGHTS = {"title": 2.0, "artist": 1.0}


def brute_force(entities: list[Entity], weights: dict[str, float], query: str, *, scoring: str = "bm25f",
                k1: float = 0.9, b: float = 0.4, lucene: bool = True, popularity_weight: float = 0.0
                ) -> dict[str, float]:
    """Score every entity from the formula: BM25F (fields as one weighted field) or the weighted
    sum of per-field BM25; + popularity_weight * ln(1 + popularity) on matched entities."""
    analyzer = Analyzer()
    q = Counter(analyzer(query))
    tfs = {name: [Counter(analyzer(e.fields.get(name, ""))) for e in entities] for name in weights}
    lengths = {name: [sum(c.values()) for c in tfs[name]] for name in weights}
    avgdl = {name: sum(ls) / max(1, sum(1 for x in ls if x)) for name, ls in lengths.items()}

    def inv_norm(name: str, i: int) -> float:
        length = lengths[name][i]
        dl = float(lucene_length(np.array([length]))[0]) if lucene else float(length)
        return 0.0 if length == 0 else 1.0 / (1 - b + b * dl / avgdl[name])

    def impact(tfw: float) -> float:
        return float(tfw > 0) if k1 == 0 else tfw / (k1 + tfw)

    def idf(n: int, df: int) -> float:
        return math.log(1 + (n - df + 0.5) / (df + 0.5))

    scores: dict[str, float] = {}
    everyone = range(len(entities))
    if scoring == "bm25f":
        n = sum(1 for i in everyone if any(lengths[name][i] for name in weights))
        for term, qtf in q.items():
            holders = [i for i in everyone if any(tfs[name][i][term] for name in weights)]
            for i in holders:
                tfw = sum(w * tfs[name][i][term] * inv_norm(name, i) for name, w in weights.items())
                eid = entities[i].id
                scores[eid] = scores.get(eid, 0.0) + qtf * idf(n, len(holders)) * impact(tfw)
    else:
        for name, w in weights.items():
            n = sum(1 for x in lengths[name] if x)
            for term, qtf in q.items():
                holders = [i for i in everyone if tfs[name][i][term]]
                for i in holders:
                    eid = entities[i].id
                    tfw = tfs[name][i][term] * inv_norm(name, i)
                    scores[eid] = scores.get(eid, 0.0) + qtf * w * idf(n, len(holders)) * impact(tfw)
    popularity = {e.id: e.popularity for e in entities}
    return {eid: s + popularity_weight * math.log1p(popularity[eid]) for eid, s in scores.items()}


def assert_same_ranking(got: list[tuple[str, float]], want: dict[str, float], k: int) -> None:
    """Top-k equal up to float noise; ties may be ordered differently only among equal scores."""
    expected = sorted(want.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    assert len(got) == len(expected)
    np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], rtol=1e-5)
    for (gid, gs), (_, es) in zip(got, expected, strict=True):
        assert want[gid] == pytest.approx(es, rel=1e-5), f"{gid} scored {gs}, rank expects {es}"


def ranked(strategy: Strategy, query: str, quota: int) -> list[tuple[str, float]]:
    hits = strategy.retrieve(make_query(query), quota, None)
    return [(strategy.collection.ids[o], float(s)) for o, s in zip(hits.ordinals, hits.scores, strict=True)]


def zipf_catalog(n: int = 2500, vocabulary: int = 300, seed: int = 11) -> list[Entity]:
    """Two fields of Zipf-distributed words (long posting lists, many blocks), some titles empty,
    popularity spread widely."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, vocabulary + 1) ** 1.07
    p /= p.sum()

    def text(lo: int, hi: int) -> str:
        return " ".join(f"w{int(w)}" for w in rng.choice(vocabulary, size=int(rng.integers(lo, hi)), p=p))

    return [Entity(id=f"z{i:05d}", fields={"title": text(0, 6), "text": text(1, 80)},
                   attributes={"genre": (("rock", "jazz")[int(rng.integers(0, 2))],)},
                   popularity=float(rng.integers(0, 1000))) for i in range(n)]


QUERIES = ["love", "night dance", "blue river fire heart", "summer summer rain", "artist 3 gold", "city dream 7"]
ZIPF_QUERIES = ["w0", "w0 w1", "w1 w2 w3", "w0 w5 w40", "w2 w2 w250", "w7 w12 w30 w60 w120", "w3 w299",
                "w0 w1 w2 w3 w4", "w90 w91", "w10 w11 w10"]


@pytest.fixture(scope="module")
def index_dirs(tmp_path_factory: pytest.TempPathFactory, catalog: list[Entity]) -> dict[tuple[str, str], Path]:
    """The synthetic catalog indexed with title^2,artist, per (scoring, length quantization)."""
    out = {}
    for scoring in ("bm25f", "sum"):
        for quantization in ("lucene", "exact"):
            root = tmp_path_factory.mktemp(f"lexical-{scoring}-{quantization}")
            build_index(catalog, root, ["lexical"], {"lexical": {
                "fields": "title^2,artist", "progress": False, "scoring": scoring,
                "length_quantization": quantization}})
            out[scoring, quantization] = root
    return out


@pytest.fixture(scope="module")
def zipf() -> list[Entity]:
    return zipf_catalog()


@pytest.fixture(scope="module")
def zipf_dirs(tmp_path_factory: pytest.TempPathFactory, zipf: list[Entity]) -> dict[str, Path]:
    out = {}
    for scoring in ("bm25f", "sum"):
        root = tmp_path_factory.mktemp(f"zipf-{scoring}")
        build_index(zipf, root, ["lexical"], {"lexical": {"fields": "title^3,text", "progress": False,
                                                          "scoring": scoring, "popularity_weight": "0.05"}})
        out[scoring] = root
    return out


@pytest.mark.parametrize("pruning", ["true", "false"])
@pytest.mark.parametrize("quantization", ["exact", "lucene"])
@pytest.mark.parametrize("scoring", ["bm25f", "sum"])
def test_retrieve_equals_brute_force(index_dirs: dict[tuple[str, str], Path], catalog: list[Entity], scoring: str,
                                     quantization: str, pruning: str) -> None:
    strategy = open_strategy(index_dirs[scoring, quantization], "lexical", {"pruning": pruning})
    for query in QUERIES:
        hits = strategy.retrieve(make_query(query), 25, None)
        want = brute_force(catalog, WEIGHTS, query, scoring=scoring, lucene=quantization == "lucene")
        if pruning == "false":
            assert hits.total_matches == len(want)
        else:  # a lower bound: the documents the pruned kernel scored
            assert len(hits) <= hits.total_matches <= len(want)
        assert_same_ranking(ranked(strategy, query, 25), want, 25)


@pytest.mark.parametrize("scoring", ["bm25f", "sum"])
def test_zipf_catalog_equals_brute_force(zipf_dirs: dict[str, Path], zipf: list[Entity], scoring: str) -> None:
    """Long posting lists (many blocks per term), empty titles and a popularity prior."""
    strategy = open_strategy(zipf_dirs[scoring], "lexical")
    for query in ZIPF_QUERIES:
        want = brute_force(zipf, {"title": 3.0, "text": 1.0}, query, scoring=scoring, popularity_weight=0.05)
        assert_same_ranking(ranked(strategy, query, 10), want, 10)


@pytest.mark.parametrize("genre", [None, "jazz"])
@pytest.mark.parametrize("quota", [1, 10, 100, 5000])
@pytest.mark.parametrize("scoring", ["bm25f", "sum"])
def test_pruned_and_exhaustive_return_the_same_top_k(zipf_dirs: dict[str, Path], scoring: str, quota: int,
                                                     genre: str | None) -> None:
    """Same documents, same order, bit-identical scores, with and without a filter; below the
    number of matches, pruning does skip documents (it scores fewer than match)."""
    pruned = open_strategy(zipf_dirs[scoring], "lexical")
    exhaustive = open_strategy(zipf_dirs[scoring], "lexical", {"pruning": "false"})
    filters = [Filter(field="genre", values=(genre,))] if genre else []
    allowed = pruned.collection.allowed(filters) if genre else None
    skipped = 0
    for query in ZIPF_QUERIES:
        a = pruned.retrieve(make_query(query, filters=filters), quota, allowed)
        b = exhaustive.retrieve(make_query(query, filters=filters), quota, allowed)
        np.testing.assert_array_equal(a.ordinals, b.ordinals)
        np.testing.assert_array_equal(a.scores, b.scores)
        assert len(a) <= a.total_matches <= b.total_matches
        skipped += a.total_matches < b.total_matches
    assert skipped > 0 or quota >= len(pruned.collection)


def test_field_weights_act_inside_the_saturation(tmp_path: Path) -> None:
    """BM25F: a term once in a field of weight 2 scores as twice in a field of weight 1 (same
    lengths), which the per-field sum does not give."""
    entities = [Entity(id="a", fields={"title": "x y", "text": "p q"}),
                Entity(id="b", fields={"title": "p q", "text": "x x"}),
                Entity(id="c", fields={"title": "p y", "text": "q y"})]
    build_index(entities, tmp_path, ["lexical"], {"lexical": {"fields": "title^2,text", "progress": False,
                                                              "length_quantization": "exact", "b": "0"}})
    hits = open_strategy(tmp_path, "lexical").retrieve(make_query("x"), 3, None)
    assert hits.ordinals.tolist() == [0, 1] and hits.scores[0] == hits.scores[1]


def test_unknown_terms_match_nothing(lexical_index_dir: Path) -> None:
    strategy = open_strategy(lexical_index_dir, "lexical")
    hits = strategy.retrieve(make_query("zzzz qqqq"), 10, None)
    assert len(hits) == 0 and hits.total_matches == 0


def test_popularity_prior_breaks_ties_towards_popular(tmp_path: Path) -> None:
    entities = [Entity(id=f"e{i}", fields={"title": "same words"}, popularity=p) for i, p in enumerate([5, 90, 40])]
    build_index(entities, tmp_path, ["lexical"], {"lexical": {"popularity_weight": "0.1", "progress": False}})
    hits = open_strategy(tmp_path, "lexical").retrieve(make_query("same"), 3, None)
    assert hits.ordinals.tolist() == [1, 2, 0]
    assert hits.scores[0] - hits.scores[2] == pytest.approx(0.1 * (math.log1p(90) - math.log1p(5)), rel=1e-5)


@pytest.mark.parametrize(("k1", "b"), [(1.2, 0.75), (0.0, 0.4), (0.9, 1.0)])
def test_run_time_options_override_k1_and_b(lexical_index_dir: Path, catalog: list[Entity], k1: float,
                                            b: float) -> None:
    strategy = open_strategy(lexical_index_dir, "lexical", {"k1": str(k1), "b": str(b)})
    want = brute_force(catalog, WEIGHTS, "blue river artist", k1=k1, b=b)
    assert_same_ranking(ranked(strategy, "blue river artist", 10), want, 10)
    assert strategy.describe()["k1"] == str(k1)


def test_empty_fields_stay_finite_at_b_one(tmp_path: Path) -> None:
    """inv_norm of an empty field is 1/0 at b = 1; the index must keep tf * inv_norm at 0 there."""
    entities = [Entity(id="a", fields={"title": "red"}), Entity(id="b", fields={"title": "red", "text": "red sky"}),
                Entity(id="c", fields={"text": "blue"})]
    build_index(entities, tmp_path, ["lexical"], {"lexical": {"fields": "title,text", "progress": False, "b": "1"}})
    strategy = open_strategy(tmp_path, "lexical")
    want = brute_force(entities, {"title": 1.0, "text": 1.0}, "red", b=1.0)
    assert_same_ranking(ranked(strategy, "red", 3), want, 3)


def test_describe_names_scoring_and_pruning(lexical_index_dir: Path) -> None:
    assert open_strategy(lexical_index_dir, "lexical").describe()["scoring"] == "bm25f"
    described = open_strategy(lexical_index_dir, "lexical", {"pruning": "off"}).describe()
    assert described["pruning"] == "false" and described["fields"] == "title^2,artist^1"


def test_lengths_are_stored_in_the_smallest_dtype(lexical_index_dir: Path) -> None:
    assert np.load(lexical_index_dir / "lexical" / "doc_lengths.npy").dtype == np.uint8


def test_old_roaring_index_is_refused_with_a_rebuild_hint(tmp_path: Path, catalog: list[Entity]) -> None:
    build_index(catalog, tmp_path, ["lexical"], {"lexical": {"progress": False}})
    old_params = {k: v for k, v in LexicalConfig().to_params().items() if k not in ("scoring", "pruning")}
    with ComponentWriter(tmp_path, "lexical", old_params) as w:
        w.write_json("terms.json", {"title": ["love"]})
        w.write_bytes("postings.roaring", b"\x00" * 8)
        w.write_array("postings_offsets.npy", np.array([0, 8], dtype=np.int64))
        w.write_array("tfs.npy", np.ones(1, dtype=np.uint32))
    with pytest.raises(IndexFormatError, match=r"older ltrr.*rebuild it with `ltrr index`"):
        open_strategy(tmp_path, "lexical")


@pytest.mark.parametrize(("spec", "parsed"), [
    ("title^2,artist^1.5,album", [("title", 2.0), ("artist", 1.5), ("album", 1.0)]),
    (" title , text^0.5 ", [("title", 1.0), ("text", 0.5)]),
    ("", []),
])
def test_parse_fields(spec: str, parsed: list[tuple[str, float]]) -> None:
    assert parse_fields(spec) == parsed


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"k1": -1.0}, "k1"), ({"b": 1.5}, "`b`"), ({"popularity_weight": float("nan")}, "popularity_weight"),
    ({"length_quantization": "fuzzy"}, "length_quantization"), ({"scoring": "max"}, "`scoring` must be one of"),
    ({"pruning": "yes"}, "`pruning` must be a bool"),
    ({"fields": (FieldSpec(name="title"), FieldSpec(name="text", analyzer=AnalyzerConfig(stemmer="none")))},
     r"'bm25f'.*one analyzer.*title: .*text: "),
])
def test_bad_config_names_the_field(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LexicalConfig(**kwargs)  # type: ignore[arg-type]


def test_sum_allows_one_analyzer_per_field() -> None:
    fields = (FieldSpec(name="title"), FieldSpec(name="text", analyzer=AnalyzerConfig(stemmer="none")))
    assert LexicalConfig(fields=fields, scoring="sum").groups() == ((0,), (1,))


def test_options_and_params_round_trip() -> None:
    config = LexicalConfig.from_options({"fields": "title^2,text", "scoring": "sum", "pruning": "false", "k1": "1.1"})
    assert (config.scoring, config.pruning, config.k1) == ("sum", False, 1.1)
    assert LexicalConfig.from_params(config.to_params()) == config
    default = LexicalConfig.from_options({}, ["text", "title"])
    assert (default.scoring, default.pruning, default.groups()) == ("bm25f", True, ((0, 1),))


def test_bad_field_weight_is_refused() -> None:
    with pytest.raises(ValueError, match="field weight"):
        parse_fields("title^heavy")


class TestLexicalContract(StrategyContract):
    strategy_name = "lexical"
    matching_query = "love night"

    @pytest.fixture(scope="class")
    @classmethod
    def index_dir(cls, lexical_index_dir: Path) -> Path:
        return lexical_index_dir


class TestLexicalSumExhaustiveContract(StrategyContract):
    strategy_name = "lexical"
    matching_query = "love night"

    @pytest.fixture(scope="class")
    @classmethod
    def index_dir(cls, tmp_path_factory: pytest.TempPathFactory, catalog: list[Entity]) -> Path:
        root = tmp_path_factory.mktemp("lexical-sum-exhaustive")
        build_index(catalog, root, ["lexical"], {"lexical": {"fields": "title^2,artist", "progress": False,
                                                             "scoring": "sum", "pruning": "false"}})
        return root


@pytest.mark.parametrize("pruning", ["true", "false"])
def test_filters_restrict_to_the_attribute(lexical_index_dir: Path, catalog: list[Entity], pruning: str) -> None:
    strategy = open_strategy(lexical_index_dir, "lexical", {"pruning": pruning})
    query = make_query("love", filters=[Filter(field="genre", values=("Rock",))])
    hits = strategy.retrieve(query, 100, strategy.collection.allowed(query.filters))
    rock = {e.id for e in catalog if e.attributes["genre"] == ("rock",)}
    assert len(hits) > 0
    assert {strategy.collection.ids[o] for o in hits.ordinals} <= rock
