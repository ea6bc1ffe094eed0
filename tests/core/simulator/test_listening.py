"""core.simulator.listening: the listener's plays, skips and reformulations, against its parameters."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from core.reward import satisfies
from core.simulator.listening import ListeningConfig, ListeningModel, Reaction, TrackFacts
from core.types import EventType

N = 4000  # searches per rate: its standard error is at most 0.5 / sqrt(N) = 0.008
TARGET, TARGET_GENRE, TARGET_ARTIST = 100, 0, "Wanted Artist"


def facts(n: int, *, genre: int = TARGET_GENRE, artist: str = TARGET_ARTIST) -> TrackFacts:
    return TrackFacts(affinity=np.ones(n), genre=np.full(n, genre), artist=[artist] * n)


def react(model: ListeningModel, shown: list[int], relevant: list[int], rng: np.random.Generator,
          track_facts: TrackFacts | None = None) -> list[Reaction]:
    return model.react(shown, np.array(sorted(relevant), dtype=np.int64), TARGET, rng,
                       track_facts or facts(len(shown)), TARGET_GENRE, TARGET_ARTIST)


def within(rate: float, p: float) -> bool:
    """rate of N Bernoulli(p) draws within 4 standard errors of p."""
    return abs(rate - p) <= 4 * math.sqrt(p * (1 - p) / N) + 1e-9


def test_the_target_satisfies_more_often_than_another_relevant_track() -> None:
    model = ListeningModel()
    rng = np.random.default_rng(0)
    target = [react(model, [TARGET], [TARGET], rng) for _ in range(N)]
    other = [react(model, [7], [7, TARGET], rng) for _ in range(N)]

    def satisfied(events: list[Reaction], entity: int) -> bool:
        return any(e.entity == entity and e.rank > 0 and satisfies(e.type, e.value) for e in events)

    target_rate = np.mean([satisfied(e, TARGET) for e in target])
    other_rate = np.mean([satisfied(e, 7) for e in other])
    c = model.config
    assert within(float(target_rate), c.target_attraction)  # every play of the target satisfies
    # another relevant track of the wanted artist and genre: attracts, is not skipped, reaches 30 s
    expected = c.relevant_attraction * (1 - c.skip_near) * (1 - 0.15 / c.relevant_max_fraction)
    assert within(float(other_rate), expected) and other_rate < target_rate / 3


@pytest.mark.parametrize(("genre", "artist", "distance"), [
    (TARGET_GENRE, TARGET_ARTIST, 0.0), (TARGET_GENRE, "Someone Else", 0.5), (3, TARGET_ARTIST, 0.5),
    (3, "Someone Else", 1.0), (-1, "Someone Else", 1.0)])
def test_skips_grow_with_the_distance_from_what_the_user_wanted(genre: int, artist: str, distance: float) -> None:
    config = ListeningConfig(relevant_attraction=1.0, reformulate=0.0)
    model = ListeningModel(config)
    rng = np.random.default_rng(1)
    shown_facts = facts(1, genre=genre, artist=artist)
    assert model.distance(shown_facts, 0, TARGET_GENRE, TARGET_ARTIST) == distance
    first = [react(model, [7], [7, TARGET], rng, shown_facts)[0] for _ in range(N)]  # rank 1: always examined
    skip_rate = np.mean([e.type is EventType.SKIP for e in first])
    assert within(float(skip_rate), config.skip_near + (config.skip_far - config.skip_near) * distance)
    plays = [e.value for e in first if e.type is EventType.PLAY]
    assert plays and max(plays) <= config.relevant_max_fraction and min(plays) > 0


def test_an_unsatisfied_user_reformulates_to_the_target_or_abandons_at_the_configured_rate() -> None:
    config = ListeningConfig(irrelevant_attraction=0.0, reformulate=0.3)
    model = ListeningModel(config)
    rng = np.random.default_rng(2)
    searches = [react(model, list(range(10)), [TARGET], rng) for _ in range(N)]
    assert all(len(s) <= 1 for s in searches)  # nothing attracts: no play, no skip
    reformulated = [s[0] for s in searches if s]
    assert within(len(reformulated) / N, 0.3)
    assert all(e == Reaction(TARGET, 0, EventType.REFORMULATE, 0.0) for e in reformulated)


def test_the_user_goes_down_the_list_and_stops_at_the_first_satisfying_play() -> None:
    config = ListeningConfig(examination_decay=0.0, target_attraction=1.0, irrelevant_attraction=1.0,
                             relevant_attraction=1.0, skip_near=1.0, skip_far=1.0)
    model = ListeningModel(config)
    events = react(model, [1, 7, TARGET, 2], [7, TARGET], np.random.default_rng(3))
    assert [(e.entity, e.rank, e.type) for e in events] == [
        (1, 1, EventType.SKIP), (7, 2, EventType.SKIP), (TARGET, 3, EventType.PLAY)]
    assert config.target_min_fraction <= events[-1].value <= 1.0


def test_a_short_play_is_not_satisfying_and_the_user_goes_on() -> None:
    config = ListeningConfig(examination_decay=0.0, relevant_attraction=1.0, skip_near=0.0, skip_far=0.0,
                             relevant_max_fraction=0.1, target_attraction=1.0, reformulate=0.0)
    events = react(ListeningModel(config), [7, TARGET], [7, TARGET], np.random.default_rng(4))
    assert [e.type for e in events] == [EventType.PLAY, EventType.PLAY]
    assert events[0].value < 0.15 and not satisfies(events[0].type, events[0].value)
    assert events[1].entity == TARGET and satisfies(events[1].type, events[1].value)


def test_a_user_draws_the_same_uniforms_whatever_the_list() -> None:
    """Common random numbers: every plan of a seed sees the same user, whatever it shows."""
    model = ListeningModel()
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    react(model, [TARGET], [TARGET], a)
    react(model, list(range(10)), [3, TARGET], b, facts(10))
    assert a.random() == b.random()


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"shown": 0}, "`shown` must be >= 1"),
    ({"examination_decay": -1.0}, "`examination_decay` must be finite"),
    ({"skip_near": 1.5}, "`skip_near` must be in"),
    ({"reformulate": -0.1}, "`reformulate` must be in"),
    ({"skip_near": 0.5, "skip_far": 0.4}, "`skip_far` must be >= `skip_near`"),
])
def test_bad_config(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ListeningConfig(**kwargs)


def test_the_target_must_satisfy() -> None:
    with pytest.raises(ValueError, match="`satisfied_fraction` must be in"):
        ListeningModel(ListeningConfig(target_min_fraction=0.4), satisfied_fraction=0.5)
