from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from core.analysis import text_key
from core.catalog import Entity
from core.collapse import recording_copies
from core.collection import Collection
from core.memory.context import SEPARATOR, context_bucket, contextual_key
from core.memory.index import DEFAULT_CONTEXT_KEYS, MemoryStrategy
from core.policy.allocation import AllocationSpace, equal_split
from core.policy.features import DIM
from core.policy.policies import BanditPolicy, Decision, Outcome, PolicyConfig, PolicyKind
from core.reward import satisfies
from core.simulator.listening import ListeningConfig
from core.simulator.metrics import Records
from core.simulator.policies import ORACLE, TAUGHT_TARGET, PolicySpec, diagnostic_policies, standard_policies
from core.simulator.runner import (
    EXPERIMENT_BUDGET,
    EXPERIMENT_LEVELS,
    ExperimentConfig,
    LatencyModel,
    as_target,
    experiment_levels,
    oracle_allocation,
    run_experiment,
    simulated_searches,
    target_rewards,
    user_action,
)
from core.simulator.users import Intent, SimulatorConfig, UserSimulator
from core.simulator.world import MusicWorld
from core.types import EventType
from tests.core.simulator.conftest import STRATEGIES

SEARCHES = 300


@pytest.fixture(scope="module")
def results(music_slice: list[Entity], music_index: Path, tmp_path_factory: pytest.TempPathFactory
            ) -> dict[str, Records]:
    config = ExperimentConfig(searches=SEARCHES, seed=11)
    specs = standard_policies(STRATEGIES, config.levels, config.budget)
    return run_experiment(music_slice, music_index, STRATEGIES, specs, config, tmp_path_factory.mktemp("work"))


def test_every_policy_has_a_record_per_search(results: dict[str, Records]) -> None:
    assert set(results) == {"lexical-only", "semantic-only", "attribute-only", "memory-only", "static-equal",
                            "static-rrf", "epsilon-greedy", "linucb", "thompson", ORACLE}
    for rec in results.values():
        assert len(rec) == SEARCHES and rec.quotas.shape == (SEARCHES, len(STRATEGIES))
        assert np.all(rec.quotas.sum(axis=1) <= 200) and np.all(rec.called >= 1)
        assert np.all((rec.propensity > 0) & (rec.propensity <= 1))
        assert np.all(rec.fetched >= rec.candidates)
        assert np.all((rec.rr >= 0) & (rec.rr <= 1)) and np.all((rec.ndcg >= 0) & (rec.ndcg <= 1 + 1e-6))
        assert np.all(rec.regret >= -1e-6)
        assert np.isnan(rec.reward[~rec.feedback]).all() and not np.isnan(rec.reward[rec.feedback]).any()
        assert set(np.unique(rec.intent).tolist()) == {0, 1, 2, 3}
        summary = rec.summary()
        assert 0 <= summary["target_recall"] <= 1 and summary["searches"] == SEARCHES


def test_static_plans_keep_their_quotas_and_the_oracle_is_best(results: dict[str, Records]) -> None:
    np.testing.assert_array_equal(np.unique(results["lexical-only"].quotas, axis=0), [[200, 0, 0, 0]])
    np.testing.assert_array_equal(np.unique(results["static-rrf"].quotas, axis=0), [[50, 50, 50, 50]])
    oracle = results[ORACLE]
    assert oracle.regret.max() == pytest.approx(0.0, abs=1e-6)
    for name, rec in results.items():
        assert oracle.target_found.mean() >= rec.target_found.mean(), name
        # the target is never found by a plan when the oracle cannot find it
        assert not (rec.target_found & ~oracle.target_found).any(), name
    # the oracle fetches at most what is needed: never more than the budget, usually far less
    assert oracle.quotas.sum(axis=1).mean() < results["static-rrf"].quotas.sum(axis=1).mean()


def test_learning_policies_vary_their_allocations(results: dict[str, Records]) -> None:
    for name in ("epsilon-greedy", "linucb", "thompson"):
        assert len(np.unique(results[name].quotas, axis=0)) > 3, name


