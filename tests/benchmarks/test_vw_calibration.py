"""Vowpal Wabbit SquareCB's logged propensities are calibrated (the check of
tests/core/policy/test_calibration.py, for the external peer of benchmarks/vw_peer.py)."""

from __future__ import annotations

import numpy as np

from benchmarks.vw_peer import SquareCBAllocator
from core.policy.policies import PolicyConfig
from tests.core.policy.test_calibration import CONTEXTS, STRATEGIES, TRAINING, assert_calibrated


def test_squarecb_is_calibrated() -> None:
    """After TRAINING searches where calling attribute pays 70% of the time. gamma_scale 10 (the
    benchmark's 300 makes it almost greedy this early) spreads the PMF: 20-30 of the 53 allocations
    get chosen >= 50 times in 5000 decisions."""
    vw = SquareCBAllocator(STRATEGIES, PolicyConfig(), {"gamma_scale": 10})
    rng = np.random.default_rng(0)
    for t in range(TRAINING):
        x = CONTEXTS[t % len(CONTEXTS)]
        d = vw.decide(x, rng)
        vw.learn(x, d, [], float(d.quotas[2] > 0 and rng.random() < 0.7) - 0.001 * sum(d.quotas))
    rng = np.random.default_rng(1)
    assert_calibrated([vw.decide(CONTEXTS[0], rng) for _ in range(5000)], at_least=10)
