"""Off-policy estimators (core/ope.py): oracle tests against obp on the Open Bandit Dataset, properties, bad inputs.

The fixture in tests/fixtures/obd is a verbatim slice of the Open Bandit Dataset (Saito et al.,
arXiv:2008.07146; see its README.md). obp 0.4.1's own `OpenBanditDataset` loader cannot read it
under pandas >= 2 (it calls `DataFrame.drop(label, 1)`), so the CSV is read here with the csv module.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.ope import (
    Estimate,
    Estimator,
    IntervalConfig,
    IntervalMethod,
    LoggedFeedback,
    dr,
    estimate_with_ci,
    importance_weights,
    ips,
    snips,
)

OBD = Path(__file__).resolve().parents[1] / "fixtures" / "obd"
TOL = 1e-9  # the acceptance bound of issue 5: absolute difference to obp


@dataclass(frozen=True, kw_only=True)
class ObdSlice:
    logged: LoggedFeedback
    n_actions: int
    len_list: int
    user_features: np.ndarray  # str (n_rounds, 4), the hashed user_feature_0..3


def load_obd(behavior_policy: str, campaign: str = "men") -> ObdSlice:
    """Rounds in file order; position 1..3 becomes 0..2 (obp ranks it densely from 0, the same here)."""
    folder = OBD / behavior_policy / campaign
    with (folder / f"{campaign}.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    with (folder / "item_context.csv").open(newline="") as f:
        n_actions = len(list(csv.DictReader(f)))
    position = np.array([int(r["position"]) for r in rows], dtype=np.int64) - 1
    logged = LoggedFeedback(
        reward=np.array([float(r["click"]) for r in rows]),
        action=np.array([int(r["item_id"]) for r in rows], dtype=np.int64),
        pscore=np.array([float(r["propensity_score"]) for r in rows]),
        position=position,
    )
    users = np.array([[r[f"user_feature_{i}"] for i in range(4)] for r in rows])
    return ObdSlice(logged=logged, n_actions=n_actions, len_list=int(position.max()) + 1, user_features=users)


@pytest.fixture(scope="session", params=["random", "bts"])
def obd(request: pytest.FixtureRequest) -> ObdSlice:
    return load_obd(request.param)


def softmax_policy(data: ObdSlice, seed: int, temperature: float) -> np.ndarray:
    """A context-dependent stochastic policy: softmax over actions of per-(user, slot) random scores."""
    rng = np.random.default_rng(seed)
    _, user = np.unique(data.user_features, axis=0, return_inverse=True)
    scores = rng.normal(size=(int(user.max()) + 1, data.n_actions, data.len_list))[user.ravel()] / temperature
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def greedy_policy(data: ObdSlice, seed: int) -> np.ndarray:
    """A deterministic policy: the argmax of `softmax_policy`'s scores, one-hot over actions."""
    dist = softmax_policy(data, seed, 1.0)
    out = np.zeros_like(dist)
    best = dist.argmax(axis=1)  # (n_rounds, len_list)
    rows, slots = np.indices(best.shape)
    out[rows, best, slots] = 1.0
    return out


def obp_policies(data: ObdSlice) -> dict[str, np.ndarray]:
    """obp's own evaluation policies: uniform Random and Bernoulli TS with the ZOZOTOWN prior."""
    from obp.policy import BernoulliTS, Random

    n = data.logged.n_rounds
    uniform = Random(n_actions=data.n_actions, len_list=data.len_list, random_state=0)
    bts = BernoulliTS(n_actions=data.n_actions, len_list=data.len_list, is_zozotown_prior=True,
                      campaign="men", random_state=12345)
    return {"obp.Random": uniform.compute_batch_action_dist(n_rounds=n),
            "obp.BernoulliTS": bts.compute_batch_action_dist(n_sim=10_000, n_rounds=n)}


