"""The one interface every allocation policy offers: ltrr's bandits, external peers (Vowpal
Wabbit), the uniform logger of the off-policy check and the simulator's oracle.

The search pipeline (core.pipeline) asks an Allocator for a decision on a context, tells it the
latencies of the calls it made, and teaches it with each feedback event. Nothing in the pipeline
branches on which kind of allocator it holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from core.policy.allocation import AllocationSpace
from core.policy.policies import Decision, Outcome, PolicyConfig


class Allocator(Protocol):
    """space: the joint allocations it chooses among (its strategies are the pipeline's columns);
    config: the costs and allocation space every plan of one deployment or experiment shares."""

    space: AllocationSpace
    config: PolicyConfig

    def decide(self, x: np.ndarray, rng: np.random.Generator) -> Decision:
        """An allocation for context x (float64, (dim,)) with the propensity of choosing it."""
        ...

    def observe_latency(self, strategy: int, latency_ms: float) -> None:
        """One measured call latency of strategy `strategy` (column index), in ms."""
        ...

    def learn(self, x: np.ndarray, decision: Decision, outcomes: Sequence[Outcome], reward: float) -> None:
        """One feedback event on a search decided on context x. outcomes: per strategy, as
        core.reward.strategy_outcomes; reward: core.reward.search_reward."""
        ...


class Frozen:
    """An allocator that acts as `inner` does now and never changes: no learning, no latency
    updates, so its action probabilities are a fixed function of the context (what off-policy
    evaluation of a deployed snapshot assumes)."""

    def __init__(self, inner: Allocator) -> None:
        self.inner, self.space, self.config = inner, inner.space, inner.config

    def decide(self, x: np.ndarray, rng: np.random.Generator) -> Decision:
        return self.inner.decide(x, rng)

    def observe_latency(self, strategy: int, latency_ms: float) -> None:
        """Nothing: a frozen allocator's costs stay as they were."""

    def learn(self, x: np.ndarray, decision: Decision, outcomes: Sequence[Outcome], reward: float) -> None:
        """Nothing: a frozen allocator does not learn."""
