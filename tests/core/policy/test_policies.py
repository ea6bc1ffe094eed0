from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.policy.allocation import AllocationSpace, equal_split
from core.policy.features import DIM, featurize
from core.policy.models import ModelKind
from core.policy.policies import BanditPolicy, Outcome, PolicyConfig, PolicyKind
from core.types import Interpretation, Slot

STRATEGIES = ("lexical", "semantic", "attribute", "memory")
LEARNING_KINDS = [PolicyKind.THOMPSON, PolicyKind.LINUCB, PolicyKind.EPSILON_GREEDY]


def x_for(text: str = "dance monkey") -> np.ndarray:
    return featurize(text, {"hour": "9", "device": "mobile"})


def test_allocations_respect_the_budget_and_call_something() -> None:
    space = AllocationSpace(strategies=STRATEGIES, levels=(0, 10, 25, 50, 100), budget=100)
    quotas = np.asarray(space.levels)[space.allocations]
    assert (quotas.sum(axis=1) <= 100).all() and (quotas.sum(axis=1) > 0).all()
    assert len({tuple(r) for r in space.allocations.tolist()}) == len(space.allocations)
    assert space.quotas(space.index_of((25, 25, 25, 25))) == (25, 25, 25, 25)
    with pytest.raises(ValueError, match="exceed the budget"):
        space.index_of((100, 100, 0, 0))
    assert equal_split(space) == (25, 25, 25, 25)


def test_union_value_of_independent_strategies() -> None:
    space = AllocationSpace(strategies=("a", "b"), levels=(0, 10), budget=20)
    p = np.array([[[0.0, 0.5], [0.0, 0.4]]])
    values = dict(zip(map(tuple, space.allocations.tolist()), space.union_hit(p)[0],
                      strict=True))
    assert values[(1, 0)] == pytest.approx(0.5) and values[(0, 1)] == pytest.approx(0.4)
    assert values[(1, 1)] == pytest.approx(1 - 0.5 * 0.6)


@pytest.mark.parametrize("kind", [*LEARNING_KINDS, PolicyKind.STATIC])
def test_propensities_are_probabilities_of_what_was_chosen(kind: PolicyKind) -> None:
    policy = BanditPolicy(STRATEGIES, DIM, PolicyConfig(kind=kind, propensity_samples=256))
    rng = np.random.default_rng(0)
    for _ in range(50):
        d = policy.decide(x_for(), rng)
        assert 0 < d.propensity <= 1 and all(d.propensity <= m + 1e-12 <= 1 + 1e-12 for m in d.marginals)
        assert sum(d.quotas) <= policy.config.budget
    if kind is PolicyKind.STATIC:
        assert d.propensity == 1.0 and d.quotas == (50, 50, 50, 50)


@pytest.mark.parametrize("kind", LEARNING_KINDS)
def test_rule_probabilities_sum_to_one_and_exploration_keeps_its_floor(kind: PolicyKind) -> None:
    from core.policy.policies import RULES

    policy = BanditPolicy(STRATEGIES, DIM, PolicyConfig(kind=kind, exploration_floor=0.1))
    rng = np.random.default_rng(1)
    _, probs = RULES[kind](policy, x_for(), rng)
    mixed = 0.9 * probs + 0.1 / policy.n_allocations
    assert probs.sum() == pytest.approx(1.0) and mixed.sum() == pytest.approx(1.0)
    for _ in range(30):
        assert policy.decide(x_for(), rng).propensity >= 0.1 / policy.n_allocations


def test_empirical_choice_frequency_matches_the_recorded_propensity() -> None:
    """Epsilon-greedy's propensity is exact: observed frequencies must match it."""
    policy = BanditPolicy(("a", "b"), DIM, PolicyConfig(kind=PolicyKind.EPSILON_GREEDY, levels=(0, 10, 25),
                                                        budget=50, epsilon=0.3, exploration_floor=0.1))
    rng = np.random.default_rng(2)
    decisions = [policy.decide(x_for(), rng) for _ in range(20000)]
    counts = np.bincount([d.allocation for d in decisions], minlength=policy.n_allocations) / len(decisions)
    for d in decisions[:50]:
        assert counts[d.allocation] == pytest.approx(d.propensity, abs=0.015)


