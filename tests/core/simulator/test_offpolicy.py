"""The off-policy check (core/simulator/offpolicy.py): its logged columns, the estimators on a
uniform log of the small index, and the reward model."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from core.catalog import Entity
from core.ope import Estimator, ips
from core.policy.allocation import AllocationSpace
from core.policy.allocator import Frozen
from core.policy.features import DIM, FEATURE_NAMES
from core.policy.history import HISTORY_FEATURES
from core.policy.policies import BanditPolicy, Outcome, PolicyConfig
from core.simulator.offpolicy import (
    OPE_LEVELS,
    OffPolicyResult,
    UniformAllocator,
    check_target,
    fit_reward_model,
    logged_feedback,
    ope_rewards,
    policy_distribution,
    run_check,
)
from core.simulator.runner import ExperimentConfig
from tests.core.simulator.conftest import STRATEGIES

SEARCHES = 1500


@pytest.fixture(scope="module")
def result(music_slice: list[Entity], music_index: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> OffPolicyResult:
    config = ExperimentConfig(searches=SEARCHES, seed=5, levels=OPE_LEVELS)
    return run_check(music_slice, music_index, STRATEGIES, config, tmp_path_factory.mktemp("ope"),
                     train_searches=500)


def _space() -> AllocationSpace:
    return AllocationSpace(strategies=STRATEGIES, levels=OPE_LEVELS, budget=200)


def test_logged_columns_are_present_and_consistent(result: OffPolicyResult) -> None:
    log, space = result.log, _space()
    assert result.n_allocations == len(space.allocations) == 53
    assert log.allocation.shape == (SEARCHES,) and log.features.shape == (SEARCHES, DIM)
    np.testing.assert_array_equal(np.asarray(space.levels)[space.allocations[log.allocation]], log.quotas)
    np.testing.assert_allclose(log.propensity, 1 / 53, rtol=1e-6)
    assert np.isfinite(log.features).all() and (log.features[:, 0] == 1).all()  # the bias feature
    assert len(np.unique(log.allocation)) == 53  # the uniform logger covers the space
    exogenous = ~np.isin(FEATURE_NAMES, HISTORY_FEATURES)  # the query history is each run's own
    for name, run in result.runs.items():
        np.testing.assert_array_equal(run.features[:, exogenous], log.features[:, exogenous], err_msg=name)
    for name in ("static-rrf", "attribute-only"):
        assert len(np.unique(result.runs[name].allocation)) == 1, name
    assert (result.runs["attribute-only"].quotas == [0, 0, 200, 0]).all()
    reward = ope_rewards(log)
    assert (reward[~log.feedback] == 0).all() and np.array_equal(reward[log.feedback], log.reward[log.feedback])


def test_ips_of_the_logger_on_its_own_log_is_its_mean_reward(result: OffPolicyResult) -> None:
    log = result.log
    uniform = np.full((len(log), result.n_allocations, 1), 1 / result.n_allocations)
    assert ips(logged_feedback(log), uniform) == pytest.approx(ope_rewards(log).mean(), rel=1e-6)


def test_every_target_is_estimated_within_its_interval(result: OffPolicyResult) -> None:
    """The static targets must fall in the 95% intervals. The learned one's behaviour changes with
    the policy code, so one miss in twenty is expected of it: it must be within 3.3 standard errors."""
    assert [c.name for c in result.targets] == ["static-rrf", "attribute-only", "thompson-frozen"]
    for check in result.targets:
        assert check.measured == pytest.approx(ope_rewards(result.runs[check.name]).mean())
        for e in Estimator:
            est = check.estimates[e]
            assert est.lower < est.value < est.upper, (check.name, e)
            if check.name == "thompson-frozen":
                assert abs(est.value - check.measured) < 3.3 / 1.96 * (est.upper - est.value), (e, est, check)
            else:
                assert check.covers(e), (check.name, e, est, check.measured)
        assert 0 < check.ess < SEARCHES and check.matched > 0


def test_a_target_choosing_the_logged_allocation_gets_the_logged_reward(result: OffPolicyResult) -> None:
    """Common random numbers: same search, same clicks, same allocation, same reward. attribute-only
    does not call the memory strategy, the one part of a run that depends on its past feedback."""
    check = next(c for c in result.targets if c.name == "attribute-only")
    assert check.matched == (result.log.allocation == result.runs["attribute-only"].allocation[0]).sum()
    assert check.agreement == 1.0


def test_check_refuses_a_run_over_other_searches(result: OffPolicyResult) -> None:
    log, other = result.log, result.runs["static-rrf"]
    shifted = dataclasses.replace(other, features=np.roll(other.features, 1, axis=0))
    dist = np.full((len(log), result.n_allocations, 1), 1 / result.n_allocations)
    with pytest.raises(ValueError, match="must be a run over the logged searches"):
        check_target("x", log, dist, np.zeros((len(log), result.n_allocations)), shifted)


def test_reward_model_recovers_a_linear_reward() -> None:
    rng = np.random.default_rng(0)
    space = _space()
    n, a = 6000, len(space.allocations)
    x = np.column_stack([np.ones(n), rng.random((n, 3))])
    per_allocation = rng.normal(size=(x.shape[1], a))  # any reward linear in x per allocation
    action = rng.integers(a, size=n)
    truth = x @ per_allocation
    reward = truth[np.arange(n), action] + rng.normal(scale=0.1, size=n)
    q = fit_reward_model(x, action, reward, space, ridge=0.01)
    # the design crosses x with the allocation's shape, not with each allocation: it fits the
    # allocation intercepts exactly and the rest approximately
    assert q.shape == (n, a)
    assert np.corrcoef(q.ravel(), truth.ravel())[0, 1] > 0.8
    with pytest.raises(ValueError, match="`folds` must be >= 2"):
        fit_reward_model(x, action, reward, space, folds=1)
    with pytest.raises(ValueError, match="`ridge` must be > 0"):
        fit_reward_model(x, action, reward, space, ridge=0.0)


def test_uniform_logger_and_frozen_policy() -> None:
    config = PolicyConfig(levels=OPE_LEVELS, budget=200)
    logger = UniformAllocator(STRATEGIES, config)
    rng = np.random.default_rng(1)
    x = np.zeros(DIM)
    x[0] = 1.0
    decisions = [logger.decide(x, rng) for _ in range(2000)]
    assert {d.propensity for d in decisions} == {1 / 53}
    assert len({d.allocation for d in decisions}) == 53
    for d in decisions[:50]:
        assert d.quotas == logger.space.quotas(d.allocation)
        # a marginal is the share of allocations giving that strategy its quota
        alloc = logger.space.allocations
        for s, m in enumerate(d.marginals):
            assert m == pytest.approx((alloc[:, s] == alloc[d.allocation, s]).mean())
    policy = BanditPolicy(STRATEGIES, DIM, config)
    learner = copy.deepcopy(policy)
    frozen = Frozen(policy)

    def probe(p: BanditPolicy) -> np.ndarray:
        return policy_distribution(p, x[None], seed=7)

    before, latency = probe(policy), policy.latency_ms.copy()
    for _ in range(20):
        for allocator in (frozen, learner):
            decision = allocator.decide(x, rng)
            allocator.observe_latency(0, 5.0)
            allocator.learn(x, decision, [Outcome(quota=q, rank=1, answered=True) for q in decision.quotas], 1.0)
    np.testing.assert_array_equal(probe(policy), before)
    np.testing.assert_array_equal(policy.latency_ms, latency)
    assert not np.array_equal(probe(learner), before)  # the probe does see learning