def reward_models(data: ObdSlice) -> dict[str, np.ndarray]:
    """q(x, a, k): a smoothed click rate per (action, slot), and seeded noise, shape (n, n_actions, len_list)."""
    log, shape = data.logged, (data.logged.n_rounds, data.n_actions, data.len_list)
    clicks = np.zeros(shape[1:])
    shown = np.zeros(shape[1:])
    np.add.at(clicks, (log.action, log.positions()), log.reward)
    np.add.at(shown, (log.action, log.positions()), 1.0)
    prior = log.reward.mean()
    ctr = (clicks + 10 * prior) / (shown + 10)
    noise = np.random.default_rng(3).uniform(0.0, 0.05, size=shape)
    return {"ctr": np.broadcast_to(ctr, shape).copy(), "noise": noise}


@pytest.fixture(scope="session")
def policies(obd: ObdSlice) -> dict[str, np.ndarray]:
    return {**obp_policies(obd), "softmax": softmax_policy(obd, 1, 0.5), "greedy": greedy_policy(obd, 2)}


def _obp_kwargs(log: LoggedFeedback, dist: np.ndarray) -> dict[str, Any]:
    return {"reward": log.reward, "action": log.action, "pscore": log.pscore, "position": log.position,
            "action_dist": dist}


class TestAgainstObp:
    """Oracle: obp 0.4.1 on the Open Bandit Dataset slices (random and Bernoulli-TS logging)."""

    def test_ips_and_snips_match_obp(self, obd: ObdSlice, policies: dict[str, np.ndarray]) -> None:
        from obp.ope import InverseProbabilityWeighting, SelfNormalizedInverseProbabilityWeighting

        for name, dist in policies.items():
            kw = _obp_kwargs(obd.logged, dist)
            want_ips = InverseProbabilityWeighting().estimate_policy_value(**kw)
            want_snips = SelfNormalizedInverseProbabilityWeighting().estimate_policy_value(**kw)
            assert abs(ips(obd.logged, dist) - want_ips) <= TOL, name
            assert abs(snips(obd.logged, dist) - want_snips) <= TOL, name
            assert ips(obd.logged, dist) == pytest.approx(want_ips, rel=1e-12, abs=1e-15), name
            assert snips(obd.logged, dist) == pytest.approx(want_snips, rel=1e-12, abs=1e-15), name

    def test_dr_matches_obp(self, obd: ObdSlice, policies: dict[str, np.ndarray]) -> None:
        from obp.ope import DoublyRobust

        for q_name, q in reward_models(obd).items():
            for name, dist in policies.items():
                want = DoublyRobust().estimate_policy_value(**_obp_kwargs(obd.logged, dist),
                                                            estimated_rewards_by_reg_model=q)
                got = dr(obd.logged, dist, q)
                assert abs(got - want) <= TOL, (name, q_name)
                assert got == pytest.approx(want, rel=1e-12), (name, q_name)

    def test_uniform_policy_on_random_logs_is_the_mean_click_rate(self) -> None:
        from obp.policy import Random

        data = load_obd("random")
        dist = Random(n_actions=data.n_actions, len_list=data.len_list).compute_batch_action_dist(
            n_rounds=data.logged.n_rounds)
        assert ips(data.logged, dist) == pytest.approx(data.logged.reward.mean(), rel=1e-12)
        assert snips(data.logged, dist) == pytest.approx(data.logged.reward.mean(), rel=1e-12)

    def test_bootstrap_interval_is_close_to_obps(self, obd: ObdSlice, policies: dict[str, np.ndarray]) -> None:
        """Different random streams, so only close: each bound within 10% of the interval's width."""
        from obp.ope import InverseProbabilityWeighting

        dist = policies["softmax"]
        theirs = InverseProbabilityWeighting().estimate_interval(**_obp_kwargs(obd.logged, dist),
                                                                 n_bootstrap_samples=4000, random_state=0)
        lo, hi = (v for k, v in theirs.items() if k != "mean")
        ours = estimate_with_ci(Estimator.IPS, obd.logged, dist,
                                interval=IntervalConfig(method=IntervalMethod.BOOTSTRAP, n_bootstrap=4000))
        assert ours.lower == pytest.approx(lo, abs=0.1 * (hi - lo))
        assert ours.upper == pytest.approx(hi, abs=0.1 * (hi - lo))


