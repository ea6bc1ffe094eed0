"""Posting construction against a brute force: a Counter over Analyzer output per field and document."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import pytest

from core.analysis import Analyzer, AnalyzerConfig
from core.catalog import Entity
from core.lexical.build import Postings, analyse
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
