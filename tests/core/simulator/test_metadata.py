"""Imperfect metadata (core.simulator.metadata): the catalog the index is built from.

Shares are checked on the whole bundled catalog (32,251 playlist memberships, about 30,000 genre and
33,000 subgenre tags), so the binomial sampling error of a share is a few thousandths; the bounds
below are four standard errors.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from core.analysis import text_key
from core.catalog import Entity, demo_catalog_path, load_catalog
from core.collection import Collection, filter_value
from core.indexing import build_index, open_strategy
from core.query import Query
from core.simulator.metadata import (
    DEFAULT_GENRE_NOISE,
    DEFAULT_GENRE_WRONG,
    DEFAULT_PLAYLIST_NOISE,
    DEFAULT_PLAYLIST_WRONG,
    DEFAULT_UNSEEN,
    GENRE_FIELDS,
    PLAYLIST_FIELD,
    MetadataNoise,
    describe,
    noisy_catalog,
    unseen_playlists,
)
from core.types import SupportsUnderstand

NOISED = (PLAYLIST_FIELD, *GENRE_FIELDS)


@pytest.fixture(scope="module")
def truth() -> list[Entity]:
    return load_catalog(demo_catalog_path())


@pytest.fixture(scope="module")
def part(truth: list[Entity]) -> list[Entity]:
    """The first 5,000 tracks, for the properties that do not need the whole catalog's counts."""
    return truth[:5000]


@pytest.fixture(scope="module")
def noisy(truth: list[Entity]) -> list[Entity]:
    return noisy_catalog(truth, MetadataNoise())


def tags(entity: Entity, name: str) -> set[str]:
    value = entity.attributes.get(name, ())
    return {value} if isinstance(value, str) else set(value) if isinstance(value, tuple) else set()


def counts(truth: list[Entity], noisy: list[Entity], name: str, skip: frozenset[str] = frozenset()
           ) -> tuple[int, int, int]:
    """(true tags not in `skip`, of them lost in the noisy catalog, values the noisy catalog added)."""
    total = lost = added = 0
    for t, n in zip(truth, noisy, strict=True):
        true, seen = tags(t, name) - skip, tags(n, name)
        total, lost, added = total + len(true), lost + len(true - seen), added + len(seen - tags(t, name))
    return total, lost, added


def near(share: float, expected: float, n: int) -> bool:
    """`share` of n Bernoulli draws is within four standard errors of `expected`."""
    return abs(share - expected) <= 4 * math.sqrt(expected * (1 - expected) / n)


def test_playlist_memberships_missing_or_wrong_in_the_configured_shares(truth: list[Entity],
                                                                         noisy: list[Entity]) -> None:
    total, lost, _ = counts(truth, noisy, PLAYLIST_FIELD)
    unseen = unseen_playlists(truth, MetadataNoise())
    seen_total, seen_lost, added = counts(truth, noisy, PLAYLIST_FIELD, skip=unseen)
    unseen_members = total - seen_total
    largest = max(sum(p in tags(e, PLAYLIST_FIELD) for e in truth) for p in unseen)
    # whole playlists are taken until their memberships reach the target: overshoot < one playlist
    target = DEFAULT_UNSEEN * DEFAULT_PLAYLIST_NOISE * total
    assert target <= unseen_members < target + largest
    assert near(lost / total, DEFAULT_PLAYLIST_NOISE, seen_total)
    # every wrong value replaced a lost true membership, so the corrupted ones split into wrong and missing
    assert near(added / seen_lost, DEFAULT_PLAYLIST_WRONG, seen_lost)


@pytest.mark.parametrize("name", GENRE_FIELDS)
def test_genre_tags_missing_or_wrong_in_the_configured_shares(truth: list[Entity], noisy: list[Entity],
                                                               name: str) -> None:
    total, lost, added = counts(truth, noisy, name)
    assert near(lost / total, DEFAULT_GENRE_NOISE, total)
    assert near(added / lost, DEFAULT_GENRE_WRONG, lost)


def test_describe_counts_what_the_noise_did(truth: list[Entity], noisy: list[Entity]) -> None:
    for name in NOISED:
        total, lost, added = counts(truth, noisy, name)
        assert describe(truth, noisy)[name] == {"tags": total, "kept": total - lost, "wrong": added,
                                                "missing": lost - added}


def test_truth_untouched(part: list[Entity]) -> None:
    before = [e.to_json() for e in part]
    noisy_catalog(part, MetadataNoise(playlist=0.9, genre=0.9, seed=3))
    assert [e.to_json() for e in part] == before


def test_ids_order_and_everything_but_the_noised_tags_preserved(truth: list[Entity], noisy: list[Entity]) -> None:
    assert [e.id for e in noisy] == [e.id for e in truth]
    for t, n in zip(truth, noisy, strict=True):
        assert (n.type, dict(n.fields), n.popularity, n.vector) == (t.type, dict(t.fields), t.popularity, t.vector)
        assert {k: v for k, v in n.attributes.items() if k not in NOISED} == \
               {k: v for k, v in t.attributes.items() if k not in NOISED}