# ---- properties on synthetic logs -------------------------------------------------------------


def synthetic(rng: np.random.Generator, n: int, n_actions: int, len_list: int,
              ctr: np.ndarray | None = None) -> tuple[LoggedFeedback, np.ndarray]:
    """Uniform-random logging over actions; returns the logs and the logging policy's action_dist."""
    action = rng.integers(0, n_actions, size=n)
    position = rng.integers(0, len_list, size=n)
    p_click = np.full((n_actions, len_list), 0.3) if ctr is None else ctr
    reward = (rng.random(n) < p_click[action, position]).astype(np.float64)
    logged = LoggedFeedback(reward=reward, action=action, pscore=np.full(n, 1.0 / n_actions), position=position)
    return logged, np.full((n, n_actions, len_list), 1.0 / n_actions)


def random_policy(rng: np.random.Generator, n: int, n_actions: int, len_list: int) -> np.ndarray:
    dist = rng.dirichlet(np.ones(n_actions), size=(n, len_list))  # (n, len_list, n_actions)
    return np.ascontiguousarray(dist.transpose(0, 2, 1))


shapes = st.tuples(st.integers(2, 300), st.integers(1, 6), st.integers(1, 3))


@settings(max_examples=40, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**32 - 1))
def test_ips_of_the_logging_policy_is_the_mean_reward(shape: tuple[int, int, int], seed: int) -> None:
    logged, behavior = synthetic(np.random.default_rng(seed), *shape)
    assert ips(logged, behavior) == pytest.approx(logged.reward.mean(), rel=1e-12, abs=1e-15)
    assert snips(logged, behavior) == pytest.approx(logged.reward.mean(), rel=1e-12, abs=1e-15)


@settings(max_examples=25, deadline=None)
@given(n_actions=st.integers(2, 5), seed=st.integers(0, 2**32 - 1))
def test_ips_is_unbiased_for_another_policy(n_actions: int, seed: int) -> None:
    """The true value sum_a pi_e(a) ctr(a) lies within 6 standard errors of IPS (one failure in ~10^9)."""
    rng = np.random.default_rng(seed)
    ctr = rng.uniform(0.05, 0.95, size=(n_actions, 1))
    logged, _ = synthetic(rng, 4000, n_actions, 1, ctr)
    pi = rng.dirichlet(np.ones(n_actions))
    dist = np.broadcast_to(pi[None, :, None], (4000, n_actions, 1))
    est = estimate_with_ci(Estimator.IPS, logged, dist, interval=IntervalConfig(alpha=2e-9))
    assert est.lower <= float(pi @ ctr[:, 0]) <= est.upper


@settings(max_examples=40, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**32 - 1), scale=st.floats(0.01, 1.0))
def test_snips_is_invariant_to_scaling_pscores(shape: tuple[int, int, int], seed: int, scale: float) -> None:
    rng = np.random.default_rng(seed)
    logged, _ = synthetic(rng, *shape)
    pscore = rng.uniform(0.05, 1.0, size=shape[0])
    base = LoggedFeedback(reward=logged.reward, action=logged.action, pscore=pscore, position=logged.position)
    scaled = LoggedFeedback(reward=logged.reward, action=logged.action, pscore=pscore * scale,
                            position=logged.position)
    dist = random_policy(rng, *shape)
    assert snips(scaled, dist) == pytest.approx(snips(base, dist), rel=1e-12, abs=1e-15)
    assert ips(scaled, dist) == pytest.approx(ips(base, dist) / scale, rel=1e-12, abs=1e-15)


