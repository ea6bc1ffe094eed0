"""The routing benchmark (benchmarks.routing*): pooling, the Zipf stream, query truncation, the
hindsight split, ir-measures judging, the budget sweep's held-out guard, and a tiny end-to-end run
on synthetic BEIR-layout collections with the hashing encoder (no /work/shared, no MiniLM)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.common import truncate_queries, truncate_query
from benchmarks.routing_data import PooledData, pool_collections, routing_searches, zipf_weights
from benchmarks.routing_run import best_fixed_split, judge_rankings, per_query_routing, routing_levels

WORDS = ("protein", "cell", "library", "index", "retrieval", "ocean", "river", "engine", "matrix", "graph",
         "memory", "signal", "vaccine", "market", "climate", "orbit")
LONG_QUERY = "library " * 200  # 1,600 characters: over the shards' 1,024


def write_beir(root: Path, seed: int, n_docs: int, n_queries: int) -> None:
    """A BEIR-layout folder: documents of random words; query i asks for 3 words of document i and
    judges it (grade 2) and document i + 1 (grade 1); plus an unjudged query, a query judged only
    0, and a long judged query."""
    rng = np.random.default_rng(seed)
    (root / "qrels").mkdir(parents=True)
    docs = [" ".join(rng.choice(WORDS, size=12)) for _ in range(n_docs)]
    with (root / "corpus.jsonl").open("w") as f:
        for i, text in enumerate(docs):
            f.write(json.dumps({"_id": f"d{i}", "title": f"title {i}", "text": text}) + "\n")
    queries = {f"q{i}": " ".join(docs[i].split()[:3]) for i in range(n_queries)}
    queries |= {"unjudged": "ocean river", "zero": "graph matrix", "long": LONG_QUERY}
    with (root / "queries.jsonl").open("w") as f:
        for qid, text in queries.items():
            f.write(json.dumps({"_id": qid, "text": text}) + "\n")
    rows = [(f"q{i}", f"d{i}", 2) for i in range(n_queries)] + [(f"q{i}", f"d{i + 1}", 1) for i in range(n_queries)]
    rows += [("zero", "d0", 0), ("long", "d3", 1)]
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" +
                                             "".join(f"{q}\t{d}\t{g}\n" for q, d, g in rows))


@pytest.fixture(scope="session")
def collections(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    base = tmp_path_factory.mktemp("beir")
    roots = [base / "alpha", base / "beta"]
    write_beir(roots[0], seed=1, n_docs=40, n_queries=8)
    write_beir(roots[1], seed=2, n_docs=30, n_queries=6)
    return roots


def test_pool_prefixes_ids_and_keeps_judged_queries(collections: list[Path]) -> None:
    data = pool_collections(collections)
    assert data.collections == ("alpha", "beta")
    assert len(data.entities) == 70 and len({e.id for e in data.entities}) == 70  # d0 is in both
    first = data.entities[0]
    assert first.id == "alpha/d0" and first.attributes == {"collection": "alpha"}
    assert first.fields["contents"].startswith("title 0 ") and first.fields["title"] == "title 0"
    assert data.entities[40].id == "beta/d0" and data.entities[40].attributes["collection"] == "beta"
    # judged queries only; "zero" has no relevant document, so nothing to want
    assert sorted(q for q in data.queries if q.startswith("beta/")) == sorted(
        [f"beta/q{i}" for i in range(6)] + ["beta/long"])
    assert data.qrels["alpha/q2"] == {"alpha/d2": 2, "alpha/d3": 1}
    assert data.query_collection["beta/q1"] == 1 and data.query_collection["alpha/q1"] == 0
    assert data.truncated == {"alpha": 1, "beta": 1}
    assert len(data.queries["alpha/long"]) <= 1024


def test_pool_refuses_two_folders_of_one_name(collections: list[Path]) -> None:
    with pytest.raises(ValueError, match="distinct names"):
        pool_collections([collections[0], collections[0]])


@pytest.mark.parametrize(("text", "limit", "want"), [
    ("short query", 1024, "short query"),
    ("  padded  ", 3, "padded"[:3]),
    ("alpha beta gamma", 12, "alpha beta"),  # cut inside "gamma": back to the last space
    ("alpha beta gamma", 10, "alpha beta"),  # the limit falls on a space
    ("alphabetagamma", 5, "alpha"),  # no space within the limit: cut at the limit
    ("alpha\nbeta gamma", 8, "alpha"),
])
def test_truncate_query(text: str, limit: int, want: str) -> None:
    assert truncate_query(text, limit) == want


def test_truncate_queries_counts_the_cut_ones() -> None:
    """Regression: `python -m benchmarks.semantic --data .../cisi` died with "query.text: must be at
    most 1024 characters" on CISI's long queries; a benchmark cuts them and says how many."""
    from core.query import make_query

    queries, cut = truncate_queries({"a": LONG_QUERY, "b": "short"})
    assert cut == 1 and queries["b"] == "short"
    assert len(queries["a"]) <= 1024 and LONG_QUERY.startswith(queries["a"])
    make_query(queries["a"])  # the shards' validation accepts it
    with pytest.raises(ValueError, match="`limit` must be >= 1"):
        truncate_query("x", 0)


