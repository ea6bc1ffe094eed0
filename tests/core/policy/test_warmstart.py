"""core.policy.warmstart: learning a BanditPolicy offline from another plan's logged searches."""

from __future__ import annotations

import numpy as np
import pytest

from core.policy.features import DIM, FEATURE_NAMES
from core.policy.policies import BanditPolicy, Outcome, PolicyConfig
from core.policy.warmstart import LoggedSearch, WarmStartConfig, importance_weights, warm_start

FOUR = ("lexical", "semantic", "attribute", "memory")
EQUAL = (50, 50, 50, 50)


def context(rng: np.random.Generator | None, **named: float) -> np.ndarray:
    """A feature vector: bias 1, a random query shape (none without `rng`), the named features set."""
    x = np.zeros(DIM)
    x[0] = 1.0
    if rng is not None:
        x[1 + int(rng.integers(4))] = 1.0
    for name, value in named.items():
        x[FEATURE_NAMES.index(name)] = value
    return x


def static_log(n: int, finder: str, seed: int) -> list[LoggedSearch]:
    """A static equal-split plan's searches where only `finder` ever lists the acted-on entity."""
    rng = np.random.default_rng(seed)
    return [LoggedSearch(features=context(rng), propensity=1.0,
                         outcomes=tuple(Outcome(quota=50, rank=int(rng.integers(1, 30)) if s == finder else 0,
                                                answered=True, returned=50) for s in FOUR))
            for _ in range(n)]


def uniform_log(n: int, finder: str, seed: int) -> list[LoggedSearch]:
    """A uniformly random plan's searches (propensity 1 / A, every allocation shown), where only
    `finder` ever lists the acted-on entity (rank 1-29)."""
    rng = np.random.default_rng(seed)
    space = BanditPolicy(FOUR, DIM).space
    out = []
    for _ in range(n):
        quotas = space.quotas(int(rng.integers(len(space.allocations))))
        outcomes = tuple(Outcome(quota=q, rank=int(rng.integers(1, 30)) if s == finder else 0, answered=q > 0,
                                 returned=q) for s, q in zip(FOUR, quotas, strict=True))
        out.append(LoggedSearch(features=context(rng), propensity=1.0 / len(space.allocations), outcomes=outcomes))
    return out


