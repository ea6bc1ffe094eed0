"""The lexical index end to end against an independent brute-force BM25 (Lucene variant)."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from core.analysis import Analyzer
from core.catalog import Entity
from core.indexing import build_index, open_strategy
from core.lexical.index import LexicalConfig, lucene_length, parse_fields
from core.query import Filter, make_query
from tests.core.strategy_contract import StrategyContract


def brute_force_bm25(entities: list[Entity], fields: dict[str, float], query: str, *, k1: float = 0.9,
                     b: float = 0.4, lucene: bool = False) -> dict[str, float]:
    """Score every entity straight from the formula, with no index."""
    analyzer = Analyzer()
    q = Counter(analyzer(query))
    scores: dict[str, float] = {}
    for name, weight in fields.items():
        docs = [analyzer(e.fields.get(name, "")) for e in entities]
        with_field = [d for d in docs if d]
        avgdl = sum(len(d) for d in with_field) / max(len(with_field), 1)
        for term, qtf in q.items():
            df = sum(1 for d in docs if term in d)
            if df == 0:
                continue
            idf = math.log(1 + (len(with_field) - df + 0.5) / (df + 0.5))
            for e, d in zip(entities, docs, strict=True):
                tf = d.count(term)
                if tf:
                    dl = float(lucene_length(np.array([len(d)]))[0]) if lucene else len(d)
                    norm = k1 * (1 - b + b * dl / avgdl)
                    scores[e.id] = scores.get(e.id, 0.0) + qtf * weight * idf * tf / (tf + norm)
    return scores


def assert_same_ranking(got: list[tuple[str, float]], want: dict[str, float], k: int) -> None:
    """Top-k equal up to float noise; ties may be ordered differently only among equal scores."""
    expected = sorted(want.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
    assert len(got) == len(expected)
    np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], rtol=1e-5)
    for (gid, gs), (_, es) in zip(got, expected, strict=True):
        assert want[gid] == pytest.approx(es, rel=1e-5), f"{gid} scored {gs}, rank expects {es}"


QUERIES = ["love", "night dance", "blue river fire heart", "summer summer rain", "artist 3 gold", "city dream 7"]


@pytest.mark.parametrize("query", QUERIES)
@pytest.mark.parametrize("quantization", ["exact", "lucene"])
def test_retrieve_equals_brute_force(tmp_path: Path, catalog: list[Entity], query: str, quantization: str) -> None:
    build_index(catalog, tmp_path, ["lexical"], {"lexical": {"fields": "title^2,artist", "progress": False,
                                                             "length_quantization": quantization}})
    strategy = open_strategy(tmp_path, "lexical")
    hits = strategy.retrieve(make_query(query), 25, None)
    got = [(strategy.collection.ids[o], float(s)) for o, s in zip(hits.ordinals, hits.scores, strict=True)]
    want = brute_force_bm25(catalog, {"title": 2.0, "artist": 1.0}, query, lucene=quantization == "lucene")
    assert hits.total_matches == len(want)
    assert_same_ranking(got, want, 25)


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


def test_run_time_options_override_k1_and_b(lexical_index_dir: Path, catalog: list[Entity]) -> None:
    strategy = open_strategy(lexical_index_dir, "lexical", {"k1": "1.2", "b": "0.75"})
    hits = strategy.retrieve(make_query("blue river"), 10, None)
    got = [(strategy.collection.ids[o], float(s)) for o, s in zip(hits.ordinals, hits.scores, strict=True)]
    want = brute_force_bm25(catalog, {"title": 2.0, "artist": 1.0}, "blue river", k1=1.2, b=0.75, lucene=True)
    assert_same_ranking(got, want, 10)


@pytest.mark.parametrize(("spec", "parsed"), [
    ("title^2,artist^1.5,album", [("title", 2.0), ("artist", 1.5), ("album", 1.0)]),
    (" title , text^0.5 ", [("title", 1.0), ("text", 0.5)]),
    ("", []),
])
def test_parse_fields(spec: str, parsed: list[tuple[str, float]]) -> None:
    assert parse_fields(spec) == parsed


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"k1": -1.0}, "k1"), ({"b": 1.5}, "`b`"), ({"popularity_weight": float("nan")}, "popularity_weight"),
    ({"length_quantization": "fuzzy"}, "length_quantization"),
])
def test_bad_config_names_the_field(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LexicalConfig(**kwargs)  # type: ignore[arg-type]


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


def test_filters_restrict_to_the_attribute(lexical_index_dir: Path, catalog: list[Entity]) -> None:
    strategy = open_strategy(lexical_index_dir, "lexical")
    query = make_query("love", filters=[Filter(field="genre", values=("Rock",))])
    hits = strategy.retrieve(query, 100, strategy.collection.allowed(query.filters))
    rock = {e.id for e in catalog if e.attributes["genre"] == ("rock",)}
    assert len(hits) > 0
    assert {strategy.collection.ids[o] for o in hits.ordinals} <= rock