def test_semantic_benchmark_survives_a_long_query(collections: list[Path], tmp_path: Path) -> None:
    """Regression: benchmarks.semantic crashed on a query over 1,024 characters (CISI)."""
    from benchmarks import semantic

    data, cut = semantic.load_queries(collections[0], 1024)
    assert cut == 1
    lexical, sem = semantic.build(data, tmp_path / "index", tmp_path / "cache", "hashing")
    qvecs = np.vstack([sem.encoder.encode([t])[0] for t in data.queries.values()])
    figures = semantic.relevance(lexical, sem, data, qvecs)
    assert set(figures) == {"semantic", "lexical", "rrf"} and figures["lexical"]["ndcg@10"] > 0


def test_zipf_weights() -> None:
    harmonic = 1 + 1 / 2 + 1 / 3
    np.testing.assert_allclose(zipf_weights(3, 1.0), [1 / harmonic, 0.5 / harmonic, (1 / 3) / harmonic])
    np.testing.assert_allclose(zipf_weights(4, 0.0), [0.25] * 4)
    for n, s, match in ((0, 1.0, "`n`"), (3, -1.0, "`exponent`"), (3, float("nan"), "`exponent`")):
        with pytest.raises(ValueError, match=match):
            zipf_weights(n, s)


def toy_pool() -> PooledData:
    """Five queries over ten documents: q0 judges d0 (grade 2) and d1 (grade 1), the rest one each."""
    qrels = {"c/q0": {"c/d0": 2, "c/d1": 1}} | {f"c/q{i}": {f"c/d{i + 1}": 1} for i in range(1, 5)}
    return PooledData(collections=("c",), entities=[], queries={q: f"text {q}" for q in qrels}, qrels=qrels,
                      query_collection=dict.fromkeys(qrels, 0), truncated={"c": 0})


def test_stream_follows_zipf_over_queries_and_grades_over_targets() -> None:
    data = toy_pool()
    ordinal = {f"c/d{i}": i for i in range(10)}
    searches, ids = routing_searches(data, ordinal, 40_000, seed=3, zipf_exponent=1.0)
    counts = np.array(sorted((ids.count(q) for q in data.queries), reverse=True)) / len(ids)
    np.testing.assert_allclose(counts, zipf_weights(5, 1.0), atol=0.01)  # some permutation of ranks
    q0 = [s for s, q in zip(searches, ids, strict=True) if q == "c/q0"]
    assert abs(np.mean([s.target == 0 for s in q0]) - 2 / 3) < 0.02  # grade 2 against grade 1
    assert all(s.target in s.relevant and s.intent == 0 and s.text == data.queries[q]
               for s, q in zip(searches, ids, strict=True))
    again, again_ids = routing_searches(data, ordinal, 500, seed=3)
    assert again_ids == ids[:500] and [s.target for s in again] == [s.target for s in searches[:500]]
    other = routing_searches(data, ordinal, 500, seed=4)[1]
    assert other != ids[:500]


def test_best_fixed_split_from_level_tables() -> None:
    # Levels (0, 2, 4, 8); strategies lexical, semantic, attribute, memory. Search 0's target is
    # found by semantic from level 4, search 1's by lexical from level 2, search 2's by nobody:
    # lexical 2 + semantic 4 finds two of three, and the cheapest such split asks 2 + 4 = 6.
    hits = np.zeros((3, 4, 4), dtype=bool)
    hits[0, 1, 2:] = True
    hits[1, 0, 1:] = True
    quotas, recall = best_fixed_split(hits, 8)
    assert quotas == (2, 4, 0, 0) and recall == pytest.approx(2 / 3)
    assert routing_levels(8) == (0, 2, 4, 8)
    with pytest.raises(ValueError, match="multiple of 4"):
        routing_levels(10)


