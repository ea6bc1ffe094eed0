"""Live writes to the attribute strategy: a new artist is understood, typo included, as soon as it
is written; a value no entity has any more is no longer proposed; after a random write sequence,
understanding and retrieval equal a fresh build of the resulting catalog exactly."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from core.attribute.index import AttributeStrategy
from core.attribute.live import LiveAttribute
from core.catalog import Entity
from core.indexing import build_index, open_strategy
from core.live import Delete, LiveCollection, Upsert
from core.query import make_query
from tests.core.live_writes import final_catalog, random_writes


def attribute(entities: list[Entity], root: Path) -> AttributeStrategy:
    build_index(entities, root, ["attribute"])
    strategy = open_strategy(root, "attribute")
    assert isinstance(strategy, AttributeStrategy)
    return strategy


def live_attribute(entities: list[Entity], root: Path) -> tuple[LiveCollection, AttributeStrategy, LiveAttribute]:
    strategy = attribute(entities, root)
    live = LiveCollection(entities, strategy.collection)
    strategy.collection = live
    return live, strategy, LiveAttribute(strategy)


def answer(strategy: AttributeStrategy, text: str) -> tuple[object, list[tuple[str, float]]]:
    hits = strategy.retrieve(make_query(text), 30, strategy.collection.allowed([]))
    ids = [strategy.collection.ids[o] for o in hits.ordinals.tolist()]
    return hits.interpretations, list(zip(ids, hits.scores.tolist(), strict=True))


def typo(text: str, rng: np.random.Generator) -> str:
    """`text` with two adjacent letters of its longest word swapped (one edit)."""
    words = text.split()
    i = max(range(len(words)), key=lambda j: len(words[j]))
    w = words[i]
    if len(w) >= 4:
        k = int(rng.integers(1, len(w) - 2))
        words[i] = w[:k] + w[k + 1] + w[k] + w[k + 2:]
    return " ".join(words)


def queries(entities: list[Entity], rng: np.random.Generator) -> list[str]:
    out = ["chill pop", "90s rock", "sad songs", "upbeat dance", "love"]
    for e in entities:
        artist, title = e.fields.get("artist", ""), e.fields.get("title", "")
        genre = e.attributes.get("genre")
        out += [artist, title, f"{artist} {title}", typo(artist, rng), typo(title, rng)]
        if isinstance(genre, tuple) and genre:
            out.append(f"{genre[0]} {artist}")
    return [q for q in out if q.strip()]


@pytest.fixture(scope="module")
def tracks(music: list[Entity]) -> list[Entity]:
    return music[:3000]


def test_a_new_artist_is_understood_with_a_typo_at_once(tmp_path: Path, tracks: list[Entity]) -> None:
    live, strategy, writer = live_attribute(tracks[:500], tmp_path)
    name = "Zorblatt Quimby"
    assert not any(name.lower() in str(e.attributes.get("artist", "")).lower() for e in tracks)
    before = strategy.understand(make_query("zorblat quimby"), 3)
    assert all(s.value != name for i in before for s in i.slots)
    track = dataclasses.replace(tracks[0], id="new-1", fields={"title": "Glass Orchard", "artist": name},
                                attributes={**tracks[0].attributes, "artist": name})
    writer.apply(live.apply([Upsert(track)]))
    top = strategy.understand(make_query("zorblat quimby"), 3)[0]  # one letter dropped
    assert [(s.field, s.value) for s in top.slots] == [("artist", name)]
    _, hits = answer(strategy, "zorbaltt quimby")  # two letters swapped
    assert hits[0][0] == "new-1"
    writer.apply(live.apply([Delete("new-1")]))
    after = strategy.understand(make_query("zorblat quimby"), 3)
    assert all(s.value != name for i in after for s in i.slots)
    assert answer(strategy, "zorblatt quimby")[1] == []


def test_no_writes_equals_the_loaded_vocabulary(tmp_path: Path, tracks: list[Entity]) -> None:
    base = tracks[:800]
    strategy = attribute(base, tmp_path / "plain")
    _, live_strategy, _ = live_attribute(base, tmp_path / "live")
    for q in queries(base[::8], np.random.default_rng(1)):
        assert answer(live_strategy, q) == answer(strategy, q), q


@pytest.mark.parametrize("seed", [31, 32])
def test_random_writes_equal_a_fresh_build(tmp_path: Path, tracks: list[Entity], seed: int) -> None:
    base, fresh = tracks[:1200], tracks[1200:1600]
    writes = random_writes(base, fresh, 600, seed)
    live, strategy, writer = live_attribute(base, tmp_path / "live")
    for i in range(0, len(writes), 20):
        writer.apply(live.apply(writes[i:i + 20]))
    expected = final_catalog(base, writes)
    rebuilt = attribute(expected, tmp_path / "fresh")
    rng = np.random.default_rng(seed)
    for q in queries(expected[::6] + base[::25], rng):
        assert answer(strategy, q) == answer(rebuilt, q), q


def test_equally_weighted_values_are_kept_in_the_build_order(tmp_path: Path, tracks: list[Entity]) -> None:
    """Four artists one edit from "mara", equally popular, tie for the three matches a span keeps:
    the live vocabulary keeps the build's three (by name), though they were written in reverse."""
    base = tracks[:50]
    names = ["mura", "mora", "mira", "maro"]
    new = [Entity(id=f"tie-{n}", fields={"title": f"Qzxv Wplk {i}", "artist": n}, attributes={"artist": n},
                  popularity=1.0) for i, n in enumerate(names)]
    live, strategy, writer = live_attribute(base, tmp_path / "live")
    for e in new:  # one batch each: value ids in write order
        writer.apply(live.apply([Upsert(e)]))
    rebuilt = attribute(base + new, tmp_path / "fresh")
    got = strategy.understand(make_query("mara"), 8)
    assert got == rebuilt.understand(make_query("mara"), 8)
    assert {s.value for i in got for s in i.slots} == {"maro", "mira", "mora"}


