"""Posting construction against a brute force: a Counter over Analyzer output per field and document."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.analysis import Analyzer, AnalyzerConfig
from core.catalog import Entity
from core.lexical import build_kernels, jit
from core.lexical.build import Postings, analyse, text_chunks
from core.lexical.index import FieldSpec

WORDS = ("love night dance blue river fire heart summer rain gold city dream the of and is running runs ran "
         "café naïve Straße Beyoncé's 1,000 3.5 don't U.S.A ΑΘΗΝΑ東京 \ufb01re \uff26\uff49\uff52\uff45").split()


def make_catalog(seed: int, n: int, names: Sequence[str]) -> list[Entity]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        fields = {}
        for name in names:
            if rng.random() < 0.2:
                continue  # the entity lacks this field
            k = int(rng.integers(0, 12))  # 0: an empty field
            fields[name] = " ".join(rng.choice(WORDS, size=k)) + ("!" if rng.random() < 0.3 else "")
        out.append(Entity(id=f"e{i}", fields=fields))
    return out


def brute_force(entities: Sequence[Entity], fields: Sequence[FieldSpec], groups: Sequence[Sequence[int]]
                ) -> tuple[list[list[str]], list[dict[tuple[str, int], list[int]]], np.ndarray]:
    """Per group: the sorted vocabulary and {(term, doc): tf per field of the whole index}; lengths (F, N)."""
    counts = [[Counter(Analyzer(spec.analyzer)(e.fields.get(spec.name, ""))) for e in entities] for spec in fields]
    lengths = np.array([[sum(c.values()) for c in per_doc] for per_doc in counts], dtype=np.uint32)
    lengths = lengths.reshape(len(fields), len(entities))
    vocabs, tables = [], []
    for group in groups:
        table: dict[tuple[str, int], list[int]] = {}
        for f in group:
            for d, c in enumerate(counts[f]):
                for term, tf in c.items():
                    table.setdefault((term, d), [0] * len(fields))[f] = tf
        vocabs.append(sorted({term for term, _ in table}))
        tables.append(table)
    return vocabs, tables, lengths


def assert_matches_brute_force(got: Postings, entities: Sequence[Entity], fields: Sequence[FieldSpec],
                               groups: Sequence[Sequence[int]]) -> None:
    vocabs, tables, lengths = brute_force(entities, fields, groups)
    assert got.terms == vocabs
    np.testing.assert_array_equal(got.lengths, lengths)
    assert got.lengths.dtype == np.uint32 and got.doc_ids.dtype == np.uint32 and got.tfs.dtype == np.uint32
    assert got.offsets.dtype == np.int64 and got.offsets[0] == 0 and got.offsets[-1] == got.doc_ids.size
    assert got.tfs.shape == (len(fields), got.doc_ids.size)
    term_ids = [(g, term) for g, v in enumerate(vocabs) for term in v]
    assert got.offsets.size == len(term_ids) + 1
    for t, (g, term) in enumerate(term_ids):
        lo, hi = got.offsets[t], got.offsets[t + 1]
        want_docs = sorted(d for tm, d in tables[g] if tm == term)
        assert got.doc_ids[lo:hi].tolist() == want_docs, term
        for j, d in enumerate(want_docs):
            assert got.tfs[:, lo + j].tolist() == tables[g][(term, d)], (term, d)


FIELD_SETS = [["title"], ["title", "artist"], ["title", "artist", "album"]]


@pytest.mark.parametrize("names", FIELD_SETS)
@pytest.mark.parametrize("grouping", ["one_each", "all_in_one"])
@pytest.mark.parametrize("workers", [1, 2])
def test_postings_equal_brute_force(names: list[str], grouping: str, workers: int) -> None:
    entities = make_catalog(7, 60, names)
    fields = [FieldSpec(name=n) for n in names]
    groups = [[f] for f in range(len(fields))] if grouping == "one_each" else [list(range(len(fields)))]
    got = analyse(entities, fields, groups, progress=False, workers=workers)
    assert_matches_brute_force(got, entities, fields, groups)


def test_groups_with_their_own_analyzers() -> None:
    """Two groups analysed differently: unstemmed stop words in one, Porter without them in the other."""
    names = ["title", "artist", "album"]
    entities = make_catalog(3, 80, names)
    raw = AnalyzerConfig(stemmer="none", stopwords="none", fold_accents=False)
    fields = [FieldSpec(name="title"), FieldSpec(name="artist", analyzer=raw), FieldSpec(name="album")]
    groups = [[0, 2], [1]]
    got = analyse(entities, fields, groups, progress=False)
    assert_matches_brute_force(got, entities, fields, groups)
    assert "the" in got.terms[1] and "the" not in got.terms[0]


def test_repeated_terms_count() -> None:
    entities = [Entity(id="a", fields={"t": "rain rain Rain rains the", "u": "rain"}), Entity(id="b", fields={}),
                Entity(id="c", fields={"u": "fire rain"})]
    got = analyse(entities, [FieldSpec(name="t"), FieldSpec(name="u")], [[0, 1]], progress=False)
    assert got.terms == [["fire", "rain"]]
    assert got.offsets.tolist() == [0, 1, 3]
    assert got.doc_ids.tolist() == [2, 0, 2]
    assert got.tfs.tolist() == [[0, 4, 0], [1, 1, 1]]
    assert got.lengths.tolist() == [[4, 0, 0], [1, 0, 2]]


def test_no_terms_at_all() -> None:
    entities = [Entity(id="a", fields={"t": ""}), Entity(id="b", fields={"t": "the of !!"})]
    got = analyse(entities, [FieldSpec(name="t")], [[0]], progress=False)
    assert got.terms == [[]] and got.offsets.tolist() == [0] and got.doc_ids.size == 0
    assert got.tfs.shape == (1, 0) and got.lengths.tolist() == [[0, 0]]


def test_no_entities() -> None:
    got = analyse([], [FieldSpec(name="t")], [[0]], progress=False)
    assert got.terms == [[]] and got.lengths.shape == (1, 0) and got.doc_ids.size == 0


@pytest.mark.parametrize(("groups", "workers", "match"), [
    ([[0]], 1, "`groups` must partition"),
    ([[0, 1], [1]], 1, "`groups` must partition"),
    ([[0], [1], []], 1, "`groups` must partition"),
    ([[0, 2]], 1, "`groups` must partition"),
    ([[0, 1]], 0, "`workers` must be >= 1"),
])
def test_invalid_arguments(groups: list[list[int]], workers: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        analyse([], [FieldSpec(name="a"), FieldSpec(name="b")], groups, progress=False, workers=workers)


# -- the kernels against their references ---------------------------------------------------------

# Characters where the tokenizer has a rule: joiners, possessives, digits (also non-ASCII ones:
# Arabic-Indic decimals are \d, superscripts \w but not \d), combining marks, ligatures,
# full-width forms, case pairs that casefold changes in length, a lone surrogate.
TRICKY = ("abcsS_0123 \n\t.,:;'\u2019-!éÉ\u0301ßẞ\ufb01\uff26\uff49"
          "\u03a3\u03c3\u03c2\u0663\u00b2\u00bd東京\u0130İ\ud800")
TEXTS = st.text(alphabet=st.sampled_from(TRICKY), max_size=40) | st.text(max_size=25)


def fresh_state() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The smallest interning state, so the kernel must grow every array."""
    return np.zeros((2, 4), dtype=np.uint64), np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.uint32)


