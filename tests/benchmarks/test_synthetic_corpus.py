"""The synthetic corpus of benchmarks.lexical_scale (benchmarks.synthetic_corpus): deterministic,
chunk-independent, of the stated shape (words both engines index unchanged, Zipf frequencies,
log-normal lengths, queries in the rank band), and read back faithfully by FileCorpus."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from benchmarks.synthetic_corpus import (
    CHUNK_DOCS,
    FIELD,
    LETTERS,
    MAX_WORD_LEN,
    MIN_WORD_LEN,
    AliasTable,
    CorpusSpec,
    FileCorpus,
    make_queries,
    vocabulary,
    write_corpus,
    zipf_pmf,
)
from core.analysis import Analyzer, AnalyzerConfig

SMALL = CorpusSpec(n_docs=CHUNK_DOCS + 2_345, vocab_size=5_000, query_ranks=(10, 1_000), n_queries=200)


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    write_corpus(SMALL, path, progress=False)
    return path


def test_same_spec_same_bytes(small_corpus: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.txt"
    write_corpus(SMALL, again, progress=False)
    assert again.read_bytes() == small_corpus.read_bytes()
    assert vocabulary(SMALL) == vocabulary(SMALL)
    assert make_queries(SMALL, vocabulary(SMALL)) == make_queries(SMALL, vocabulary(SMALL))


def test_a_smaller_corpus_is_a_prefix_of_a_larger_one(small_corpus: Path, tmp_path: Path) -> None:
    """Document i depends on the seed and i only, across the chunk boundary too."""
    smaller = tmp_path / "smaller.txt"
    write_corpus(CorpusSpec(**{**SMALL.__dict__, "n_docs": CHUNK_DOCS + 7}), smaller, progress=False)
    lines = small_corpus.read_text().splitlines()
    assert smaller.read_text().splitlines() == lines[:CHUNK_DOCS + 7]


def test_another_seed_another_corpus(small_corpus: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.txt"
    write_corpus(CorpusSpec(**{**SMALL.__dict__, "seed": SMALL.seed + 1}), other, progress=False)
    assert other.read_text().splitlines()[:100] != small_corpus.read_text().splitlines()[:100]


def test_vocabulary_words_are_distinct_consonant_strings() -> None:
    words = vocabulary(SMALL)
    assert len(words) == SMALL.vocab_size == len(set(words))
    assert all(re.fullmatch(f"[{LETTERS.decode()}]{{{MIN_WORD_LEN},{MAX_WORD_LEN}}}", w) for w in words)
    assert not set("aeiousy") & set("".join(words))


def test_ltrr_analyzer_keeps_every_word() -> None:
    words = vocabulary(SMALL)
    assert Analyzer(AnalyzerConfig())(" ".join(words)) == words


def test_tantivy_en_stem_keeps_every_word() -> None:
    tantivy = pytest.importorskip("tantivy")
    words = vocabulary(SMALL)
    builder = tantivy.SchemaBuilder()
    builder.add_text_field(FIELD, tokenizer_name="en_stem", index_option="freq")
    index = tantivy.Index(builder.build())
    writer = index.writer(heap_size=50_000_000, num_threads=1)
    writer.add_document(tantivy.Document(**{FIELD: " ".join(words)}))
    writer.commit()
    writer.wait_merging_threads()
    index.reload()
    assert sorted(t for t, _ in index.searcher().terms_with_prefix(FIELD, "")) == sorted(words)


def test_alias_draws_follow_the_zipf_law() -> None:
    spec = CorpusSpec(vocab_size=2_000, query_ranks=(1, 10))
    n = 2_000_000
    counts = np.bincount(AliasTable.build(zipf_pmf(spec)).sample(np.random.default_rng(0), n), minlength=2_000)
    ranks = np.arange(1, 2_001, dtype=np.float64)
    expected = n * ranks ** -1.07 / (ranks ** -1.07).sum()
    assert np.all(np.abs(counts - expected) <= 5 * np.sqrt(expected) + 1)


def test_corpus_shape(small_corpus: Path) -> None:
    words = vocabulary(SMALL)
    rank = {w: r for r, w in enumerate(words, start=1)}
    docs = [line.split(" ") for line in small_corpus.read_text().splitlines()]
    assert len(docs) == SMALL.n_docs
    lengths = np.array([len(d) for d in docs])
    assert lengths.min() >= 1
    # The sample median of 12,345 log-normal draws lies within 2% of the true median.
    assert abs(np.median(lengths) - SMALL.median_length) <= 1
    assert np.log(lengths).std() == pytest.approx(SMALL.length_sigma, abs=0.02)
    ranks = np.array([rank[w] for d in docs[:200] for w in d])
    assert np.mean(ranks == 1) == pytest.approx(zipf_pmf(SMALL)[0], abs=0.02)


def test_queries_are_two_to_five_distinct_words_of_the_band() -> None:
    words = vocabulary(SMALL)
    rank = {w: r for r, w in enumerate(words, start=1)}
    queries = [q.split(" ") for q in make_queries(SMALL, words)]
    assert len(queries) == SMALL.n_queries
    assert {len(q) for q in queries} == {2, 3, 4, 5}
    assert all(len(set(q)) == len(q) for q in queries)
    ranks = np.array([rank[w] for q in queries for w in q])
    assert ranks.min() >= 10 and ranks.max() <= 1_000
    # log-uniform: about half of the ranks lie below the band's geometric middle (100).
    assert np.mean(ranks < math.sqrt(10 * 1_001)) == pytest.approx(0.5, abs=0.06)


def test_file_corpus_reads_back_every_document(small_corpus: Path) -> None:
    corpus = FileCorpus(small_corpus)
    lines = small_corpus.read_text().splitlines()
    assert len(corpus) == len(lines)
    streamed = list(corpus)
    assert [e.fields[FIELD] for e in streamed] == lines
    assert [e.id for e in streamed[:3]] == ["d0", "d1", "d2"]
    for i in (0, CHUNK_DOCS - 1, CHUNK_DOCS, len(lines) - 1):
        assert corpus[i] == streamed[i]
    assert corpus[-1] == streamed[-1]
    assert corpus[5:8] == streamed[5:8]
    with pytest.raises(IndexError, match="out of range"):
        corpus[len(lines)]


@pytest.mark.parametrize(("changes", "message"), [
    ({"n_docs": 0}, "`n_docs` must be >= 1, but got 0"),
    ({"vocab_size": 0, "query_ranks": (1, 1), "query_words": (1, 1)}, "`vocab_size` must be >= 1"),
    ({"zipf_s": 0.0}, "`zipf_s` must be finite and > 0"),
    ({"median_length": float("nan")}, "`median_length` must be finite and >= 1"),
    ({"length_sigma": -0.1}, "`length_sigma` must be finite and >= 0"),
    ({"query_ranks": (10, 600_000)}, "`query_ranks` must satisfy"),
    ({"query_ranks": (10, 12)}, "`query_words` must satisfy"),
])
def test_spec_rejects_bad_values(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        CorpusSpec(**changes)  # type: ignore[arg-type]
