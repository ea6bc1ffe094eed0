"""Query understanding on real queries over the bundled music catalog: names with typos, decades,
genres, moods, and queries with several readings."""

from __future__ import annotations

import pytest

from core.attribute.index import AttributeConfig, AttributeStrategy
from core.attribute.understand import UnderstandConfig
from core.query import make_query
from core.types import Interpretation


def top(strategy: AttributeStrategy, text: str, n: int = 4) -> tuple[Interpretation, ...]:
    return strategy.understand(make_query(text), n)


def slots(interp: Interpretation) -> set[tuple[str, str]]:
    return {(s.field, s.value) for s in interp.slots}


# (query, slots of the most likely reading, its free text)
TOP_READING = [
    ("Taylor Swift", {("artist", "Taylor Swift")}, ""),
    ("tayler swift", {("artist", "Taylor Swift")}, ""),
    ("taylorswift", {("artist", "Taylor Swift")}, ""),
    ("taylor swift songs", {("artist", "Taylor Swift")}, ""),
    ("justin biber", {("artist", "Justin Bieber")}, ""),
    ("post malon", {("artist", "Post Malone")}, ""),
    ("ed sheran", {("artist", "Ed Sheeran")}, ""),
    ("billie eilish bad guy", {("artist", "Billie Eilish"), ("title", "bad guy")}, ""),
    ("90s rock", {("decade", "1990s"), ("genre", "rock")}, ""),
    ("nineties", {("decade", "1990s")}, ""),
    ("80s", {("decade", "1980s")}, ""),
    ("1970s music", {("decade", "1970s")}, ""),
    ("rnb", {("genre", "r&b")}, ""),
    ("latin pop", {("subgenre", "latin pop")}, ""),
    ("reggaeton", {("subgenre", "reggaeton")}, ""),
    ("edm", {("genre", "edm")}, ""),
    ("chill", {("mood", "chill")}, ""),
    ("sad songs", {("mood", "sad")}, ""),
    ("happy 2000s latin", {("mood", "happy"), ("decade", "2000s"), ("genre", "latin")}, ""),
]


@pytest.mark.parametrize(("text", "want", "free"), TOP_READING)
def test_most_likely_reading(music_attribute: AttributeStrategy, text: str, want: set[tuple[str, str]],
                             free: str) -> None:
    best = top(music_attribute, text)[0]
    assert slots(best) == want
    assert best.free_text == free


@pytest.mark.parametrize(("text", "want"), [("workout", ("mood", "energetic")), ("hip hop", ("genre", "rap")),
                                            ("weeknd", ("artist", "The Weeknd"))])
def test_reading_among_the_top_four(music_attribute: AttributeStrategy, text: str, want: tuple[str, str]) -> None:
    assert any(want in slots(i) for i in top(music_attribute, text))


def test_tayler_love_has_several_readings(music_attribute: AttributeStrategy) -> None:
    """The article's example: artist Taylor Swift + "love" as free text, and "love" read alone."""
    readings = top(music_attribute, "tayler love", 8)
    assert any(slots(i) == {("artist", "Taylor Swift")} and i.free_text == "love" for i in readings)
    assert any(("title", "Love") in slots(i) or (i.free_text.endswith("love") and not i.slots) for i in readings)
    assert len({frozenset(slots(i)) for i in readings}) == len(readings) >= 3


@pytest.mark.parametrize("text", ["tayler love", "  Dua  Lipa  ", "90's r&b", "zzqx", "songs", "Beyoncé halo"])
def test_readings_are_well_formed(music_attribute: AttributeStrategy, text: str) -> None:
    query = make_query(text)
    readings = music_attribute.understand(query, 8)
    likes = [i.likelihood for i in readings]
    assert 0 < sum(likes) <= 1 + 1e-9
    assert likes == sorted(likes, reverse=True)
    for i in readings:
        for s in i.slots:
            assert query.text[s.start:s.end] == s.span
            assert 0 < s.confidence <= 1


def test_unknown_words_stay_free_text(music_attribute: AttributeStrategy) -> None:
    best = top(music_attribute, "zzqx")[0]
    assert best.slots == () and best.free_text == "zzqx" and best.likelihood == pytest.approx(1.0)


def test_max_interpretations_is_honoured(music_attribute: AttributeStrategy) -> None:
    assert len(top(music_attribute, "tayler love", 2)) == 2


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"max_interpretations": 0}, "`max_interpretations` must be in \\[1, 32\\], but got 0"),
    ({"relax": 1.5}, "`relax` must be in \\[0, 1\\], but got 1.5"),
])
def test_config_errors_name_the_argument(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AttributeConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"beam": 0}, "`beam` must be in \\[1, 64\\], but got 0"),
    ({"free_known": 0.0}, "`free_known` must be in \\(0, 1\\], but got 0.0"),
])
def test_understand_config_errors(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        UnderstandConfig(**kwargs)  # type: ignore[arg-type]