@settings(max_examples=150, deadline=None)
@given(chunks=st.lists(st.lists(TEXTS, max_size=6), min_size=1, max_size=3), max_chars=st.sampled_from([1, 3, 255]),
       narrow=st.booleans())
def test_tokenize_finds_the_reference_tokens_and_interns_them(chunks: list[list[str]], max_chars: int,
                                                              narrow: bool) -> None:
    """narrow: ASCII chunks as uint8 code points, as analyse passes them."""
    classes = build_kernels.char_classes()
    table, tok_off, arena = fresh_state()
    n_tok = 0
    seen: dict[str, int] = {}
    for texts in chunks:  # the state carries over from chunk to chunk
        bounds = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum([len(t) for t in texts], out=bounds[1:])
        joined = "".join(texts)
        codes = np.frombuffer(joined.encode("ascii"), dtype=np.uint8) if narrow and joined.isascii() else \
            np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        ids = np.full(codes.size, -1, dtype=np.int32)
        counts = np.full(len(texts), -1, dtype=np.int64)
        table, tok_off, arena, n_tok, n_out = jit.tokenize(codes, bounds, classes, max_chars, table, tok_off, arena,
                                                           n_tok, ids, counts)
        tokens = [arena[tok_off[i]:tok_off[i + 1]].tobytes().decode("utf-32-le", "surrogatepass")
                  for i in range(n_tok)]
        want = build_kernels.tokenize_reference(texts, max_chars)
        assert counts.tolist() == [len(w) for w in want]
        assert [tokens[i] for i in ids[:n_out]] == [tok for w in want for tok in w]
        for tok in (tok for w in want for tok in w):
            assert seen.setdefault(tok, len(seen)) == tokens.index(tok)  # ids in order of first sight
    assert n_tok == len(seen)
    assert int(np.count_nonzero(table[:, build_kernels.ID])) == n_tok and 2 * n_tok <= table.shape[0]


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_docs=st.integers(0, 30), n_fields=st.integers(1, 3),
       n_terms=st.integers(1, 20))