def test_outcomes_update_every_level_up_to_the_quota() -> None:
    config = PolicyConfig(levels=(0, 10, 25, 50), budget=100, model=ModelKind.INDEPENDENT)
    policy = BanditPolicy(STRATEGIES, DIM, config)
    policy.update(x_for(), [Outcome(quota=25, rank=12, answered=True), Outcome(quota=0, rank=0, answered=False),
                            Outcome(quota=50, rank=0, answered=False), Outcome(quota=10, rank=3, answered=True)])
    assert policy.arms.n.reshape(4, 4).tolist() == [[0, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0]]
    mean = policy.arms.predict(x_for())[0].reshape(4, 4)
    prior = BanditPolicy(STRATEGIES, DIM, config).arms.predict(x_for())[0].reshape(4, 4)
    assert mean[0, 1] < prior[0, 1] and mean[0, 2] > prior[0, 2]  # rank 12: a miss at top-10, a hit at top-25
    assert mean[3, 1] > prior[3, 1]
    np.testing.assert_array_equal(mean[1], prior[1])  # not called: nothing learned


def test_joint_model_learns_every_dominated_allocation() -> None:
    """One search reveals the union hit of every allocation within the chosen quotas, no more."""
    config = PolicyConfig(levels=(0, 10, 25, 50), budget=100)
    policy = BanditPolicy(STRATEGIES, DIM, config)
    space = policy.space
    prior = BanditPolicy(STRATEGIES, DIM, config).arms.predict(x_for())[0]
    # lexical at 25 ranked the entity 12th, memory at 10 ranked it 3rd; attribute timed out
    policy.update(x_for(), [Outcome(quota=25, rank=12, answered=True), Outcome(quota=0, rank=0, answered=False),
                            Outcome(quota=50, rank=0, answered=False), Outcome(quota=10, rank=3, answered=True)])
    learned = {space.quotas(int(a)) for a in np.flatnonzero(policy.arms.n)}
    assert learned == {(10, 0, 0, 0), (25, 0, 0, 0), (0, 0, 0, 10), (10, 0, 0, 10), (25, 0, 0, 10)}
    mean = policy.arms.predict(x_for())[0]
    for quotas, hit in [((10, 0, 0, 0), False), ((25, 0, 0, 0), True), ((10, 0, 0, 10), True)]:
        a = space.index_of(quotas)
        assert (mean[a] > prior[a]) == hit, quotas
    assert mean[space.index_of((50, 0, 0, 0))] == prior[space.index_of((50, 0, 0, 0))]


def test_joint_model_prefers_one_strategy_when_two_find_the_same_things() -> None:
    """Lexical and attribute always hit together at 50: the joint model learns that calling both at
    50 is no better than one at 50, where the independent model would count the pair twice."""
    config = PolicyConfig(levels=(0, 25, 50, 100), budget=100, cost_per_candidate=0.0)
    policy = BanditPolicy(("lexical", "attribute"), DIM, config)
    rng = np.random.default_rng(5)
    x = x_for()
    for _ in range(300):
        hit = rng.random() < 0.5
        policy.update(x, [Outcome(quota=50, rank=30 if hit else 0, answered=True)] * 2)
    both, alone = policy.space.index_of((50, 50)), policy.space.index_of((50, 0))
    mean = policy.arms.predict(x)[0]
    assert mean[both] == pytest.approx(mean[alone], abs=0.02) and mean[alone] == pytest.approx(0.5, abs=0.08)