def test_unseen_playlists_are_absent_from_the_noisy_catalog(truth: list[Entity], noisy: list[Entity]) -> None:
    """Regression: an unseen playlist spelt another way ("Permanent Wave", "permanent wave") stayed
    known to the index through its other spellings."""
    unseen = unseen_playlists(truth, MetadataNoise())
    assert unseen
    keys = {text_key(p) for p in unseen}
    # neither kept nor drawn as a wrong value, in any spelling
    assert not any(text_key(p) in keys for e in noisy for p in tags(e, PLAYLIST_FIELD))
    bitmaps = Collection.build(noisy).bitmaps[PLAYLIST_FIELD]
    assert not {filter_value(p) for p in unseen} & set(bitmaps)
    # every spelling of an unseen name is unseen
    assert {p for e in truth for p in tags(e, PLAYLIST_FIELD) if text_key(p) in keys} == unseen


def test_a_wrong_value_is_one_the_entity_does_not_truly_have(truth: list[Entity], noisy: list[Entity]) -> None:
    known = {name: set().union(*(tags(e, name) for e in truth)) for name in NOISED}
    for t, n in zip(truth, noisy, strict=True):
        for name in NOISED:
            assert tags(n, name) <= known[name]
            assert len(tags(n, name) - tags(t, name)) <= len(tags(t, name) - tags(n, name))


def test_deterministic_per_seed(part: list[Entity]) -> None:
    first = noisy_catalog(part, MetadataNoise())
    assert noisy_catalog(part, MetadataNoise()) == first
    assert noisy_catalog(part, MetadataNoise(seed=1)) != first


def test_each_field_draws_from_its_own_stream(part: list[Entity]) -> None:
    """Changing the genre rate must not redraw the playlist noise (and the reverse)."""
    both = noisy_catalog(part, MetadataNoise())
    playlists_only = noisy_catalog(part, MetadataNoise(genre=0.0))
    genres_only = noisy_catalog(part, MetadataNoise(playlist=0.0))
    for t, n, p, g in zip(part, both, playlists_only, genres_only, strict=True):
        assert tags(p, PLAYLIST_FIELD) == tags(n, PLAYLIST_FIELD) and tags(g, PLAYLIST_FIELD) == tags(t, PLAYLIST_FIELD)
        for name in GENRE_FIELDS:
            assert tags(g, name) == tags(n, name) and tags(p, name) == tags(t, name)


def test_zero_is_an_exact_copy(truth: list[Entity]) -> None:
    copy = noisy_catalog(truth, MetadataNoise(playlist=0.0, genre=0.0))
    assert copy is not truth
    assert copy == truth


def test_slug_encodes_every_setting() -> None:
    variants = [MetadataNoise(), MetadataNoise(playlist=0.2), MetadataNoise(genre=0.2), MetadataNoise(seed=1),
                MetadataNoise(unseen=0.5), MetadataNoise(playlist_wrong=0.5), MetadataNoise(genre_wrong=0.2)]
    assert len({v.slug() for v in variants}) == len(variants)
    assert MetadataNoise(playlist=0.0, genre=0.0).slug() == "exact"
    assert MetadataNoise().slug() == MetadataNoise().slug()


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"playlist": 1.5}, r"`playlist` must be a share in \[0, 1\], but got 1.5"),
    ({"genre": -0.1}, r"`genre` must be a share in \[0, 1\], but got -0.1"),
    ({"unseen": float("nan")}, r"`unseen` must be a share"),
    ({"playlist_wrong": True}, r"`playlist_wrong` must be a share"),
    ({"genre_wrong": "0.5"}, r"`genre_wrong` must be a share"),
    ({"seed": -1}, r"`seed` must be an int >= 0, but got -1"),
])
def test_invalid_settings(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MetadataNoise(**kwargs)  # type: ignore[arg-type]


def test_describe_refuses_catalogs_of_different_sizes(truth: list[Entity]) -> None:
    with pytest.raises(ValueError, match="`noisy` must have 3 entities"):
        describe(truth[:3], truth[:2])


def test_attribute_index_never_reads_an_unseen_playlist_name(music_slice: list[Entity], tmp_path: Path) -> None:
    """A topical query naming an unseen playlist finds no playlist slot in the noisy index, while
    the same query does in an index of the truth."""
    noise = MetadataNoise(playlist=0.6, unseen=1.0, genre=0.0)
    unseen = unseen_playlists(music_slice, noise)
    name = max(unseen, key=lambda p: sum(p in tags(e, PLAYLIST_FIELD) for e in music_slice))
    readings = {}
    for label, entities in (("truth", music_slice), ("noisy", noisy_catalog(music_slice, noise))):
        build_index(entities, tmp_path / label, ["attribute"])
        strategy = open_strategy(tmp_path / label, "attribute")
        assert isinstance(strategy, SupportsUnderstand)
        readings[label] = {s.field for i in strategy.understand(Query(text=name.lower()), 8) for s in i.slots}
    assert PLAYLIST_FIELD in readings["truth"]
    assert PLAYLIST_FIELD not in readings["noisy"]
