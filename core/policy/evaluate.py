"""Off-policy evaluation of a candidate allocation policy on the broker's decision log.

The candidate's action distribution on each logged context is its rule's probabilities mixed with
its exploration floor, exactly as it would act (Thompson sampling's from `propensity_samples`
redraws, so seed it). DR uses a direct-method reward model: the mean logged reward of each
allocation (0 for allocations never logged), which is simple and keeps DR's double robustness.
"""

from __future__ import annotations

import numpy as np

from core.eventlog import BanditLog
from core.ope import Estimate, Estimator, LoggedFeedback, estimate_with_ci
from core.policy.policies import BanditPolicy


def action_distribution(policy: BanditPolicy, contexts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """float64 (n, A, 1): the candidate's probability of every allocation on each context."""
    out = np.empty((len(contexts), policy.n_allocations, 1))
    for t, x in enumerate(contexts):
        out[t, :, 0] = policy.probabilities(x, rng)[1]
    return out


def mean_reward_model(log: BanditLog, n_actions: int) -> np.ndarray:
    """float64 (n, A, 1): per allocation, the mean logged reward (the same for every round)."""
    sums = np.bincount(log.action, weights=log.reward, minlength=n_actions)
    counts = np.bincount(log.action, minlength=n_actions)
    means = np.divide(sums, counts, out=np.zeros(n_actions), where=counts > 0)
    return np.broadcast_to(means[None, :, None], (len(log.action), n_actions, 1))


def evaluate_policy(log: BanditLog, policy: BanditPolicy, *, seed: int = 0) -> dict[Estimator, Estimate]:
    """IPS, SNIPS and DR estimates (with 95% intervals) of `policy`'s value on the logged rounds.
    The log must come from the same strategies and allocation space (ValueError otherwise)."""
    if tuple(log.strategies) != tuple(policy.strategies):
        raise ValueError(f"the log is for strategies {log.strategies}, the policy for {policy.strategies}")
    if len(log.action) < 2:
        raise ValueError(f"need at least 2 logged decisions, but the log has {len(log.action)}")
    if int(log.action.max()) >= policy.n_allocations:
        raise ValueError("the log holds allocations outside the policy's space (other levels or budget?)")
    dist = action_distribution(policy, log.contexts, np.random.default_rng(seed))
    logged = LoggedFeedback(reward=log.reward, action=log.action, pscore=log.pscore)
    dm = mean_reward_model(log, policy.n_allocations)
    return {Estimator.IPS: estimate_with_ci(Estimator.IPS, logged, dist),
            Estimator.SNIPS: estimate_with_ci(Estimator.SNIPS, logged, dist),
            Estimator.DR: estimate_with_ci(Estimator.DR, logged, dist, estimated_rewards=dm)}
