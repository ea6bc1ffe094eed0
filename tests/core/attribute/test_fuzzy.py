"""The misspelling index against brute-force edit distance."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.attribute.fuzzy import DeleteIndex, LiveDeleteIndex, osa_distance, within_one_edit

WORDS = st.text(alphabet="abc d", max_size=7)


@given(WORDS, WORDS)
@settings(max_examples=500, deadline=None)
def test_within_one_edit_agrees_with_osa_distance(a: str, b: str) -> None:
    assert within_one_edit(a, b) == (osa_distance(a, b, 1) <= 1)


@pytest.mark.parametrize(("a", "b", "d"), [("taylor", "tayler", 1), ("swift", "swfit", 1), ("abc", "abc", 0),
                                           ("kitten", "sitting", 3), ("ca", "abc", 3), ("", "ab", 2)])
def test_osa_distance_examples(a: str, b: str, d: int) -> None:
    assert osa_distance(a, b, limit=3) == d


def test_lookup_finds_exactly_the_strings_within_one_edit() -> None:
    rng = np.random.default_rng(3)
    strings = sorted({"".join(rng.choice(list("abcde "), size=int(rng.integers(1, 8)))) for _ in range(400)})
    index = DeleteIndex(strings, min_chars=3)
    for _ in range(300):
        q = "".join(rng.choice(list("abcde "), size=int(rng.integers(1, 8))))
        want = {(i, osa_distance(q, s, 1)) for i, s in enumerate(strings)
                if s == q or (len(s) >= 3 and len(q) >= 3 and osa_distance(q, s, 1) <= 1)}
        assert set(index.lookup(q)) == want, q


def test_min_chars_must_be_positive() -> None:
    with pytest.raises(ValueError, match="`min_chars` must be >= 1, but got 0"):
        DeleteIndex(["a"], min_chars=0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.text(alphabet="abcde", min_size=1, max_size=6)), max_size=40),
       st.lists(st.text(alphabet="abcde", min_size=1, max_size=7), min_size=1, max_size=10))
def test_live_index_answers_like_a_build_of_its_strings(ops: list[tuple[bool, str]], probes: list[str]) -> None:
    """After any adds and discards, LiveDeleteIndex looks up like a DeleteIndex built over the
    strings left, in the same order (ids differ: compare the strings)."""
    live = LiveDeleteIndex(min_chars=3)
    left: set[str] = set()
    for add, s in ops:
        (live.add if add else live.discard)(s)
        (left.add if add else left.discard)(s)
    built = DeleteIndex(sorted(left), min_chars=3)
    assert len(live) == len(left)
    for p in probes:
        assert [(live.strings[i], d) for i, d in live.lookup(p)] == [(built.strings[i], d) for i, d in built.lookup(p)]
