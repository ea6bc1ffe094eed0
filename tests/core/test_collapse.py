"""core.collapse: what counts as one recording, and the collapse of a ranked list to distinct ones."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.collapse import distinct_top, recording_key, strip_credits, strip_remaster


@pytest.mark.parametrize(("a", "b"), [
    (("Dance Monkey", "Tones and I"), ("Dance Monkey", "TONES AND I")),
    (("Help! - Remastered 2009", "The Beatles"), ("Help!", "The Beatles")),
    (("Heroes - 1999 Remaster", "David Bowie"), ("Heroes - 2017 Remaster", "David Bowie")),
    (("Blister in the Sun - 2002 Remastered Version", "Violent Femmes"), ("Blister In The Sun", "Violent Femmes")),
    (("Song (Remastered)", "X"), ("Song", "X")),
    (("ZEZE (feat. Travis Scott & Offset)", "Kodak Black"), ("ZEZE", "Kodak Black")),
    (("I Luv U (with R3HAB)", "Sigala"), ("I Luv U", "Sigala")),
    (("Beyoncé", "A"), ("Beyonce", "A")),
])
def test_copies_of_one_recording_share_a_key(a: tuple[str, str], b: tuple[str, str]) -> None:
    assert recording_key(*a) == recording_key(*b) != ""


@pytest.mark.parametrize(("a", "b"), [
    (("Dance Monkey", "Tones and I"), ("Dance Monkey", "Coopex")),  # a cover
    (("Love Story", "Taylor Swift"), ("Love Story - Taylor's Version", "Taylor Swift")),  # re-recorded
    (("Memories", "Maroon 5"), ("Memories - Dillon Francis Remix", "Maroon 5")),
    (("Halo", "Beyoncé"), ("Halo - Live", "Beyoncé")),
    (("Run the World (Girls)", "Beyoncé"), ("Run the World", "Beyoncé")),  # a parenthetical of the title
])
def test_other_versions_are_other_recordings(a: tuple[str, str], b: tuple[str, str]) -> None:
    assert recording_key(*a) != recording_key(*b)


def test_title_cleaning() -> None:
    assert strip_credits("Mi Gente (feat. Beyoncé)") == "Mi Gente"
    assert strip_credits("Lover (Remix) [feat. Shawn Mendes]") == "Lover (Remix)"
    assert strip_credits("(feat. X)") == "(feat. X)"  # nothing would be left: kept whole
    assert strip_remaster("Hey Jude - 2015 Remaster") == "Hey Jude"
    assert strip_remaster("Remaster") == "Remaster"
    assert recording_key("!!!", "X") == ""  # no words: unknown, never collapsed


def test_distinct_top_keeps_the_best_copy_and_fills_from_below() -> None:
    keys = ["dm/tones", "dm/skylike", "dm/tones", "dm/tones", "dm/coopex", ""]
    order = np.array([2, 0, 3, 1, 5, 4], dtype=np.int64)  # copies of dm/tones ranked 1st, 2nd, 3rd
    keep = distinct_top(order, keys, 3)
    assert order[keep].tolist() == [2, 1, 5]
    assert order[distinct_top(order, keys, 10)].tolist() == [2, 1, 5, 4]  # fewer distinct than k
    assert distinct_top(order, keys, 0).tolist() == []
    assert distinct_top(order, ["", "", "", "", "", ""], 10).tolist() == list(range(6))  # unknown: all kept


@pytest.mark.parametrize("k", [-1, 1.5, True])
def test_bad_k(k: object) -> None:
    with pytest.raises(ValueError, match="`k` must be an integer >= 0"):
        distinct_top(np.arange(2), ["a", "b"], k)  # type: ignore[arg-type]


@given(st.lists(st.sampled_from(["a", "b", "c", ""]), max_size=12), st.integers(0, 14), st.randoms())
def test_distinct_top_properties(keys: list[str], k: int, rnd: object) -> None:
    order = np.array(sorted(range(len(keys)), key=lambda _: rnd.random()), dtype=np.int64)  # type: ignore[attr-defined]
    kept = order[distinct_top(order, keys, k)].tolist()
    shown = [keys[i] for i in kept if keys[i]]
    assert len(shown) == len(set(shown))  # each recording once
    n_distinct = len({x for x in keys if x}) + keys.count("")
    assert len(kept) == min(k, n_distinct)  # k slots filled when the candidates allow
    assert kept == [i for i in order.tolist() if i in set(kept)]  # ranked order kept
