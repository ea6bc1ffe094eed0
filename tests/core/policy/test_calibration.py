"""Every policy's logged propensity is calibrated: on a fixed context, an allocation is chosen as
often as the mean propensity logged with it says (core.policy.calibration)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pytest

from core.policy.calibration import calibration
from core.policy.features import DIM, featurize
from core.policy.policies import RULES, BanditPolicy, Decision, Outcome, PolicyConfig, PolicyKind
from core.simulator.offpolicy import UniformAllocator

STRATEGIES = ("lexical", "semantic", "attribute", "memory")
CONTEXTS = (featurize("love", {"device": "mobile", "hour": "21"}),
            featurize("90s rock", {"device": "speaker", "hour": "7"}))
TRAINING = 300  # seeded updates before the check, so the learned policies' probabilities spread
THOMPSON_DECISIONS = 6000  # per context: 4-10 allocations chosen >= 50 times


def assert_calibrated(decisions: Sequence[Decision], *, at_least: int) -> None:
    """Every allocation chosen >= 50 times passes the 3-SE check, and there are >= at_least of them."""
    rows = calibration([d.allocation for d in decisions], [d.propensity for d in decisions])
    assert len(rows) >= at_least, [(r.allocation, r.count) for r in rows]
    assert [r for r in rows if not r.calibrated] == []


def trained(config: PolicyConfig) -> BanditPolicy:
    """A policy after TRAINING searches on CONTEXTS in which lexical (at rank 30) and attribute (at
    rank 5) each find the acted-on entity 60% of the time when called."""
    policy = BanditPolicy(STRATEGIES, DIM, config)
    rng = np.random.default_rng(0)
    found_at = {0: 30, 2: 5}
    for t in range(TRAINING):
        x = CONTEXTS[t % len(CONTEXTS)]
        quotas = policy.decide(x, rng).quotas
        policy.update(x, [Outcome(quota=q, rank=found_at.get(s, 0) if rng.random() < 0.6 else 0, answered=q > 0,
                                  returned=q) for s, q in enumerate(quotas)])
    return policy


def decide_many(decide: Callable[[np.ndarray, np.random.Generator], Decision], x: np.ndarray, n: int,
                seed: int) -> list[Decision]:
    rng = np.random.default_rng(seed)
    return [decide(x, rng) for _ in range(n)]


def test_calibration_rows_by_hand() -> None:
    # allocation 3 chosen 3 times of 4, logged 0.7, 0.8, 0.9; allocation 1 once
    rows = calibration([3, 1, 3, 3], [0.7, 0.2, 0.8, 0.9], min_count=1, max_z=3.0)
    assert [(r.allocation, r.count, r.total) for r in rows] == [(3, 3, 4), (1, 1, 4)]
    top = rows[0]
    assert top.frequency == 0.75 and top.mean_propensity == pytest.approx(0.8)
    # SE^2 = f (1 - f) / n + s^2 / count = 0.75 * 0.25 / 4 + 0.01 / 3
    assert top.se == pytest.approx(math.sqrt(0.046875 + 0.01 / 3))
    assert top.z == pytest.approx(0.05 / math.sqrt(0.046875 + 0.01 / 3)) and top.calibrated
    # chosen once: no spread of its own propensities; f = 0.25 against 0.2
    assert rows[1].se == pytest.approx(math.sqrt(0.25 * 0.75 / 4)) and rows[1].mean_propensity == 0.2
    assert calibration([3, 1, 3, 3], [0.7, 0.2, 0.8, 0.9], min_count=2) == rows[:1]


def test_an_always_chosen_allocation_needs_propensity_one() -> None:
    assert calibration([0] * 60, [1.0] * 60)[0].calibrated
    wrong = calibration([0] * 60, [0.5] * 60)[0]
    assert wrong.se == 0.0 and wrong.z == math.inf and not wrong.calibrated


@pytest.mark.parametrize(("allocations", "propensities", "kwargs", "match"), [
    ([0, 1], [0.5], {}, "one length"),
    ([], [], {}, "non-empty"),
    ([-1], [0.5], {}, "must be >= 0"),
    ([0], [0.0], {}, r"in \(0, 1\]"),
    ([0], [0.5], {"min_count": 0}, "min_count"),
])
def test_calibration_rejects_bad_input(allocations: list[int], propensities: list[float], kwargs: dict[str, float],
                                       match: str) -> None:
    with pytest.raises(ValueError, match=match):
        calibration(allocations, propensities, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def thompson() -> BanditPolicy:
    """The default config (propensities from 64 redraws, floor 0.01), trained."""
    return trained(PolicyConfig(kind=PolicyKind.THOMPSON))


@pytest.fixture(scope="module")
def thompson_decisions(thompson: BanditPolicy) -> list[list[Decision]]:
    """THOMPSON_DECISIONS decisions of `thompson` on each of CONTEXTS."""
    return [decide_many(thompson.decide, x, THOMPSON_DECISIONS, seed=1) for x in CONTEXTS]


@pytest.mark.parametrize("context", range(len(CONTEXTS)), ids=["love", "90s-rock"])
def test_thompson_sampling_is_calibrated(thompson_decisions: list[list[Decision]], context: int) -> None:
    assert_calibrated(thompson_decisions[context], at_least=3)


@pytest.mark.parametrize("trained_first", [False, True], ids=["cold-ties", "trained"])
@pytest.mark.parametrize(("kind", "settings"), [
    (PolicyKind.LINUCB, {"exploration_floor": 0.5}), (PolicyKind.EPSILON_GREEDY, {"epsilon": 0.5}),
], ids=["linucb", "epsilon-greedy"])
def test_argmax_rules_are_calibrated(kind: PolicyKind, settings: dict[str, float], trained_first: bool) -> None:
    """Cold, the optimistic prior makes each strategy alone at the whole budget tie exactly; the
    argmax takes the first, always, so its propensity stays exact. A large floor or epsilon spreads
    the rest over A = 14 allocations (levels 0, 100, 200), each chosen about 110 times."""
    config = PolicyConfig(kind=kind, levels=(0, 100, 200), **settings)  # type: ignore[arg-type]
    policy = trained(config) if trained_first else BanditPolicy(STRATEGIES, DIM, config)
    assert policy.n_allocations == 14
    assert_calibrated(decide_many(policy.decide, CONTEXTS[0], 3000, seed=2), at_least=14)


def test_static_plans_are_calibrated() -> None:
    policy = BanditPolicy(STRATEGIES, DIM, PolicyConfig(kind=PolicyKind.STATIC, static_quotas=(0, 0, 200, 0)))
    decisions = decide_many(policy.decide, CONTEXTS[0], 200, seed=3)
    assert {d.quotas for d in decisions} == {(0, 0, 200, 0)} and {d.propensity for d in decisions} == {1.0}
    assert_calibrated(decisions, at_least=1)


def test_the_uniform_logger_is_calibrated() -> None:
    logger = UniformAllocator(STRATEGIES, PolicyConfig())
    assert logger.n_allocations == 53
    assert_calibrated(decide_many(logger.decide, CONTEXTS[0], 6000, seed=4), at_least=53)


def _thompson_counting_the_acting_draw(policy: BanditPolicy, x: np.ndarray, rng: np.random.Generator
                                       ) -> tuple[int, np.ndarray]:
    """The rule before issue 12: the acting draw is the first of the `propensity_samples` redraws."""
    draws = policy.model.sample(x, policy.config.propensity_samples, rng)
    winners = (draws - policy.cost(x)[None, :]).argmax(axis=1)
    return int(winners[0]), np.bincount(winners, minlength=policy.n_allocations) / len(winners)


def test_thompson_propensity_is_not_inflated_by_the_acting_draw(thompson: BanditPolicy,
                                                                 thompson_decisions: list[list[Decision]],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression (issue 12): Thompson sampling counted its acting draw among the redraws that
    estimate its propensity, so the expected logged propensity of a chosen allocation was
    (1 + 63 p) / 64 instead of p (2.5 times too high at p = 0.01). On a context where some
    allocations have p of 0.01-0.05 that estimator fails the check the fixed one passes."""
    rows = calibration([d.allocation for d in thompson_decisions[0]], [d.propensity for d in thompson_decisions[0]])
    assert any(0.01 <= r.frequency <= 0.05 for r in rows) and all(r.calibrated for r in rows)
    monkeypatch.setitem(RULES, PolicyKind.THOMPSON, _thompson_counting_the_acting_draw)
    old = decide_many(thompson.decide, CONTEXTS[0], THOMPSON_DECISIONS, seed=1)
    rows = calibration([d.allocation for d in old], [d.propensity for d in old])
    inflated = [r for r in rows if 0.01 <= r.frequency <= 0.05 and not r.calibrated]
    assert inflated and all(r.mean_propensity > r.frequency for r in inflated)


def test_the_off_policy_distribution_is_the_same_unbiased_estimate(thompson: BanditPolicy,
                                                                  thompson_decisions: list[list[Decision]]) -> None:
    """core.policy.evaluate.action_distribution (pi_e of off-policy evaluation) averages, on a
    fixed context, to the frequencies with which the same policy acts there."""
    from core.policy.evaluate import action_distribution

    dist = action_distribution(thompson, np.tile(CONTEXTS[0], (2000, 1)), np.random.default_rng(6))[:, :, 0]
    assert np.allclose(dist.sum(axis=1), 1.0)
    decisions = thompson_decisions[0]
    chosen = np.bincount([d.allocation for d in decisions], minlength=thompson.n_allocations)
    frequent = np.flatnonzero(chosen >= 50)
    f = chosen[frequent] / len(decisions)
    se = np.sqrt(f * (1 - f) / len(decisions) + dist[:, frequent].var(axis=0, ddof=1) / len(dist))
    assert len(frequent) >= 3 and (np.abs(f - dist[:, frequent].mean(axis=0)) <= 3 * se).all()