@settings(max_examples=40, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**32 - 1), max_weight=st.floats(0.1, 10.0))
def test_clipping_bounds_weights_and_only_lowers_ips(shape: tuple[int, int, int], seed: int,
                                                      max_weight: float) -> None:
    rng = np.random.default_rng(seed)
    logged, _ = synthetic(rng, *shape)
    dist = random_policy(rng, *shape)
    assert importance_weights(logged, dist, max_weight=max_weight).max() <= max_weight
    assert ips(logged, dist, max_weight=max_weight) <= ips(logged, dist) + 1e-15
    assert ips(logged, dist, max_weight=float("inf")) == ips(logged, dist)


@settings(max_examples=40, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**32 - 1))
def test_dr_reduces_to_ips_and_to_the_direct_method(shape: tuple[int, int, int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    logged, _ = synthetic(rng, *shape)
    dist = random_policy(rng, *shape)
    assert dr(logged, dist, np.zeros_like(dist)) == pytest.approx(ips(logged, dist), rel=1e-12, abs=1e-15)
    # A reward model that is exact on the logged rounds leaves only the model term.
    q = rng.uniform(0, 1, size=dist.shape)
    q[np.arange(shape[0]), logged.action, logged.positions()] = logged.reward
    rows, pos = np.arange(shape[0]), logged.positions()
    direct = float((dist[rows, :, pos] * q[rows, :, pos]).sum(axis=1).mean())
    assert dr(logged, dist, q) == pytest.approx(direct, rel=1e-12, abs=1e-15)


@settings(max_examples=30, deadline=None)
@given(shape=shapes, seed=st.integers(0, 2**32 - 1), estimator=st.sampled_from(list(Estimator)),
       method=st.sampled_from(list(IntervalMethod)))
def test_interval_terms_average_to_the_estimate(shape: tuple[int, int, int], seed: int, estimator: Estimator,
                                                method: IntervalMethod) -> None:
    rng = np.random.default_rng(seed)
    logged, _ = synthetic(rng, *shape)
    dist = random_policy(rng, *shape)
    q = rng.uniform(0, 1, size=dist.shape) if estimator is Estimator.DR else None
    config = IntervalConfig(method=method, n_bootstrap=200, seed=seed % 1000)
    est = estimate_with_ci(estimator, logged, dist, estimated_rewards=q, interval=config)
    point = {Estimator.IPS: ips, Estimator.SNIPS: snips}[estimator](logged, dist) if q is None \
        else dr(logged, dist, q)
    assert est.value == point
    assert est.terms.shape == (shape[0],) and est.terms.dtype == np.float64
    assert float(est.terms.mean()) == pytest.approx(est.value, rel=1e-9, abs=1e-12)
    assert est.lower <= est.upper
    if method is IntervalMethod.NORMAL:
        assert est.lower <= est.value <= est.upper


def test_bootstrap_is_repeatable_with_a_seed_and_agrees_with_the_normal_interval() -> None:
    logged, _ = synthetic(np.random.default_rng(5), 5000, 4, 2)
    dist = random_policy(np.random.default_rng(6), 5000, 4, 2)
    boot = IntervalConfig(method=IntervalMethod.BOOTSTRAP, n_bootstrap=1000, seed=11)
    for estimator in (Estimator.IPS, Estimator.SNIPS):
        a = estimate_with_ci(estimator, logged, dist, interval=boot)
        b = estimate_with_ci(estimator, logged, dist, interval=boot)
        normal = estimate_with_ci(estimator, logged, dist)
        assert (a.lower, a.upper) == (b.lower, b.upper)
        width = normal.upper - normal.lower
        assert a.lower == pytest.approx(normal.lower, abs=0.1 * width)
        assert a.upper == pytest.approx(normal.upper, abs=0.1 * width)


def test_logged_feedback_is_a_read_only_copy() -> None:
    reward = np.array([1.0, 0.0])
    logged = LoggedFeedback(reward=reward, action=np.array([0, 1], dtype=np.int32), pscore=np.array([0.5, 0.5]))
    reward[0] = 7.0
    assert logged.reward[0] == 1.0 and logged.action.dtype == np.int64 and logged.pscore.dtype == np.float64
    with pytest.raises(ValueError, match="read-only"):
        logged.reward[0] = 2.0


# ---- invalid inputs ---------------------------------------------------------------------------

GOOD: dict[str, Any] = {"reward": [1.0, 0.0, 1.0], "action": [0, 1, 2], "pscore": [0.25, 0.5, 1.0],
                        "position": [0, 1, 0]}


@pytest.mark.parametrize(("change", "match"), [
    ({"pscore": [0.0, 0.5, 1.0]}, r"`pscore` must be in \(0, 1\], but got 0.0 at index 0"),
    ({"pscore": [0.25, 1.5, 1.0]}, r"`pscore` must be in \(0, 1\], but got 1.5 at index 1"),
    ({"pscore": [0.25, -0.5, 1.0]}, r"`pscore` must be in \(0, 1\]"),
    ({"pscore": [0.25, float("nan"), 1.0]}, r"`pscore` must be in \(0, 1\], but got nan"),
    ({"pscore": [0.25, 0.5]}, r"`pscore` must have 3 values"),
    ({"reward": [1.0, float("nan"), 0.0]}, r"`reward` must be finite, but got nan at index 1"),
    ({"reward": [1.0, float("inf"), 0.0]}, r"`reward` must be finite"),
    ({"reward": [[1.0, 0.0, 1.0]]}, r"`reward` must be 1-dimensional, but got shape \(1, 3\)"),
    ({"reward": ["a", "b", "c"]}, r"`reward` must hold real numbers"),
    ({"reward": [], "action": [], "pscore": [], "position": []}, r"`reward` must hold at least one round"),
    ({"action": [0, -1, 2]}, r"`action` must be >= 0, but got -1 at index 1"),
    ({"action": [0.0, 1.0, 2.0]}, r"`action` must hold integers, but got dtype float64"),
    ({"action": [0, 1]}, r"`action` must have 3 values"),
    ({"position": [0, -2, 0]}, r"`position` must be >= 0, but got -2"),
    ({"position": [0, 1, 0, 1]}, r"`position` must have 3 values"),
])
def test_invalid_logged_feedback(change: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LoggedFeedback(**{**GOOD, **change})


def _dist(n: int = 3, n_actions: int = 3, len_list: int = 2) -> np.ndarray:
    return np.full((n, n_actions, len_list), 1.0 / n_actions)


def _outside_unit_interval() -> np.ndarray:
    """Sums to one over actions, but holds 1.5 and -0.25."""
    dist = _dist()
    dist[0, :, 0] = [1.5, -0.25, -0.25]
    return dist


@pytest.mark.parametrize(("logged_change", "dist", "match"), [
    ({}, _dist(n=4), r"`action_dist` must have 3 rounds"),
    ({}, _dist()[:, :, 0], r"`action_dist` must have shape \(n_rounds, n_actions, len_list\)"),
    ({}, _dist(n_actions=2), r"`action` must be < n_actions = 2"),
    ({}, _dist(len_list=1), r"`position` must be < len_list = 1"),
    ({"position": None}, _dist(), r"`position` must be given when `action_dist` has len_list = 2"),
    ({}, np.where(np.arange(2) == 0, np.nan, _dist()), r"`action_dist` must be finite"),
    ({}, _outside_unit_interval(),
     r"`action_dist` must hold probabilities in \[0, 1\], but got values in \[-0.25, 1.5\]"),
    ({}, _dist() * 0.9, r"`action_dist` must sum to 1 over actions"),
    ({}, np.zeros((3, 3, 2), dtype=object), r"`action_dist` must hold real numbers"),
])
def test_invalid_action_dist(logged_change: dict[str, Any], dist: np.ndarray, match: str) -> None:
    logged = LoggedFeedback(**{**GOOD, **logged_change})
    for estimate in (ips, snips):
        with pytest.raises(ValueError, match=match):
            estimate(logged, dist)
    with pytest.raises(ValueError, match=match):
        dr(logged, dist, np.zeros((3, 3, 2)))


@pytest.mark.parametrize(("call", "match"), [
    (lambda lg, d: dr(lg, d, np.zeros((3, 3, 1))), r"`estimated_rewards` must have the shape of `action_dist`"),
    (lambda lg, d: dr(lg, d, np.zeros((3, 3, 2), dtype=object)), r"`estimated_rewards` must hold real numbers"),
    (lambda lg, d: dr(lg, d, np.full((3, 3, 2), np.nan)), r"`estimated_rewards` must be finite"),
    (lambda lg, d: dr(lg, d, np.zeros((2, 3, 2))),
     r"`estimated_rewards` must have the shape of `action_dist` \(3, 3, 2\), but got \(2, 3, 2\)"),
    (lambda lg, d: ips(lg, d, max_weight=0.0), r"`max_weight` must be > 0 or None"),
    (lambda lg, d: ips(lg, d, max_weight=float("nan")), r"`max_weight` must be > 0 or None"),
    (lambda lg, d: importance_weights(lg, d, max_weight=-1.0), r"`max_weight` must be > 0 or None"),
    (lambda lg, d: estimate_with_ci(Estimator.DR, lg, d), r"`estimated_rewards` must be given for the DR"),
    (lambda lg, d: estimate_with_ci(Estimator.IPS, lg, d, estimated_rewards=np.zeros((3, 3, 2))),
     r"`estimated_rewards` is only used by DR"),
    (lambda lg, d: estimate_with_ci("ips", lg, d),  # type: ignore[arg-type]
     r"`estimator` must be one of \['ips', 'snips', 'dr'\]"),
    (lambda lg, d: snips(lg, np.broadcast_to(np.eye(3)[[1, 2, 0]][:, :, None], (3, 3, 2))),
     r"`action_dist` must give probability > 0 to at least one logged action"),
])
def test_invalid_estimator_arguments(call: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call(LoggedFeedback(**GOOD), _dist())


def test_an_interval_needs_two_rounds() -> None:
    logged = LoggedFeedback(reward=np.ones(1), action=np.zeros(1, dtype=np.int64), pscore=np.ones(1))
    with pytest.raises(ValueError, match=r"`logged` must hold at least 2 rounds for a confidence interval, but got 1"):
        estimate_with_ci(Estimator.IPS, logged, np.ones((1, 1, 1)))


@pytest.mark.parametrize(("change", "match"), [
    ({"alpha": 0.0}, r"`alpha` must be in \(0, 1\), but got 0.0"),
    ({"alpha": 1.0}, r"`alpha` must be in \(0, 1\)"),
    ({"alpha": float("nan")}, r"`alpha` must be in \(0, 1\)"),
    ({"method": "bootstrap"}, r"`method` must be an IntervalMethod"),
    ({"n_bootstrap": 0}, r"`n_bootstrap` must be an int >= 1, but got 0"),
    ({"n_bootstrap": 10.0}, r"`n_bootstrap` must be an int >= 1"),
    ({"seed": -1}, r"`seed` must be an int >= 0, but got -1"),
])
def test_invalid_interval_config(change: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        IntervalConfig(**change)


def test_estimate_repr_leaves_out_the_terms() -> None:
    logged, dist = synthetic(np.random.default_rng(0), 10, 2, 1)
    est = estimate_with_ci(Estimator.IPS, logged, dist)
    assert isinstance(est, Estimate) and "terms" not in repr(est)