def test_per_query_routing_chooses_each_search_by_its_other_searches() -> None:
    # Levels (0, 2, 4, 8). Query "a": three searches whose targets only semantic 8 finds. Query
    # "b": three searches lexical 2 finds, and the third also semantic 8 (that search alone must
    # not choose its allocation). Queries "c" and "d", searched once, get the best split of the
    # other searches, semantic 8 (4 of 7 for each), which misses c's target (memory at 8 alone)
    # and finds d's.
    hits = np.zeros((8, 4, 4), dtype=bool)
    hits[0:3, 1, 3] = True  # a
    hits[3:6, 0, 1:] = True  # b
    hits[5, 1, 3] = True
    hits[6, 3, 3] = True  # c
    hits[7, 1, 3] = True  # d
    queries = ["a", "a", "a", "b", "b", "b", "c", "d"]
    assert best_fixed_split(hits, 8) == ((0, 8, 0, 0), pytest.approx(5 / 8))
    assert per_query_routing(hits, queries, 8) == pytest.approx(7 / 8)  # all but c
    # a's second search has nothing now (the others still choose semantic 8 for it); for d,
    # semantic 8 and lexical 2 each find 3 of the others, and the cheaper one misses
    hits[1, 1, 3] = False
    assert per_query_routing(hits, queries, 8) == pytest.approx(5 / 8)
    # a's first two: the third's others found nothing, so it takes the best split of all other
    # searches (lexical 2, b's three), and so do c and d
    hits[0, 1, 3] = False
    assert per_query_routing(hits, queries, 8) == pytest.approx(3 / 8)
    with pytest.raises(ValueError, match="one id per search"):
        per_query_routing(hits, queries[:3], 8)


def test_judge_rankings_against_hand_computed_measures() -> None:
    qrels = {"a": {"x": 1}, "b": {"x": 1, "y": 1}}
    ndcg, recall = judge_rankings([("a", ["x", "z"]), ("a", ["z", "x"]), ("b", ["z", "x"]), ("a", ["x", "z"])], qrels)
    np.testing.assert_allclose(ndcg, [1.0, 1 / np.log2(3), (1 / np.log2(3)) / (1 + 1 / np.log2(3)), 1.0])
    np.testing.assert_allclose(recall, [1.0, 1.0, 0.5, 1.0])


def test_sweep_refuses_held_out_collections() -> None:
    from benchmarks.routing_budget import budget_sweep

    data = PooledData(collections=("med", "cranfield"), entities=[], queries={}, qrels={}, query_collection={},
                      truncated={})
    with pytest.raises(ValueError, match="held-out"):
        budget_sweep(data, Path("unused"), (8,))


def test_end_to_end_json_layout(collections: list[Path], tmp_path: Path) -> None:
    from benchmarks.routing import main
    from benchmarks.routing_report import MEASURES

    out, path = tmp_path / "out", tmp_path / "routing.json"
    main(["--data", *map(str, collections), "--searches", "60", "--seeds", "2", "--budget", "8", "--jobs", "1",
          "--encoder", "hashing", "--out", str(out), "--json", str(path)])
    result = json.loads(path.read_text())
    assert result["default_policy"] == "thompson"
    names = {"lexical-only", "semantic-only", "attribute-only", "memory-only", "static-equal", "hybrid-rrf",
             "best-fixed", "thompson", "oracle"}
    assert names <= set(result["plans"])
    for runs in result["plans"].values():
        assert len(runs) == 2
        for record in runs:
            assert set(MEASURES) <= set(record) and set(record["by_collection"]) == {"alpha", "beta"}
            assert 0 <= record["target_recall"] <= 1 and record["fetched"] <= 8
    plans = result["plans"]
    for seed in range(2):  # the oracle may take lexical at the whole budget on every search
        assert plans["oracle"][seed]["target_recall"] >= plans["lexical-only"][seed]["target_recall"]
    assert result["settings"]["truncated_queries"] == {"alpha": 1, "beta": 1}
    assert len(result["gap_closed"]) == 2 and len(result["best_fixed"]) == 2
    assert len(result["per_query_routing"]) == 2 and all(0 <= r <= 1 for r in result["per_query_routing"])
    assert (out / "routing.png").stat().st_size > 0 and (out / "results.md").exists()
