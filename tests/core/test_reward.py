from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from core.policy.models import ModelKind
from core.policy.policies import BanditPolicy, Outcome, PolicyConfig, PolicyKind
from core.reward import hits_by_level, satisfies, search_reward, strategy_outcomes
from core.types import EventType

LEVELS = (0, 10, 25, 50, 100)
COSTS: dict[str, Any] = {"cost_per_candidate": 0.001, "cost_per_ms": 0.01, "latency_ms": 20.0}


def test_hit_minus_costs() -> None:
    # lexical ranked the clicked entity 7th of 10; memory did not return it.
    r = search_reward((10, 0, 25), (7, 0, 0), EventType.CLICK, **COSTS)
    assert r == pytest.approx(1.0 - 0.001 * 35 - 0.01 * 20)


def test_miss_pays_only_costs_and_a_satisfying_event_gains_one() -> None:
    assert search_reward((10, 25), (0, 0), EventType.PLAY, **COSTS) == pytest.approx(-0.035 - 0.2)
    # the gain is 1 whatever the strength: a like of value 0.5 and a play of 40% satisfied alike
    assert search_reward((10, 25), (0, 3), EventType.LIKE, 0.5, **COSTS) == pytest.approx(1.0 - 0.035 - 0.2)
    assert search_reward((10, 25), (0, 3), EventType.PLAY, 0.4, **COSTS) == pytest.approx(1.0 - 0.035 - 0.2)


@pytest.mark.parametrize(("kind", "value", "entity", "expected"), [
    (EventType.PLAY, 0.0, None, True),   # value not given: a full play
    (EventType.PLAY, 0.15, None, True),  # exactly the threshold (30 s of a 3.5 min track)
    (EventType.PLAY, 0.149, None, False),
    (EventType.PLAY, 0.02, None, False),
    (EventType.PLAY, 1.0, None, True),
    (EventType.SKIP, 0.0, None, False),
    (EventType.SKIP, 0.9, None, False),
    (EventType.CLICK, 0.0, None, True),
    (EventType.LIKE, 0.0, None, True),
    (EventType.FAVORITE, 0.3, None, True),
    (EventType.REFORMULATE, 0.0, "t1", True),
    (EventType.REFORMULATE, 0.0, "", False),  # the session played nothing after searching again
])
def test_satisfies(kind: EventType, value: float, entity: str | None, expected: bool) -> None:
    assert satisfies(kind, value, entity) is expected


def test_the_threshold_is_a_setting() -> None:
    assert satisfies(EventType.PLAY, 0.3, satisfied_fraction=0.5) is False
    assert satisfies(EventType.PLAY, 0.3, satisfied_fraction=0.25) is True


@pytest.mark.parametrize(("kind", "value", "entity"), [
    (EventType.SKIP, 0.0, None), (EventType.PLAY, 0.05, None), (EventType.REFORMULATE, 0.0, "")])
def test_what_does_not_satisfy_gives_zero_and_teaches_nothing(kind: EventType, value: float,
                                                              entity: str | None) -> None:
    for ranks in ((1, 1), (0, 0)):
        assert search_reward((10, 25), ranks, kind, value, entity_id=entity, **COSTS) == 0.0
        outcomes = strategy_outcomes((10, 25), ranks, (True, True), kind, value=value, entity_id=entity)
        assert not any(o.answered for o in outcomes)


def test_a_reformulation_naming_the_entity_rewards_whether_it_was_a_candidate() -> None:
    hit = search_reward((10, 25), (4, 0), EventType.REFORMULATE, entity_id="t1", **COSTS)
    miss = search_reward((10, 25), (0, 0), EventType.REFORMULATE, entity_id="t1", **COSTS)
    assert hit == pytest.approx(1.0 - 0.035 - 0.2) and miss == pytest.approx(-0.035 - 0.2)
    lexical, _ = strategy_outcomes((10, 25), (4, 0), (True, True), EventType.REFORMULATE, entity_id="t1")
    assert lexical == Outcome(quota=10, rank=4, answered=True)


@pytest.mark.parametrize(("quotas", "hit"), [
    ((50, 10), True),   # what was asked: rank 30 is within 50
    ((25, 10), False),  # counterfactually smaller: 30 > 25, and strategy 2 never had it
    ((25, 100), True),  # strategy 2 found it at 60
    ((25, 50), False),
])
def test_counterfactual_quotas(quotas: tuple[int, int], hit: bool) -> None:
    r = search_reward(quotas, (30, 60), EventType.CLICK, cost_per_candidate=0.0, cost_per_ms=0.0, latency_ms=0.0)
    assert r == (1.0 if hit else 0.0)


