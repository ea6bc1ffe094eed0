"""Vowpal Wabbit's SquareCB as an external peer Allocator (benchmarks/vw_peer.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import vowpalwabbit

from benchmarks.vw_peer import NAME, SquareCBAllocator, shared_line, squarecb_spec, vw_arguments
from core.catalog import Entity
from core.policy.allocation import AllocationSpace
from core.policy.features import DIM, featurize
from core.policy.policies import Decision, PolicyConfig
from core.simulator.metrics import Records
from core.simulator.runner import EXPERIMENT_BUDGET, EXPERIMENT_LEVELS, ExperimentConfig, run_experiment
from tests.core.simulator.conftest import STRATEGIES

SEARCHES = 120
FULL = PolicyConfig(levels=EXPERIMENT_LEVELS, budget=EXPERIMENT_BUDGET)
CONTEXTS = [featurize(text, ctx) for text, ctx in (
    ("love", {"device": "mobile", "hour": "21"}),
    ("taylor swift shake it off", {"device": "desktop", "weekday": "6"}),
    ("90s rock", {"device": "speaker", "hour": "7", "affinity.rock": "0.8"}),
)]


def _reward(decision: Decision) -> float:
    """A synthetic reward: calling the third strategy pays, every candidate costs."""
    return float(decision.quotas[2] > 0) - 0.001 * sum(decision.quotas)


@pytest.fixture(scope="module")
def runs(music_slice: list[Entity], music_index: Path, tmp_path_factory: pytest.TempPathFactory
         ) -> tuple[Records, Records]:
    config = ExperimentConfig(searches=SEARCHES, seed=5)
    work = tmp_path_factory.mktemp("vw-work")
    a, b = (run_experiment(music_slice, music_index, STRATEGIES, [squarecb_spec()], config, work / name)[NAME]
            for name in ("a", "b"))
    return a, b


def test_a_run_stays_within_the_budget_and_logs_propensities(runs: tuple[Records, Records]) -> None:
    rec = runs[0]
    space = AllocationSpace(strategies=STRATEGIES, levels=EXPERIMENT_LEVELS, budget=EXPERIMENT_BUDGET)
    feasible = {space.quotas(i) for i in range(len(space.allocations))}
    assert len(rec) == SEARCHES
    assert all(tuple(q) in feasible for q in rec.quotas.tolist())
    assert np.all(rec.quotas.sum(axis=1) <= EXPERIMENT_BUDGET) and np.all(rec.called >= 1)
    assert np.all((rec.propensity > 0) & (rec.propensity <= 1))
    assert np.all(rec.regret >= -1e-6)
    assert rec.feedback.sum() > SEARCHES // 3  # so VW learned along the way
    assert len(np.unique(rec.quotas, axis=0)) > 3


def test_a_run_is_deterministic_under_its_seed(runs: tuple[Records, Records]) -> None:
    a, b = runs
    for field in ("quotas", "target_found", "rr", "ndcg", "reward", "propensity", "regret"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)


def test_decisions_sample_the_pmf_and_report_its_mass() -> None:
    policy = SquareCBAllocator(STRATEGIES, FULL)
    rng = np.random.default_rng(0)
    x = CONTEXTS[0]
    for _ in range(60):
        d = policy.decide(x, rng)
        policy.learn(x, d, [], _reward(d))
    p = policy.pmf(x)
    assert p.shape == (len(policy.space.allocations),) and p.sum() == pytest.approx(1.0) and 0.1 < p.max() < 1.0
    alloc = policy.space.allocations
    decisions = [policy.decide(x, rng) for _ in range(2000)]
    for d in decisions[:50]:
        assert d.propensity == pytest.approx(p[d.allocation], rel=1e-12)
        assert d.quotas == policy.space.quotas(d.allocation)
        want = [p[alloc[:, s] == alloc[d.allocation, s]].sum() for s in range(len(STRATEGIES))]
        np.testing.assert_allclose(d.marginals, want, rtol=1e-12)
    top = int(p.argmax())
    share = np.mean([d.allocation == top for d in decisions])
    assert abs(share - p[top]) < 4 * np.sqrt(p[top] * (1 - p[top]) / len(decisions))


def test_squarecb_learns_which_allocation_each_context_rewards() -> None:
    config = PolicyConfig(levels=(0, 10, 20), budget=20)
    policy = SquareCBAllocator(("lexical", "attribute"), config)
    assert len(policy.space.allocations) == 5
    xs = CONTEXTS[:2]
    best = [policy.space.index_of((20, 0)), policy.space.index_of((0, 20))]
    before = [policy.pmf(x)[b] for x, b in zip(xs, best, strict=True)]
    rng = np.random.default_rng(1)
    for t in range(300):
        d = policy.decide(xs[t % 2], rng)
        policy.learn(xs[t % 2], d, [], 1.0 if d.allocation == best[t % 2] else 0.0)
    after = [policy.pmf(x)[b] for x, b in zip(xs, best, strict=True)]
    assert before == pytest.approx([0.2, 0.2], abs=1e-6)
    assert min(after) > 0.9, after


def test_reused_action_examples_match_parsing_the_text_every_search() -> None:
    """Guards the cache of parsed action examples: VW splices the shared features into each action
    during predict and learn, so reused examples could drift from VW's own text path."""
    policy = SquareCBAllocator(STRATEGIES, FULL)
    reference = vowpalwabbit.Workspace(policy.arguments)
    rng = np.random.default_rng(2)
    for t in range(40):
        x = CONTEXTS[t % len(CONTEXTS)]
        lines = [shared_line(x), *policy.lines]
        q = np.asarray(reference.predict(lines), dtype=np.float64)
        np.testing.assert_array_equal(policy.pmf(x), q / q.sum())
        d = policy.decide(x, rng)
        reward = _reward(d)
        policy.learn(x, d, [], reward)
        lines[1 + d.allocation] = f"0:{-reward:.9g}:{d.propensity:.9g} {lines[1 + d.allocation]}"
        reference.learn(lines)


def test_vw_arguments() -> None:
    args = vw_arguments({"gamma_scale": 50, "elim": True, "interactions": ("xa", "aa"), "random_seed": None})
    assert args.startswith("--cb_explore_adf --squarecb --quiet ")
    assert "--gamma_scale 50 " in args and "--elim" in args and "--interactions xa --interactions aa" in args
    assert "random_seed" not in args


@pytest.mark.parametrize(("options", "match"), [
    ({"squarecb": False}, "always on"),
    ({"gamma-scale": 1.0}, "lower-case identifiers"),
    ({"no_such_option": 1}, "VW rejects"),
    ({"gamma_scale": "abc"}, "VW rejects"),
])
def test_invalid_vw_options(options: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        squarecb_spec(**options)


@pytest.mark.parametrize(("call", "match"), [
    (lambda: shared_line(np.zeros(5)), rf"`x` must have shape \({DIM},\)"),
    (lambda: SquareCBAllocator(("lexical", "my shard"), FULL), "must not hold whitespace"),
])
def test_invalid_inputs(call: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()  # type: ignore[operator]