def test_cold_start_tries_every_strategy_alone_at_the_whole_budget() -> None:
    """With no feedback yet, the optimistic default prior makes each strategy alone at the whole
    budget the likeliest choice, and spreads those tries over all strategies."""
    policy = BanditPolicy(STRATEGIES, DIM)
    rng = np.random.default_rng(4)
    quotas = [policy.decide(x_for(), rng).quotas for _ in range(200)]
    alone = [q for q in quotas if sorted(q) == [0, 0, 0, policy.config.budget]]
    assert len(alone) > 100
    assert all(sum(q[s] > 0 for q in alone) > 15 for s in range(len(STRATEGIES)))
    cautious = BanditPolicy(STRATEGIES, DIM, PolicyConfig(prior_hit_rate=0.5))  # session 2's: spread the budget
    called = [sum(q > 0 for q in cautious.decide(x_for(), rng).quotas) for _ in range(200)]
    assert np.mean([c >= 3 for c in called]) > 0.8


@pytest.mark.parametrize("kind", LEARNING_KINDS)
def test_learns_to_call_the_strategy_that_finds_things(kind: PolicyKind) -> None:
    """Only 'memory' ever holds the acted-on entity (at rank 5): the policy should learn to call it."""
    policy = BanditPolicy(STRATEGIES, DIM, PolicyConfig(kind=kind, exploration_floor=0.05))
    rng = np.random.default_rng(3)
    called = []
    for _ in range(600):
        x = x_for()
        d = policy.decide(x, rng)
        called.append(d.quotas[3] > 0)
        policy.update(x, [Outcome(quota=q, rank=5 if s == 3 else 0, answered=q > 0) for s, q in enumerate(d.quotas)])
    assert np.mean(called[-200:]) > 0.85