def test_outcomes_reveal_every_level_up_to_the_quota() -> None:
    lexical, semantic, memory = strategy_outcomes((50, 25, 10), (20, 0, 3), (True, True, False), EventType.PLAY)
    assert lexical == Outcome(quota=50, rank=20, answered=True)
    np.testing.assert_array_equal(hits_by_level(lexical, LEVELS), [np.nan, 0, 1, 1, np.nan])
    np.testing.assert_array_equal(hits_by_level(semantic, LEVELS), [np.nan, 0, 0, np.nan, np.nan])
    assert np.isnan(hits_by_level(memory, LEVELS)).all()  # timed out: nothing learnt


def test_rank_beyond_quota_counts_as_absent_and_skips_teach_nothing() -> None:
    assert strategy_outcomes((10,), (11,), (True,), EventType.CLICK) == [Outcome(quota=10, rank=0, answered=True)]
    assert all(not o.answered for o in strategy_outcomes((10, 10), (1, 2), (True, True), EventType.SKIP))


def test_policy_update_learns_the_counterfactual_levels(monkeypatch: pytest.MonkeyPatch) -> None:
    """The independent model's expansion of an Outcome matches hits_by_level."""
    policy = BanditPolicy(("lexical", "memory"), dim=2,
                          config=PolicyConfig(kind=PolicyKind.LINUCB, levels=LEVELS, model=ModelKind.INDEPENDENT,
                                              ignored_features=()))
    seen: list[tuple[int, int, float]] = []
    n_levels = len(LEVELS)

    def record(x: np.ndarray, arms: np.ndarray, rewards: np.ndarray, weights: np.ndarray | None = None) -> None:
        seen.extend((int(a) // n_levels, int(a) % n_levels, float(r)) for a, r in zip(arms, rewards, strict=True))

    monkeypatch.setattr(policy.arms, "update", record)
    outcomes = strategy_outcomes((50, 10), (20, 4), (True, True), EventType.CLICK)
    policy.update(np.ones(2), outcomes)
    assert seen == [(0, 1, 0.0), (0, 2, 1.0), (0, 3, 1.0), (1, 1, 1.0)]
    for s, o in enumerate(outcomes):
        table = hits_by_level(o, LEVELS)
        assert [(lvl, table[lvl]) for (t, lvl, _) in seen if t == s] == [(lvl, r) for (t, lvl, r) in seen if t == s]


@pytest.mark.parametrize(("args", "kwargs", "match"), [
    (((10,), (1, 2), EventType.CLICK), {}, "`ranks` must have 1 entries"),
    (((-1,), (1,), EventType.CLICK), {}, "`quotas` must be >= 0"),
    (((10,), (-1,), EventType.CLICK), {}, "`ranks` must be >= 0"),
    (((10,), (1,), EventType.CLICK, 1.5), {}, "`value` must be in"),
    (((10,), (1,), EventType.CLICK), {"latency_ms": -1.0}, "`latency_ms` must be finite"),
    (((10,), (1,), EventType.CLICK), {"cost_per_ms": float("nan")}, "`cost_per_ms` must be finite"),
])
def test_bad_reward_inputs(args: tuple[object, ...], kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        search_reward(*args, **{**COSTS, **kwargs})  # type: ignore[arg-type]


def test_bad_outcome_inputs() -> None:
    with pytest.raises(ValueError, match="`answered` must have 2 entries"):
        strategy_outcomes((10, 10), (1, 1), (True,), EventType.CLICK)


def test_the_reward_charges_the_candidates_returned() -> None:
    costs: dict[str, Any] = {"cost_per_candidate": 0.001, "cost_per_ms": 0.0, "latency_ms": 0.0}
    # a filter that had 30 candidates to give for a quota of 200 costs 30, not 200
    assert search_reward((200,), (5,), EventType.CLICK, fetched=30, **costs) == pytest.approx(1.0 - 0.03)
    assert search_reward((200,), (5,), EventType.CLICK, **costs) == pytest.approx(1.0 - 0.2)  # unknown: the quota
    with pytest.raises(ValueError, match=r"`fetched` must be in \[0, sum\(quotas\) = 200\]"):
        search_reward((200,), (5,), EventType.CLICK, fetched=201, **costs)
    lexical, memory = strategy_outcomes((50, 10), (3, 0), (True, False), EventType.CLICK, returned=(50, None))
    assert lexical.returned == 50 and memory.returned is None
    with pytest.raises(ValueError, match="`returned` must have 2 entries"):
        strategy_outcomes((10, 10), (1, 1), (True, True), EventType.CLICK, returned=(3,))