def test_count_terms_counts_each_documents_terms(seed: int, n_docs: int, n_fields: int, n_terms: int) -> None:
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 12, size=(n_fields, n_docs)).astype(np.int64)
    terms = rng.integers(-1, n_terms, size=int(counts.sum())).astype(np.int32)
    pair_counts, pair_terms, pair_tfs, lengths = jit.count_terms(terms, counts, n_terms)
    per_field = np.split(terms, np.cumsum(counts.sum(axis=1))[:-1])
    p = 0
    for d in range(n_docs):
        want: dict[int, list[int]] = {}
        for f in range(n_fields):
            doc_terms = per_field[f][counts[f, :d].sum():counts[f, :d + 1].sum()].tolist()
            kept = [t for t in doc_terms if t >= 0]
            assert lengths[f, d] == len(kept)
            for t, tf in Counter(kept).items():
                want.setdefault(t, [0] * n_fields)[f] = tf
        got = {int(pair_terms[q]): pair_tfs[:, q].tolist() for q in range(p, p + pair_counts[d])}
        assert got == want and len(got) == pair_counts[d]
        p += pair_counts[d]
    assert p == pair_terms.size == pair_tfs.shape[1]


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_chunks=st.integers(1, 4), n_terms=st.integers(1, 15))
def test_scattered_postings_equal_sorted_pairs(seed: int, n_chunks: int, n_terms: int) -> None:
    rng = np.random.default_rng(seed)
    n_fields = 3
    rows = np.array([2, 0], dtype=np.int64)  # the chunk's two fields are rows 2 and 0 of the index
    cut = int(rng.integers(0, n_terms + 1))
    chunks, docs, terms, tfs = [], [], [], []
    first = 0
    for _ in range(n_chunks):
        n_docs = int(rng.integers(0, 8))
        pair_counts = np.zeros(n_docs, dtype=np.int32)
        pair_terms: list[int] = []
        for d in range(n_docs):
            distinct = rng.choice(n_terms, size=int(rng.integers(0, n_terms + 1)), replace=False)
            pair_counts[d] = distinct.size
            pair_terms += distinct.tolist()
            docs += [first + d] * distinct.size
        pair_tfs = rng.integers(0, 5, size=(2, len(pair_terms))).astype(np.uint32)
        chunks.append((pair_counts, first, np.array(pair_terms, dtype=np.int32), pair_tfs))
        terms += pair_terms
        full = np.zeros((n_fields, len(pair_terms)), dtype=np.uint32)
        full[rows] = pair_tfs
        tfs.append(full)
        first += n_docs
    want_offsets, want_docs, want_tfs = build_kernels.postings_reference(
        np.array(docs, dtype=np.int64), np.array(terms, dtype=np.int64), np.concatenate(tfs, axis=1), n_terms)
    got_docs = np.zeros(len(docs), dtype=np.uint32)
    got_tfs = np.zeros((n_fields, len(docs)), dtype=np.uint32)
    cursor = want_offsets[:-1].copy()
    for pair_counts, start, pair_terms_arr, pair_tfs in chunks:
        for lo, hi in ((0, cut), (cut, n_terms)):  # two term ranges, as two threads scatter them
            jit.scatter_postings(pair_counts, start, pair_terms_arr, pair_tfs, rows, lo, hi, cursor, got_docs, got_tfs)
    np.testing.assert_array_equal(cursor, want_offsets[1:])
    np.testing.assert_array_equal(got_docs, want_docs)
    np.testing.assert_array_equal(got_tfs, want_tfs)


CONFIGS = [AnalyzerConfig(), AnalyzerConfig(casefold=False, fold_accents=False, stopwords="none", stemmer="none"),
           AnalyzerConfig(fold_accents=False, stemmer="english", max_token_chars=4)]