def share_calling(policy: BanditPolicy, strategy: str, n: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    s = FOUR.index(strategy)
    return float(np.mean([policy.decide(context(rng), rng).quotas[s] > 0 for _ in range(n)]))


def test_a_log_where_one_strategy_always_finds_the_entity_makes_the_policy_call_it_from_the_start() -> None:
    cold, warm = BanditPolicy(FOUR, DIM), BanditPolicy(FOUR, DIM)
    report = warm_start(warm, uniform_log(2000, "attribute", seed=5))
    # 1 / p = A = 53 > max_weight for every search: all clipped alike, so all weigh the same
    assert report.searches == 2000 and report.clipped == 2000 and report.effective_share == pytest.approx(1.0)
    warm_share, cold_share = share_calling(warm, "attribute", 400, 6), share_calling(cold, "attribute", 400, 6)
    assert warm_share >= 0.95  # the exploration floor (1%) draws the rest uniformly
    assert cold_share < 0.8


def test_a_static_log_teaches_the_allocations_it_shows() -> None:
    """The equal split (50 each) shows every allocation of quotas <= 50: those where the finder
    is called are learned as sure hits, the others as misses."""
    policy = BanditPolicy(FOUR, DIM)
    warm_start(policy, static_log(500, "attribute", seed=5))
    mean, _ = policy.arms.predict(policy.model_input(context(np.random.default_rng(1))))
    assert mean[policy.space.index_of((0, 0, 50, 0))] > 0.95
    assert mean[policy.space.index_of((50, 50, 0, 50))] < 0.05
    assert policy.arms.n[policy.space.index_of((0, 0, 100, 0))] == 0  # never shown


def test_a_static_log_teaches_exactly_what_learning_it_live_would() -> None:
    """A static plan logs propensity 1: every weight is 1, so the warm start is `update` per search."""
    log = static_log(200, "lexical", seed=7)
    live, warm = BanditPolicy(FOUR, DIM), BanditPolicy(FOUR, DIM)
    for s in log:
        live.update(s.features, s.outcomes)
    warm_start(warm, log)
    np.testing.assert_array_equal(warm.arms.n, live.arms.n)
    np.testing.assert_allclose(warm.arms.b, live.arms.b, rtol=1e-12)
    np.testing.assert_allclose(warm.arms.a_inv, live.arms.a_inv, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(warm.fill.b, live.fill.b, rtol=1e-12)


def confounded_log(n: int) -> list[LoggedSearch]:
    """Two equally common contexts that differ only in the device, a feature the default hit model
    ignores. Lexical lists the entity only on mobile, semantic only on desktop. The logger gives
    lexical@200 to mobile searches with p = 0.9 (semantic@200 with 0.1) and the reverse on desktop."""
    out = []
    for device, finder in (("device_mobile", 0), ("device_desktop", 1)):
        for i in range(n):
            chosen = finder if i < 0.9 * n else 1 - finder
            quotas = (200, 0) if chosen == 0 else (0, 200)
            outcomes = tuple(Outcome(quota=q, rank=10 if s == finder else 0, answered=q > 0)
                             for s, q in enumerate(quotas))
            out.append(LoggedSearch(features=context(None, **{device: 1.0}), outcomes=outcomes,
                                    propensity=0.9 if chosen == finder else 0.1))
    return out


@pytest.mark.parametrize(("max_weight", "expected"), [
    # 1 / 0.1 = 10 is not clipped: the weighted hit rate of lexical is the population's, 1/2
    (10.0, 0.5),
    # no weighting: lexical's arm sees mobile 9 times as often as desktop, 0.9
    (1.0, 0.9),
])
def test_propensity_weighting_recovers_the_hit_rate_of_the_whole_population(max_weight: float,
                                                                           expected: float) -> None:
    policy = BanditPolicy(("lexical", "semantic"), DIM)
    warm_start(policy, confounded_log(2000), WarmStartConfig(max_weight=max_weight))
    lexical_200 = policy.space.index_of((200, 0))
    # the hit model sees only the bias: the device is ignored (PolicyConfig.ignored_features)
    mean, _ = policy.arms.predict(policy.model_input(context(None, device_mobile=1.0)))
    # the prior (precision 20 at hit rate 1.0) against 2,000 searches' worth of evidence: within 0.01
    assert mean[lexical_200] == pytest.approx(expected, abs=0.01)


def test_weights_are_clipped_and_self_normalised_per_arm() -> None:
    np.testing.assert_allclose(importance_weights(np.array([1.0, 0.5, 0.01]), 10.0), [1.0, 2.0, 10.0])
    log = confounded_log(100)
    report = warm_start(BanditPolicy(("lexical", "semantic"), DIM), log, WarmStartConfig(max_weight=5.0))
    assert report.clipped == 20  # the 10% of each context at p = 0.1
    # each arm's evidence stays the number of searches that showed it (self-normalised)
    policy = BanditPolicy(("lexical", "semantic"), DIM)
    warm_start(policy, log)
    assert policy.arms.n[policy.space.index_of((200, 0))] == 100


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"max_weight": 0.5}, "`max_weight` must be finite and >= 1"),
    ({"max_weight": float("inf")}, "`max_weight` must be finite and >= 1"),
])
def test_invalid_config(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WarmStartConfig(**kwargs)


@pytest.mark.parametrize("propensity", [0.0, 1.5, -0.1])
def test_a_propensity_outside_0_1_is_refused(propensity: float) -> None:
    with pytest.raises(ValueError, match=r"`propensity` must be in \(0, 1\]"):
        LoggedSearch(features=np.zeros(DIM), outcomes=(), propensity=propensity)


def test_weights_must_be_positive() -> None:
    policy = BanditPolicy(("lexical",), DIM, PolicyConfig(ignored_features=()))
    with pytest.raises(ValueError, match="`weights` must be finite, > 0"):
        policy.arms.update(np.ones(DIM), np.array([0]), np.array([1.0]), np.array([0.0]))
