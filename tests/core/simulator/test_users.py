from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from core.catalog import Entity
from core.simulator import noise
from core.simulator.users import Intent, SimSearch, SimulatorConfig, UserSimulator, daypart
from core.simulator.world import MusicWorld


@pytest.fixture(scope="module")
def world(music_slice: list[Entity]) -> MusicWorld:
    return MusicWorld.from_entities(music_slice)


def _key(s: SimSearch) -> tuple[object, ...]:
    return (s.intent, s.user, s.text, tuple(sorted(s.context.items())), s.target, s.relevant.tolist())


def _stream(world: MusicWorld, seed: int, n: int = 300, **kwargs: object) -> list[SimSearch]:
    users = UserSimulator(world, SimulatorConfig(seed=seed, **kwargs))  # type: ignore[arg-type]
    return [users.next_search() for _ in range(n)]


def test_same_seed_same_stream_different_seed_different(world: MusicWorld) -> None:
    assert [_key(s) for s in _stream(world, 5)] == [_key(s) for s in _stream(world, 5)]
    assert [_key(s) for s in _stream(world, 5)] != [_key(s) for s in _stream(world, 6)]


def test_every_intent_appears_and_the_target_is_relevant(world: MusicWorld) -> None:
    stream = _stream(world, 0, 600)
    counts = Counter(s.intent for s in stream)
    assert set(counts) == set(Intent)
    assert counts[Intent.SPEARFISHING] > counts[Intent.CONTEXT]
    for s in stream:
        assert s.text.strip() == s.text and s.text
        assert s.target in set(s.relevant.tolist())
        assert np.all(np.diff(s.relevant) > 0)
        assert 0 <= int(s.context["hour"]) <= 23


def test_topical_queries_are_real_playlist_names(world: MusicWorld) -> None:
    names: dict[str, list[str]] = {}
    for v in world.facet_values("playlist"):
        names.setdefault(v.lower(), []).append(v)
    stream = _stream(world, 1, 100, intent_mix=(0.0, 1.0, 0.0, 0.0))
    assert {s.intent for s in stream} == {Intent.TOPICAL}
    for s in stream:
        assert any(np.array_equal(s.relevant, world.facet("playlist", v)) for v in names[s.text])


def test_spearfishing_noise_reaches_the_text(world: MusicWorld) -> None:
    clean = _stream(world, 2, 200, intent_mix=(1.0, 0.0, 0.0, 0.0), typo_rate=0.0, drop_rate=0.0)
    noisy = _stream(world, 2, 200, intent_mix=(1.0, 0.0, 0.0, 0.0), typo_rate=1.0, drop_rate=0.0)
    assert [s.target for s in clean] == [s.target for s in noisy]
    assert sum(a.text != b.text for a, b in zip(clean, noisy, strict=True)) > 100


def test_context_shifts_targets_toward_the_users_genre(world: MusicWorld) -> None:
    """With affinity_strength 1 users act on their favourite genres more than with 0."""
    def share(strength: float) -> float:
        users = UserSimulator(world, SimulatorConfig(seed=4, affinity_strength=strength,
                                                     intent_mix=(0.0, 0.0, 1.0, 0.0)))
        hits = [users.affinity[s.user, world.genre_of[s.target]] for s in (users.next_search() for _ in range(400))]
        return float(np.mean(hits))
    assert share(1.0) > share(0.0) + 0.05


def test_noise_functions() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        t = noise.typo("taylor swift love", rng)
        assert t != "taylor swift love" and t[0] == "t"
    assert noise.typo("a b c", rng) == "a b c"
    assert len(noise.drop_word("one two three", rng).split()) == 2
    assert "one two three".startswith(noise.prefix("one two three", rng))
    assert noise.prefix("one", rng) == "one"


def test_daypart_and_invalid_config() -> None:
    assert [daypart(h) for h in (0, 6, 12, 18, 22)] == ["night", "morning", "afternoon", "evening", "night"]
    with pytest.raises(ValueError, match="`hour` must be in"):
        daypart(24)
    with pytest.raises(ValueError, match="`intent_mix` must be 4 non-negative weights summing to 1"):
        SimulatorConfig(intent_mix=(0.5, 0.5, 0.5, 0.0))
    with pytest.raises(ValueError, match="`typo_rate` must be in"):
        SimulatorConfig(typo_rate=2.0)
    with pytest.raises(ValueError, match="`n_users` and `min_relevant` must be >= 1"):
        SimulatorConfig(n_users=0)
    with pytest.raises(ValueError, match="`popularity_scale` must be finite and > 0"):
        SimulatorConfig(popularity_scale=0.0)
    with pytest.raises(ValueError, match="`hour_boost` must be finite and >= 0"):
        SimulatorConfig(hour_boost=-1.0)


def test_context_names_the_strongest_genre_as_the_proto_spells_it(world: MusicWorld) -> None:
    """Regression: the simulator sent "affinity.<genre>", which the proto does not document and
    which a genre name holding a dot would have split wrongly."""
    from core.memory.context import context_bucket

    users = UserSimulator(world, SimulatorConfig(seed=3))
    for s in (users.next_search() for _ in range(100)):
        genre = world.genres[int(users.affinity[s.user].argmax())]
        assert [k for k in s.context if k.startswith("affinity.")] == [f"affinity.genre.{genre}"]
        assert context_bucket(s.context, ("affinity",)).startswith("affinity.genre=")