def test_a_run_is_deterministic_under_its_seed(music_slice: list[Entity], music_index: Path, tmp_path: Path) -> None:
    config = ExperimentConfig(searches=60, seed=3)
    spec = [PolicySpec(name="thompson", kind=PolicyKind.THOMPSON)]
    a = run_experiment(music_slice, music_index, STRATEGIES, spec, config, tmp_path / "a")["thompson"]
    b = run_experiment(music_slice, music_index, STRATEGIES, spec, config, tmp_path / "b")["thompson"]
    for field in ("quotas", "target_found", "rr", "ndcg", "reward", "propensity", "regret"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_every_search_teaches_once_when_users_always_reformulate(music_slice: list[Entity], music_index: Path,
                                                                   tmp_path: Path) -> None:
    """A user never satisfied by the list reformulates to the target: every search then teaches the
    policy once, and candidate recall of the satisfying entity is target recall."""
    quiet = ListeningConfig(target_attraction=0.0, relevant_attraction=0.0, irrelevant_attraction=0.0, reformulate=1.0)
    spec = [PolicySpec(name="thompson", kind=PolicyKind.THOMPSON)]
    config = ExperimentConfig(searches=40, seed=4, listening=quiet)
    rec = run_experiment(music_slice, music_index, STRATEGIES, spec, config, tmp_path / "a")["thompson"]
    assert rec.feedback.all()
    np.testing.assert_array_equal(rec.acted_found, rec.target_found)
    silent = ExperimentConfig(searches=40, seed=4, listening=replace(quiet, reformulate=0.0))
    rec = run_experiment(music_slice, music_index, STRATEGIES, spec, silent, tmp_path / "b")["thompson"]
    assert not rec.feedback.any() and np.isnan(rec.reward).all()


def test_oracle_takes_the_cheapest_allocation_that_retrieves_the_target() -> None:
    strategies = ("lexical", "semantic")
    space = AllocationSpace(strategies=strategies, levels=EXPERIMENT_LEVELS, budget=200)
    latency = LatencyModel().table(strategies, EXPERIMENT_LEVELS)
    levels = np.asarray(EXPERIMENT_LEVELS)
    hits = np.stack([levels >= 120, levels >= 40])  # ranked 120th by lexical, 40th by semantic
    full = np.tile(levels, (2, 1))  # every list fills its quota
    rewards = target_rewards(space, hits, full, latency, PolicyConfig())
    assert oracle_allocation(rewards, space).quotas == (0, levels[1])
    rewards = target_rewards(space, np.zeros((2, len(levels)), dtype=bool), full, latency, PolicyConfig())
    assert oracle_allocation(rewards, space).quotas == (levels[1], 0)  # the cheapest: lexical is the faster
    # semantic's lists hold 5 candidates whatever the quota: its whole budget costs 5 candidates
    short = np.stack([levels, np.minimum(levels, 5)])
    rewards = target_rewards(space, hits, short, latency, PolicyConfig())
    assert oracle_allocation(rewards, space).quotas == (0, levels[1])
    slower = PolicyConfig().cost_per_ms * (latency[1, -1] - latency[1, 1])  # only the latency differs
    assert rewards[space.index_of((0, levels[-1]))] == pytest.approx(rewards[space.index_of((0, levels[1]))] - slower)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"searches": 0}, "`searches` must be >= 1"),
    ({"k": 5}, r"`k` \(5\) must be >= `listening.shown` \(10\)"),
    ({"learn_every": 0}, "`learn_every` must be >= 1"),
])
def test_invalid_experiment_config(kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ExperimentConfig(**kwargs)  # type: ignore[arg-type]


def test_a_shown_copy_of_the_target_is_heard_as_the_target(music_slice: list[Entity]) -> None:
    """Regression (issue 13, duplicate collapse): the served list shows one copy of a recording,
    not necessarily the one the simulator drew as the target. The user wants the recording: a
    shown copy is played as the target (long, satisfied), and the event names the copy shown.
    Without copies the same entity is an irrelevant track and is never played."""
    users = UserSimulator(MusicWorld.from_entities(music_slice), SimulatorConfig(seed=3))
    sim = next(s for s in (users.next_search() for _ in range(200)) if s.intent == Intent.SPEARFISHING)
    copy = next(o for o in range(len(music_slice)) if o not in sim.relevant)
    shown = np.array([copy, *[o for o in range(len(music_slice)) if o not in sim.relevant and o != copy][:9]])
    sure = ExperimentConfig(listening=ListeningConfig(examination_decay=0.0, target_attraction=1.0,
                                                      irrelevant_attraction=0.0, reformulate=0.0)).listener()
    heard = user_action(sure, users, sim, shown, np.random.default_rng(0), frozenset((sim.target, copy)))
    assert heard[0].entity == copy and heard[0].rank == 1 and heard[0].type == EventType.PLAY
    assert satisfies(heard[0].type, heard[0].value) and len(heard) == 1
    assert user_action(sure, users, sim, shown, np.random.default_rng(0)) == []


def test_recording_copies_group_every_copy() -> None:
    copies = recording_copies(["a / x", "b / x", "a / x", "", "", "a / x"])
    assert copies == {0: frozenset({0, 2, 5}), 2: frozenset({0, 2, 5}), 5: frozenset({0, 2, 5})}


def test_the_runner_teaches_the_memory_per_context(music_slice: list[Entity], music_index: Path,
                                                            tmp_path: Path) -> None:
    """The runner's feedback carries each search's context to the memory strategy (the asking side,
    which missed it before issue 13's part G, is guarded in test_retrieval): after a run of context
    searches (vague queries whose target follows the user's favourite genre), the memory holds
    pairs under contextual keys of the (query, favourite genre) the searches had, and no others."""
    config = ExperimentConfig(searches=120, seed=6)
    simulator = SimulatorConfig(intent_mix=(0.0, 0.0, 0.0, 1.0))
    spec = next(s for s in standard_policies(STRATEGIES, config.levels, config.budget) if s.name == "memory-only")
    rec = run_experiment(music_slice, music_index, STRATEGIES, [spec], config, tmp_path, simulator)["memory-only"]
    _, searches = simulated_searches(music_slice, config, simulator)
    asked = {contextual_key(text_key(s.text), context_bucket(s.context, DEFAULT_CONTEXT_KEYS)) for s in searches}
    memory = MemoryStrategy.load(music_index, Collection.load(music_index),
                                 {"state_dir": str(tmp_path / f"memory-{config.seed}-memory-only")})
    learned = {k for k in memory.observed if SEPARATOR in k}
    assert rec.feedback.any() and learned and learned <= asked
    assert {k.split(SEPARATOR)[0] for k in learned} <= set(memory.observed)  # the plain keys learned too


def test_rank_measures_judge_a_shown_copy_as_the_target() -> None:
    """Regression (issue 13, duplicate collapse): MRR and nDCG judged the shown copy of the wanted
    recording as irrelevant when it was not the ordinal drawn as the target."""
    shown = np.array([7, 3, 9], dtype=np.int64)
    np.testing.assert_array_equal(as_target(shown, 4, frozenset({4, 9})), [7, 3, 4])
    np.testing.assert_array_equal(as_target(shown, 4, frozenset()), shown)
    rec = Records.empty("p", ("lexical",), 1)
    rec.set_ranking(0, as_target(shown, 4, frozenset({4, 9})), np.array([4]), 4)
    assert rec.rr[0] == pytest.approx(1 / 3)


def test_the_default_budget_keeps_the_experiments_levels() -> None:
    assert experiment_levels(EXPERIMENT_BUDGET) == EXPERIMENT_LEVELS


@pytest.mark.parametrize("budget", [4, 50, 100, 200, 1000])
def test_a_scaled_budget_keeps_the_allocation_space_and_the_equal_split(budget: int) -> None:
    """At any budget, as at 200: 53 allocations of four strategies, the whole budget to one alone,
    and the equal split at the budget's quarter level."""
    levels = experiment_levels(budget)
    space = AllocationSpace(strategies=STRATEGIES, levels=levels, budget=budget)
    assert len(space.allocations) == 53 and max(levels) == budget
    assert equal_split(space) == (levels[1],) * len(STRATEGIES)


@pytest.mark.parametrize("budget", [-1, 0, 3])
def test_a_budget_below_four_levels_is_rejected(budget: int) -> None:
    with pytest.raises(ValueError, match="`budget` must be >= 4"):
        experiment_levels(budget)


class _Recorder(BanditPolicy):
    """A static plan that keeps the outcomes it is taught, one list per learn()."""

    def __init__(self, strategies: tuple[str, ...], config: PolicyConfig) -> None:
        super().__init__(strategies, DIM, replace(config, kind=PolicyKind.STATIC))
        self.taught: list[Sequence[Outcome]] = []

    def learn(self, x: np.ndarray, decision: Decision, outcomes: Sequence[Outcome], reward: float) -> None:
        self.taught.append(outcomes)
        super().learn(x, decision, outcomes, reward)


def test_a_plan_taught_the_target_learns_from_every_search_what_the_user_wanted(
        music_slice: list[Entity], music_index: Path, tmp_path: Path) -> None:
    """Users who never act teach an ordinary plan nothing; the same plan taught the target
    (PolicySpec.teach_target) learns once per search, and a strategy's outcome finds the target
    exactly on the searches where the target was a candidate."""
    silent = ListeningConfig(target_attraction=0.0, relevant_attraction=0.0, irrelevant_attraction=0.0,
                             reformulate=0.0)
    config = ExperimentConfig(searches=40, seed=6, listening=silent)
    made: dict[str, _Recorder] = {}

    def recorder(name: str) -> Callable[[tuple[str, ...], PolicyConfig], _Recorder]:
        return lambda strategies, policy: made.setdefault(name, _Recorder(strategies, policy))

    specs = [PolicySpec(name="plain", kind=None, factory=recorder("plain")),
             PolicySpec(name="taught", kind=None, factory=recorder("taught"), teach_target=True)]
    rec = run_experiment(music_slice, music_index, STRATEGIES, specs, config, tmp_path)
    assert made["plain"].taught == [] and not rec["plain"].feedback.any()
    taught = made["taught"].taught
    assert len(taught) == config.searches
    found = np.array([any(o.rank > 0 for o in outcomes) for outcomes in taught])
    assert found.any() and not found.all()
    np.testing.assert_array_equal(found, rec["taught"].target_found)


def test_only_a_plan_that_learns_can_be_taught_the_target() -> None:
    with pytest.raises(ValueError, match="teach_target"):
        PolicySpec(name="attribute-only", kind=PolicyKind.STATIC, static_quotas=(0, 0, 200, 0), teach_target=True)
    assert [s.name for s in diagnostic_policies()] == [TAUGHT_TARGET]
