"""Attribute retrieval against a brute-force filter over the catalog's entities, plus the contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.analysis import Analyzer, text_key
from core.attribute.buckets import derived_values, moods
from core.attribute.index import AttributeConfig, AttributeStrategy, short_title
from core.attribute.understand import analyse
from core.catalog import Entity
from core.collection import filter_value
from core.indexing import build_index, open_strategy
from core.query import Filter, make_query
from core.types import Interpretation, Slot
from tests.core.strategy_contract import StrategyContract

ANALYZER = Analyzer()


Facts = list[tuple[dict[str, set[str]], set[str]]]


@pytest.fixture(scope="module")
def facts(music: list[Entity]) -> Facts:
    """Per entity: field -> folded values (catalog, derived buckets, short-title key) and the stems
    of its title, artist and album; straight from the entities, with no index."""
    out = []
    for e in music:
        values: dict[str, set[str]] = {"title": {text_key(short_title(e.fields.get("title", "")))}}
        for f, v in (*e.categorical(), *derived_values(e.attributes)):
            values.setdefault(f, set()).add(filter_value(v))
        out.append((values, set(ANALYZER(" ".join(e.fields.get(f, "") for f in ("title", "artist", "album"))))))
    return out


def satisfies(values: dict[str, set[str]], slot: Slot) -> bool:
    want = text_key(slot.value) if slot.field == "title" else filter_value(slot.value)
    return want in values.get(slot.field, set())


def brute_force(music: list[Entity], facts: Facts, readings: tuple[Interpretation, ...],
                relax: float) -> dict[int, float]:
    top = max(e.popularity for e in music)
    scores: dict[int, float] = {}
    for i, (e, (values, stems)) in enumerate(zip(music, facts, strict=True)):
        total = 0.0
        for r in readings:
            words = ANALYZER(r.free_text)
            free_ok = bool(words) and all(w in stems for w in words)
            if r.slots and all(satisfies(values, s) for s in r.slots):
                total += r.likelihood * (1.0 if not words else relax + (1 - relax) * free_ok)
            elif not r.slots and free_ok:
                total += r.likelihood
        if total > 0:
            scores[i] = total * (1 + e.popularity) / (1 + top)
    return scores


@pytest.mark.parametrize("text", ["90s rock", "tayler love", "chill pop", "billie eilish", "workout", "love",
                                  "happy 2000s latin", "drake"])
def test_retrieve_equals_brute_force(music_attribute: AttributeStrategy, music: list[Entity], facts: Facts,
                                    text: str) -> None:
    hits = music_attribute.retrieve(make_query(text), 50, None)
    want = brute_force(music, facts, hits.interpretations, music_attribute.config.relax)
    assert hits.total_matches == len(want)
    expected = sorted(want.items(), key=lambda kv: (-kv[1], kv[0]))[:50]
    np.testing.assert_allclose(hits.scores, [s for _, s in expected], rtol=1e-5)
    for o, s in zip(hits.ordinals.tolist(), hits.scores.tolist(), strict=True):
        assert want[o] == pytest.approx(s, rel=1e-5)


def test_retrieve_reports_its_interpretations(music_attribute: AttributeStrategy) -> None:
    hits = music_attribute.retrieve(make_query("tayler swift"), 10, None)
    assert hits.interpretations[0].slots[0].value == "Taylor Swift"
    ids = {music_attribute.collection.ids[o] for o in hits.ordinals}
    ts = music_attribute.collection.bitmaps["artist"]["taylor swift"]
    assert {music_attribute.collection.ids[o] for o in ts} >= ids


def test_filter_restricts_to_allowed(music_attribute: AttributeStrategy) -> None:
    query = make_query("90s", filters=[Filter(field="genre", values=("rock",))])
    allowed = music_attribute.collection.allowed(query.filters)
    assert allowed is not None
    hits = music_attribute.retrieve(query, 1000, allowed)
    assert len(hits) > 0 and set(hits.ordinals.tolist()) <= set(allowed)


@pytest.mark.parametrize(("valence", "energy", "want"), [
    (0.9, 0.9, ["happy", "energetic"]), (0.1, 0.3, ["sad"]), (0.5, 0.3, ["chill"]),
    (0.1, 0.95, ["energetic", "intense"]),
])
def test_mood_buckets(valence: float, energy: float, want: list[str]) -> None:
    assert moods(valence, energy) == want


@pytest.mark.parametrize(("title", "want"), [("Love Story - Taylor's Version", "Love Story"),
                                             ("Bad Guy (with Justin Bieber)", "Bad Guy"), ("(Intro)", "(Intro)")])
def test_short_title(title: str, want: str) -> None:
    assert short_title(title) == want


class TestAttributeContract(StrategyContract):
    strategy_name = "attribute"
    matching_query = "rock"

    @pytest.fixture(scope="class")
    @classmethod
    def index_dir(cls, tmp_path_factory: pytest.TempPathFactory, catalog: list[Entity]) -> Path:
        root = tmp_path_factory.mktemp("attribute-index")
        build_index(catalog, root, ["attribute"])
        return root


@pytest.mark.parametrize("text", ["90s rock", "tayler love", "happy 2000s latin", "drake", ""])
def test_cached_readings_equal_fresh_analysis(music_attribute: AttributeStrategy, text: str) -> None:
    """A cached text answers later requests of fewer readings, and more readings are computed anew."""
    vocab, config = music_attribute.vocab, music_attribute.config.understand
    for n in (8, 2, 8, 12, 1):  # 2 and 8 are answered from the 8 cached first; 12 replaces them
        want = analyse(text, vocab, n, config)
        got = music_attribute.analyse(text, n)
        assert [a.interpretation for a in got] == [a.interpretation for a in want]
        assert [a.free_words for a in got] == [a.free_words for a in want]
        assert [None if a.slot_bits is None else list(a.slot_bits) for a in got] == \
            [None if a.slot_bits is None else list(a.slot_bits) for a in want]
    assert music_attribute.readings.get(text) is not None


def test_readings_cache_stays_within_its_bound(music_index: Path) -> None:
    s = open_strategy(music_index, "attribute", {"cache_bytes": 4096})
    assert isinstance(s, AttributeStrategy)
    for text in ["90s rock", "pop", "latin", "rock", "2000s", "happy", "sad songs", "drake", "adele"]:
        s.understand(make_query(text), 8)
        assert s.readings.bytes <= 4096
    assert 0 < len(s.readings) < 9


def test_cache_bytes_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="`cache_bytes` must be >= 0"):
        AttributeConfig(cache_bytes=-1)