@settings(max_examples=100, deadline=None)
@given(texts=st.lists(TEXTS, max_size=8), config=st.sampled_from(CONFIGS))
def test_batch_analysis_gives_the_analyzers_terms(texts: list[str], config: AnalyzerConfig) -> None:
    """One field of random text through analyse(): each document's terms, with repeats, are the
    Analyzer's (stop words, possessives, digits with commas, accents, unicode)."""
    entities = [Entity(id=str(i), fields={"t": t}) for i, t in enumerate(texts)]
    got = analyse(entities, [FieldSpec(name="t", analyzer=config)], [[0]], progress=False)
    analyzer = Analyzer(config)
    want = [Counter(analyzer(t)) for t in texts]
    np.testing.assert_array_equal(got.lengths[0], [sum(c.values()) for c in want])
    terms = got.terms[0]
    found: list[Counter[str]] = [Counter() for _ in texts]
    for t, term in enumerate(terms):
        for p in range(got.offsets[t], got.offsets[t + 1]):
            found[got.doc_ids[p]][term] = int(got.tfs[0, p])
    assert found == want
    assert terms == sorted({term for c in want for term in c})


@pytest.mark.parametrize(("stored", "query"), [("ab", "ac"), ("ab", "a\u0100"), ("x" * 20, "x" * 19 + "y"),
                                               ("\u0100b", "\u0100c")])
def test_find_slot_tells_tokens_apart_when_their_heads_collide(stored: str, query: str) -> None:
    """Two tokens with the same hash and length (forged here) are told apart by their text,
    short ones by the text held in the entry, others by the arena."""
    table, tok_off, arena = fresh_state()
    codes = np.frombuffer((stored + query).encode("utf-32-le"), dtype=np.uint32)
    table, tok_off, arena, n_tok, _ = jit.tokenize(codes[:len(stored)], np.array([0, len(stored)], dtype=np.int64),
                                                   build_kernels.char_classes(), 255, table, tok_off, arena, 0,
                                                   np.zeros(len(stored), dtype=np.int32), np.zeros(1, dtype=np.int64))
    assert n_tok == 1
    (slot,) = np.flatnonzero(table[:, build_kernels.ID])
    _, text0, text1, short = jit.token_key(codes, len(stored), codes.size)
    assert jit.find_slot(codes, len(stored), codes.size, table[slot, build_kernels.HEAD], text0, text1, short,
                         table, arena) != slot
    again = jit.token_key(codes, 0, len(stored))
    assert jit.find_slot(codes, 0, len(stored), *again, table, arena) == slot


class StreamOnly(Sequence[Entity]):
    """A catalog that can only be read in order, as a corpus file streams (indexing it fails)."""

    def __init__(self, entities: list[Entity], length: int | None = None) -> None:
        self.entities = entities
        self.length = len(entities) if length is None else length

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[Entity]:
        return iter(self.entities)

    def __getitem__(self, i: Any) -> Any:
        raise AssertionError("analyse must read the entities in one pass, not index them")


@pytest.mark.parametrize("workers", [1, 2])
def test_entities_are_read_in_one_pass(workers: int) -> None:
    """Guards against indexing entities one by one: a file-backed corpus seeks and opens per item."""
    entities = make_catalog(5, 50, ["title", "artist"])
    fields = [FieldSpec(name="title"), FieldSpec(name="artist")]
    got = analyse(StreamOnly(entities), fields, [[0, 1]], progress=False, workers=workers)
    assert_matches_brute_force(got, entities, fields, [[0, 1]])


@pytest.mark.parametrize("length", [3, 5])
def test_a_length_that_disagrees_with_the_entities_is_an_error(length: int) -> None:
    entities = make_catalog(5, 4, ["title"])
    with pytest.raises(ValueError, match="`entities` yielded"):
        analyse(StreamOnly(entities, length), [FieldSpec(name="title")], [[0]], progress=False)


@pytest.mark.parametrize("max_chars", [1, 7, 30, 10**6])
def test_chunks_hold_at_most_max_chars_unless_one_document_is_longer(max_chars: int) -> None:
    entities = make_catalog(9, 40, ["title", "artist"])
    chunks = list(text_chunks(entities, ["title", "artist"], 16, max_chars))
    assert [c[0] for c in chunks] == list(itertools.accumulate([0] + [len(c[1][0]) for c in chunks[:-1]]))
    assert [t for c in chunks for t in c[1][1]] == [e.fields.get("artist", "") for e in entities]
    for _, (titles, artists) in chunks:
        assert 1 <= len(titles) <= 16
        assert len(titles) == 1 or sum(map(len, titles + artists)) <= max_chars