def test_state_round_trip(tmp_path: Path) -> None:
    policy = BanditPolicy(STRATEGIES, DIM)
    policy.update(x_for(), [Outcome(quota=25, rank=1, answered=True)] * 4)
    policy.observe_latency(0, 12.0)
    policy.save(tmp_path / "policy.npz")
    restored = BanditPolicy(STRATEGIES, DIM)
    restored.load(tmp_path / "policy.npz")
    np.testing.assert_array_equal(restored.arms.a_inv, policy.arms.a_inv)
    with pytest.raises(ValueError, match="a_inv"):
        BanditPolicy(STRATEGIES, DIM, PolicyConfig(model=ModelKind.INDEPENDENT)).load(tmp_path / "policy.npz")
    assert restored.latency_ms[0] == 12.0
    with pytest.raises(ValueError, match="saved for strategies"):
        BanditPolicy(("lexical",), DIM).load(tmp_path / "policy.npz")


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"exploration_floor": 1.5}, "exploration_floor"), ({"epsilon": -0.1}, "epsilon"),
    ({"propensity_samples": 0}, "propensity_samples"), ({"kind": "magic"}, "magic"),
    ({"exploration_floor": 0.0}, "must be > 0 for thompson"),
])
def test_bad_config(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PolicyConfig(**kwargs)  # type: ignore[arg-type]


def test_only_thompson_sampling_needs_an_exploration_floor() -> None:
    """Its estimated probability of the chosen allocation can be 0; the exact rules' cannot."""
    for kind in (PolicyKind.LINUCB, PolicyKind.EPSILON_GREEDY, PolicyKind.STATIC):
        policy = BanditPolicy(STRATEGIES, DIM, PolicyConfig(kind=kind, exploration_floor=0.0))
        assert policy.decide(x_for(), np.random.default_rng(0)).propensity > 0


def test_features_read_query_shape_context_and_understanding() -> None:
    interp = Interpretation(slots=(Slot(field="artist", value="Taylor Swift", span="tayler", start=0, end=6,
                                        confidence=0.8),), free_text="love", likelihood=0.7)
    x = featurize("tayler love", {"hour": "6", "weekday": "6", "device": "tv", "affinity.genre.pop": "3"}, [interp])
    names = dict(zip(__import__("core.policy.features", fromlist=["FEATURE_NAMES"]).FEATURE_NAMES, x, strict=True))
    assert names["tokens_2"] == 1 and names["qu_likelihood"] == pytest.approx(0.7) and names["qu_slot_artist"] == 1
    assert names["hour_sin"] == pytest.approx(1.0) and names["weekend"] == 1 and names["device_tv"] == 1
    assert names["affinity_max"] == 1.0 and names["qu_no_free_text"] == 0
    assert featurize("x", {"hour": "nan", "device": "fridge"})[15:].sum() == 0


def test_joint_predictions_are_monotone_in_the_quotas() -> None:
    """An allocation never tried that contains a well-learned one is predicted to find at least as
    much (each Thompson draw too), so the whole budget on one strategy is not stuck at its prior."""
    config = PolicyConfig(levels=(0, 50, 100, 200), budget=200)
    policy = BanditPolicy(("lexical", "attribute"), DIM, config)
    x = x_for()
    for _ in range(200):
        policy.update(x, [Outcome(quota=0, rank=0, answered=False), Outcome(quota=100, rank=60, answered=True)])
    space = policy.space
    learned, untried = space.index_of((0, 100)), space.index_of((0, 200))
    assert policy.arms.n[untried] == 0 and policy.model.mean(x)[learned] > 0.9
    assert policy.model.mean(x)[untried] >= policy.model.mean(x)[learned]
    draws = policy.model.sample(x, 32, np.random.default_rng(0))
    alloc = space.allocations
    for a in range(len(alloc)):
        dominated = np.flatnonzero((alloc <= alloc[a]).all(axis=1))
        assert (draws[:, a] >= draws[:, dominated].max(axis=1) - 1e-12).all()


@pytest.mark.parametrize("model", [ModelKind.JOINT, ModelKind.INDEPENDENT])
def test_thompson_winners_are_the_argmax_of_the_draws_less_the_cost(model: ModelKind) -> None:
    """The compiled pass picks, draw for draw, what numpy's monotone draws less the cost pick,
    the first allocation on ties (with no cost, monotone draws tie often)."""
    policy = BanditPolicy(STRATEGIES, DIM, PolicyConfig(model=model))
    rng = np.random.default_rng(3)
    for _ in range(200):  # a posterior with some spread between the arms
        outcome = [Outcome(quota=int(q), rank=int(r), answered=q > 0)
                   for q, r in zip(rng.choice(policy.config.levels, 4), rng.integers(0, 150, 4), strict=True)]
        policy.update(rng.random(DIM), outcome)
    ties = 0
    for t in range(300):
        x, seed = rng.random(DIM), int(rng.integers(1 << 31))
        cost = rng.random(policy.n_allocations) * 0.05 * (t % 2)
        draws = policy.model.sample(x, 33, np.random.default_rng(seed)) - cost[None, :]
        got = policy.model.winners(x, 33, np.random.default_rng(seed), cost)
        assert got.dtype == np.int64 and np.array_equal(got, draws.argmax(axis=1))
        ties += int((draws == draws.max(axis=1, keepdims=True)).sum(axis=1).max() > 1)
    assert ties > 10  # ties were exercised


def test_ignored_features_do_not_reach_the_hit_model() -> None:
    """Two contexts that differ only in ignored features (time, device, affinity by default) get
    the same predictions, and learning from one teaches the other identically."""
    morning = featurize("dance monkey", {"hour": "9", "device": "mobile", "affinity.pop": "0.9"})
    night = featurize("dance monkey", {"hour": "23", "device": "tv"})
    policy = BanditPolicy(STRATEGIES, DIM)
    outcome = [Outcome(quota=50, rank=3, answered=True)] + [Outcome(quota=0, rank=0, answered=False)] * 3
    for _ in range(20):
        policy.update(morning, outcome)
    assert np.array_equal(policy.model.mean(policy.model_input(morning)), policy.model.mean(policy.model_input(night)))
    assert np.array_equal(policy.probabilities(morning, np.random.default_rng(1))[1],
                          policy.probabilities(night, np.random.default_rng(1))[1])
    seeing = BanditPolicy(STRATEGIES, DIM, PolicyConfig(ignored_features=()))
    for _ in range(20):
        seeing.update(morning, outcome)
    assert not np.array_equal(seeing.model.mean(morning), seeing.model.mean(night))


def test_ignored_features_must_be_known_and_need_the_feature_layout() -> None:
    with pytest.raises(ValueError, match="ignored_features"):
        PolicyConfig(ignored_features=("hour_of_the_wolf",))
    with pytest.raises(ValueError, match="dim"):
        BanditPolicy(STRATEGIES, 3)
    assert BanditPolicy(STRATEGIES, 3, PolicyConfig(ignored_features=())).dim == 3


def test_the_fill_model_learns_how_full_lists_are_and_prices_allocations_by_them() -> None:
    """A strategy that returns 20 candidates whatever it is asked for costs 20 candidates at every
    level once learned, so the policy stops paying for quota it never gets."""
    config = PolicyConfig(kind=PolicyKind.LINUCB, ignored_features=(), cost_per_candidate=0.001, cost_per_ms=0.0)
    policy = BanditPolicy(STRATEGIES, DIM, config)
    x = x_for()
    space = policy.space
    whole = space.index_of((0, 0, 200, 0))
    assert policy.cost(x)[whole] == pytest.approx(0.2)  # the prior: a full list
    assert policy.expected_returned(x)[2].tolist() == [0.0, 50.0, 100.0, 200.0]
    for _ in range(1000):
        policy.update(x, [Outcome(quota=0, rank=0, answered=False), Outcome(quota=0, rank=0, answered=False),
                          Outcome(quota=200, rank=3, answered=True, returned=20),
                          Outcome(quota=50, rank=0, answered=True, returned=50)])
    np.testing.assert_allclose(policy.expected_returned(x)[2], [0, 20, 20, 20], atol=1.0)
    np.testing.assert_allclose(policy.expected_returned(x)[3, :2], [0, 50], atol=1.0)
    assert policy.expected_returned(x)[3, 3] == 200.0  # never asked at 200: still the prior
    assert policy.cost(x)[whole] == pytest.approx(0.02, abs=0.001)
    with pytest.raises(ValueError, match="`returned` must be >= 0"):
        policy.update(x, [Outcome(quota=50, rank=0, answered=True, returned=-1)] * 4)


def test_the_fill_model_is_saved_and_older_snapshots_load_without_it(tmp_path: Path) -> None:
    config = PolicyConfig(kind=PolicyKind.LINUCB, ignored_features=())
    policy = BanditPolicy(STRATEGIES, DIM, config)
    policy.update(x_for(), [Outcome(quota=100, rank=1, answered=True, returned=7)] * 4)
    policy.save(tmp_path / "p.npz")
    restored = BanditPolicy(STRATEGIES, DIM, config)
    restored.load(tmp_path / "p.npz")
    np.testing.assert_array_equal(restored.expected_returned(x_for()), policy.expected_returned(x_for()))
    with np.load(tmp_path / "p.npz") as data:
        np.savez(tmp_path / "old.npz", **{k: data[k] for k in data.files if not k.startswith("fill_")})
    old = BanditPolicy(STRATEGIES, DIM, config)
    old.load(tmp_path / "old.npz")
    np.testing.assert_array_equal(old.expected_returned(x_for()), BanditPolicy(STRATEGIES, DIM, config)
                                  .expected_returned(x_for()))


def test_a_decision_says_whether_it_explored() -> None:
    """Exploration is choosing other than the most probable allocation: a static policy never
    does; epsilon-greedy does on (about) its epsilon share, minus the draws that hit the greedy one."""
    x = np.ones(DIM)
    rng = np.random.default_rng(0)
    static = BanditPolicy(STRATEGIES, DIM, PolicyConfig(kind=PolicyKind.STATIC))
    assert not any(static.decide(x, rng).explored for _ in range(50))
    greedy = BanditPolicy(STRATEGIES, DIM,
                          PolicyConfig(kind=PolicyKind.EPSILON_GREEDY, epsilon=0.5, exploration_floor=0.0))
    decisions = [greedy.decide(x, rng) for _ in range(2000)]
    chosen = [d.allocation for d in decisions]
    best = max(set(chosen), key=chosen.count)
    assert all(d.explored == (d.allocation != best) for d in decisions)
    assert 0.4 < np.mean([d.explored for d in decisions]) < 0.6