def test_the_display_spelling_follows_uses_and_first_use_through_deletes(tmp_path: Path,
                                                                         tracks: list[Entity]) -> None:
    """One artist spelled two ways, "DJ Qorvane" by tracks 0, 2, 4 and "Dj Qorvane" by 1, 3: the
    display is the spelling used most (3 to 2). Deleting track 0 leaves 2 to 2, a tie that goes to
    the spelling used first in catalog order, now track 1's; deleting track 1 then makes it 2 to 1
    again; the catalog's first track, re-written by "Dj Qorvane", ties it 2 to 2 from the first
    place. At each step the live vocabulary displays what a fresh build of the catalog does."""
    spellings = ["DJ Qorvane", "Dj Qorvane", "DJ Qorvane", "Dj Qorvane", "DJ Qorvane"]
    new = [Entity(id=f"dj-{i}", fields={"title": f"Xylq Brennt {i}", "artist": s}, attributes={"artist": s},
                  popularity=1.0) for i, s in enumerate(spellings)]
    base = tracks[:50] + new
    live, strategy, writer = live_attribute(base, tmp_path / "live")

    def displayed(s: AttributeStrategy) -> set[str]:
        return {slot.value for i in s.understand(make_query("dj qorvane"), 3) for slot in i.slots
                if slot.field == "artist"}

    first = dataclasses.replace(base[0], fields={**base[0].fields, "artist": "Dj Qorvane"},
                                attributes={**base[0].attributes, "artist": "Dj Qorvane"})
    assert displayed(strategy) == {"DJ Qorvane"}
    steps: list[tuple[Upsert | Delete, str]] = [(Delete("dj-0"), "Dj Qorvane"), (Delete("dj-1"), "DJ Qorvane"),
                                                (Upsert(first), "Dj Qorvane")]
    for step, (write, expected) in enumerate(steps):
        writer.apply(live.apply([write]))
        base = [first if e.id == first.id and isinstance(write, Upsert) else e for e in base
                if not isinstance(write, Delete) or e.id != write.entity_id]
        assert displayed(strategy) == displayed(attribute(base, tmp_path / f"fresh-{step}")) == {expected}
