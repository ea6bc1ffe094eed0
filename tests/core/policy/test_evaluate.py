from __future__ import annotations

import numpy as np
import pytest

from core.eventlog import BanditLog
from core.policy.evaluate import action_distribution, evaluate_policy
from core.policy.features import DIM
from core.policy.policies import BanditPolicy, PolicyConfig, PolicyKind

STRATEGIES = ("lexical", "semantic")
LEVELS, BUDGET = (0, 10, 25), 50


def uniform_log(n: int, rewards: np.ndarray, seed: int = 0) -> BanditLog:
    """Logged by a uniform-random policy; reward of allocation a is Bernoulli(rewards[a])."""
    rng = np.random.default_rng(seed)
    action = rng.integers(len(rewards), size=n)
    reward = (rng.random(n) < rewards[action]).astype(float)
    contexts = np.tile(np.eye(DIM)[0], (n, 1))
    return BanditLog(strategies=STRATEGIES, decision_ids=tuple(map(str, range(n))), contexts=contexts,
                     action=action, reward=reward, pscore=np.full(n, 1 / len(rewards)),
                     quotas=np.zeros((n, 2), dtype=np.int64))


def test_static_candidate_value_is_recovered_from_uniform_logs() -> None:
    candidate = BanditPolicy(STRATEGIES, DIM, PolicyConfig(kind=PolicyKind.STATIC, static_quotas=(25, 25),
                                                        levels=LEVELS, budget=BUDGET))
    rewards = np.full(candidate.n_allocations, 0.2)
    rewards[candidate.static_allocation] = 0.9
    estimates = evaluate_policy(uniform_log(20000, rewards), candidate)
    for e in estimates.values():
        assert e.lower <= 0.9 <= e.upper and abs(e.value - 0.9) < 0.05


@pytest.mark.parametrize("kind", list(PolicyKind))
def test_candidate_distributions_are_distributions(kind: PolicyKind) -> None:
    policy = BanditPolicy(STRATEGIES, DIM, PolicyConfig(kind=kind, levels=LEVELS, budget=BUDGET))
    dist = action_distribution(policy, np.tile(np.eye(DIM)[0], (5, 1)), np.random.default_rng(0))
    assert dist.shape == (5, policy.n_allocations, 1)
    np.testing.assert_allclose(dist.sum(axis=1), 1.0)
    assert (dist >= policy.floor / policy.n_allocations - 1e-12).all()


def test_log_of_other_strategies_is_refused() -> None:
    policy = BanditPolicy(("lexical", "memory"), DIM, PolicyConfig(levels=LEVELS, budget=BUDGET))
    with pytest.raises(ValueError, match="strategies"):
        evaluate_policy(uniform_log(10, np.full(policy.n_allocations, 0.5)), policy)
