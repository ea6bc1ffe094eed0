"""The in-process experiment: simulated searches through the same core objects the broker runs.

Per search, the broker's pipeline (core.pipeline: decide -> fan-out -> serve; judge -> learn),
with the strategies answering the fan-out in process: the attribute strategy's understanding ->
SearchPipeline.decide -> each called strategy's top-quota list (PolicyRun.answers) ->
SearchPipeline.serve (merge, rank) -> the user's action (core.simulator.clicks) ->
SearchPipeline.judge and learn (the allocator and the query history), and the memory strategy's
learn for the acted-on entity, in batches of `learn_every` (the broker forwards through its outbox).

Latency is simulated, so runs are deterministic: a strategy called with quota q takes
`base_ms + per_candidate_ms * q` (LatencyModel), the search waits for the slowest one called, and
the policy sees these through observe_latency as the broker sees measured ones.

Regret is measured on the target (the track the user wants), not on the noisy action: for an
allocation a, r(a) = 1[target in the union of a's lists] - cost_per_candidate * (candidates a's
lists hold) - cost_per_ms * latency(a). The oracle takes argmax_a r(a), which with positive costs is the
cheapest allocation that retrieves the target (or the cheapest allocation of all when none
does: its hit is 0 whatever it does); per-search regret is r(oracle) - r(chosen).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from core.catalog import Entity
from core.eventlog import DecisionRecord
from core.pipeline import Answer, CallStatus, SearchPipeline
from core.policy.allocation import DEFAULT_LEVELS, AllocationSpace
from core.policy.features import DIM
from core.policy.policies import Decision, PolicyConfig
from core.ranking import EntityTable, make_ranker
from core.simulator.clicks import Action, ClickConfig, ClickModel
from core.simulator.metrics import Records, ndcg_at, reciprocal_rank
from core.simulator.policies import Foresight, PolicySpec, oracle_allocation
from core.simulator.retrieval import InProcessStrategies
from core.simulator.users import SimSearch, SimulatorConfig, UserSimulator
from core.simulator.world import MusicWorld
from core.types import EventType, FeedbackEvent, StrategyKind

EXPERIMENT_LEVELS = DEFAULT_LEVELS
EXPERIMENT_BUDGET = 200
SIM_EPOCH = 1_800_000_000.0  # simulated wall clock at search 0 (seconds since the Unix epoch)
SECONDS_PER_SEARCH = 1.0
DEFAULT_BASE_MS = {"lexical": 1.0, "semantic": 2.0, "attribute": 1.5, "memory": 0.5}
DEFAULT_PER_CANDIDATE_MS = {"lexical": 0.01, "semantic": 0.01, "attribute": 0.005, "memory": 0.002}


@dataclass(frozen=True, kw_only=True)
class LatencyModel:
    """Simulated call latency in ms: base_ms[s] + per_candidate_ms[s] * quota (1 ms and 0.01 ms
    for strategies not named)."""

    base_ms: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_BASE_MS))
    per_candidate_ms: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_PER_CANDIDATE_MS))

    def __post_init__(self) -> None:
        for name in ("base_ms", "per_candidate_ms"):
            bad = {k: v for k, v in getattr(self, name).items() if not v >= 0}
            if bad:
                raise ValueError(f"`{name}` must hold values >= 0, but got {bad}")

    def table(self, strategies: Sequence[str], levels: Sequence[int]) -> np.ndarray:
        """float64 (S, L): latency of strategy s called at level l (0 for level 0)."""
        lv = np.asarray(levels, dtype=np.float64)
        out = np.array([[self.base_ms.get(s, 1.0) + self.per_candidate_ms.get(s, 0.01) * q for q in lv]
                        for s in strategies])
        out[:, lv == 0] = 0.0
        return out


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    """searches: per policy run; seed: fixes the searches, the clicks and the policies' draws;
    k: results shown and ranked; levels, budget: the allocation space every policy shares;
    learn_every: feedback reaches the memory strategy in batches of this many events (the broker
    forwards it asynchronously too; batching saves one fsync per event)."""

    searches: int = 1000
    seed: int = 0
    k: int = 10
    levels: tuple[int, ...] = EXPERIMENT_LEVELS
    budget: int = EXPERIMENT_BUDGET
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    clicks: ClickConfig = field(default_factory=ClickConfig)
    latency: LatencyModel = field(default_factory=LatencyModel)
    learn_every: int = 16

    def __post_init__(self) -> None:
        if self.learn_every < 1:
            raise ValueError(f"`learn_every` must be >= 1, but got {self.learn_every}")
        if self.searches < 1:
            raise ValueError(f"`searches` must be >= 1, but got {self.searches}")
        if not 1 <= self.k <= 100:
            raise ValueError(f"`k` must be in [1, 100], but got {self.k}")
        if self.k < self.clicks.shown:
            raise ValueError(f"`k` ({self.k}) must be >= `clicks.shown` ({self.clicks.shown})")


class Audience(Protocol):
    """Who acts on the results: the user model's per-user genre affinity multiplier.
    core.simulator.users.UserSimulator for the music simulator; a benchmark without users returns
    ones (benchmarks.routing)."""

    def affinity_multiplier(self, user: int, ordinals: np.ndarray) -> np.ndarray: ...


SearchObserver = Callable[[int, SimSearch, DecisionRecord, np.ndarray, np.ndarray], None]
"""Called after every served search with (t, the search, its DecisionRecord, hits bool (S, L),
returned int64 (S, L)) (the level tables of PolicyRun.step): what a benchmark measures beyond
Records, such as the final ranking against its own judgments (benchmarks.routing)."""


def draw_searches(users: UserSimulator, n: int) -> list[SimSearch]:
    """The next n searches of `users` (every policy of a seed replays the same list)."""
    return [users.next_search() for _ in range(n)]


def simulated_searches(entities: Sequence[Entity], config: ExperimentConfig, simulator: SimulatorConfig | None = None
                       ) -> tuple[UserSimulator, list[SimSearch]]:
    """The users of config.seed over `entities` and their first config.searches searches: what every
    policy, in process or over gRPC, replays."""
    users = UserSimulator(MusicWorld.from_entities(entities), replace(simulator or SimulatorConfig(), seed=config.seed))
    return users, draw_searches(users, config.searches)


def click_generator(seed: int) -> np.random.Generator:
    """The click model's uniforms for a run of `seed`: common random numbers, every policy of a
    seed sees the same ones."""
    return np.random.default_rng([seed, 1])


def user_action(clicks: ClickModel, users: Audience, sim: SimSearch, shown: np.ndarray,
                rng: np.random.Generator) -> Action:
    """What the user of `sim` does with the ranked ordinals `shown` (int64, best first): the click
    model, with the user's genre affinity for the visible results."""
    return clicks.act(shown, sim.relevant, sim.target, rng,
                      users.affinity_multiplier(sim.user, shown[: clicks.config.shown]))


def action_event(action: Action) -> EventType:
    """The feedback event of an action: a click from the list, or a play reached another way."""
    return EventType.PLAY if action.follow_up else EventType.CLICK


def target_rewards(space: AllocationSpace, target_hits: np.ndarray, returned: np.ndarray, latency: np.ndarray,
                   config: PolicyConfig) -> np.ndarray:
    """float64 (A,): r(a) of the module docstring for every allocation. target_hits: bool (S, L),
    is the target in strategy s's top-levels[l] list; returned: int64 (S, L), how many candidates
    that list holds; latency: float64 (S, L)."""
    alloc = space.allocations
    cols = np.arange(alloc.shape[1])[None, :]
    hit = target_hits[cols, alloc].any(axis=1)
    lat = latency[cols, alloc].max(axis=1)
    return hit - config.cost_per_candidate * space.fetched(returned) - config.cost_per_ms * lat


class PolicyRun:
    """One plan over one list of searches through core.pipeline, search by search (module
    docstring). What differs from the broker is only who answers the fan-out: the strategies in
    process, with simulated latencies."""

    def __init__(self, spec: PolicySpec, config: ExperimentConfig, strategies: InProcessStrategies,
                 users: Audience, table: EntityTable, observer: SearchObserver | None = None) -> None:
        self.spec, self.config, self.strategies, self.users = spec, config, strategies, users
        self.observer = observer
        names = strategies.names
        self.foresight = Foresight()
        self.allocator = spec.allocator(names, replace(config.policy, levels=config.levels, budget=config.budget),
                                        DIM, self.foresight)
        self.space = self.allocator.space
        self.pipeline = SearchPipeline(self.allocator, make_ranker(spec.ranker, table), policy_name=spec.name)
        self.clicks = ClickModel(config.clicks)
        self.latency = config.latency.table(names, config.levels)
        self.click_rng = click_generator(config.seed)
        self.rng = np.random.default_rng([config.seed, 2])
        self.learner = strategies.learner()
        self.pending: list[FeedbackEvent] = []
        self.now = SIM_EPOCH

    def flush(self) -> None:
        """Hand the pending feedback to the memory strategy."""
        if self.learner is not None and self.pending:
            self.learner.learn(self.pending)
        self.pending = []

    def answers(self, text: str, decision: Decision) -> list[Answer]:
        """The in-process fan-out: every called strategy answers its top-quota list in its
        simulated latency (core.pipeline.Answer, column order)."""
        level = self.space.allocations[decision.allocation]
        lists = iter(self.strategies.lists(text, decision.quotas))
        return [Answer(name, q, CallStatus.OK, float(self.latency[s, level[s]]), next(lists)) if q > 0
                else Answer(name, 0, CallStatus.SKIPPED, 0.0)
                for s, (name, q) in enumerate(zip(self.strategies.names, decision.quotas, strict=True))]

    def step(self, t: int, sim: SimSearch, rec: Records) -> None:
        self.now = SIM_EPOCH + t * SECONDS_PER_SEARCH
        hits, returned = self.strategies.level_tables(sim.text, sim.target, self.config.levels)
        rewards = self.foresight.rewards = target_rewards(self.space, hits, returned, self.latency,
                                                          self.allocator.config)
        plan = self.pipeline.decide(sim.text, sim.context, self.strategies.understand(sim.text), self.rng)
        served = self.pipeline.serve(plan, self.answers(sim.text, plan.decision), decision_id=str(t), ts=self.now,
                                     k=self.config.k)
        ordinal = self.strategies.ordinal
        shown = np.array([ordinal[e] for e in served.record.final], dtype=np.int64)
        action = user_action(self.clicks, self.users, sim, shown, self.click_rng)
        level = self.space.allocations[plan.decision.allocation]
        record_search(rec, t, sim, served.record, shown, len(served.merged),
                      bool(hits[np.arange(level.size), level].any()), rewards, self.space, self.config)
        if self.observer is not None:
            self.observer(t, sim, served.record, hits, returned)
        if action.entity >= 0:
            event, entity_id = action_event(action), self.strategies.ids[action.entity]
            judged = self.pipeline.judge(served.record, entity_id, event)
            self.pipeline.learn(served.record, judged, entity_id, event)
            record_feedback(rec, t, judged.reward, judged.retrieved)
            self.pending.append(FeedbackEvent(event_id=str(t), query_text=sim.text, entity_id=entity_id,
                                              type=event, timestamp=self.now, context=sim.context))
            if len(self.pending) >= self.config.learn_every:
                self.flush()


def record_search(rec: Records, t: int, sim: SimSearch, record: DecisionRecord, shown: np.ndarray,
                  candidates: int, target_found: bool, rewards: np.ndarray, space: AllocationSpace,
                  config: ExperimentConfig) -> None:
    """Fill row t of `rec` for a served search: what it chose and fetched, whether the target was
    a candidate, the target's rank measures in `shown` (ordinals, best first) and the regret
    against the oracle (rewards: target_rewards of every allocation). Both modes call it."""
    rec.intent[t], rec.quotas[t], rec.propensity[t] = sim.intent, record.quotas, record.propensity
    rec.allocation[t], rec.features[t] = record.allocation, record.features
    rec.fetched[t], rec.candidates[t] = record.fetched, candidates
    rec.called[t], rec.target_found[t] = sum(q > 0 for q in record.quotas), target_found
    rec.rr[t] = reciprocal_rank(shown, sim.target)
    rec.ndcg[t] = ndcg_at(shown, sim.relevant, sim.target, config.clicks.shown)
    rec.regret[t] = rewards[oracle_allocation(rewards, space).allocation] - rewards[record.allocation]


def record_feedback(rec: Records, t: int, reward: float, retrieved: bool) -> None:
    """Row t of `rec` got feedback: the reward the policy was given and whether the acted-on entity
    was a candidate."""
    rec.feedback[t], rec.acted_found[t], rec.reward[t] = True, retrieved, reward


def run_policy(spec: PolicySpec, config: ExperimentConfig, root: str | os.PathLike[str], strategies: Sequence[str],
               searches: Sequence[SimSearch], users: Audience, table: EntityTable, *,
               memory_state: str | os.PathLike[str], shared: InProcessStrategies | None = None,
               observer: SearchObserver | None = None) -> Records:
    """Run `spec` over `searches` on the index at `root`; memory_state: a fresh directory for the
    memory strategy's feedback; shared: strategies (and caches) to reuse from an earlier run;
    observer: sees every served search (SearchObserver)."""
    clock_box: list[PolicyRun] = []
    loaded = InProcessStrategies(root, strategies, max(config.levels), memory_state=memory_state,
                                 clock=lambda: clock_box[0].now if clock_box else SIM_EPOCH, shared=shared)
    try:
        run = PolicyRun(spec, config, loaded, users, table, observer)
        clock_box.append(run)
        rec = Records.empty(spec.name, loaded.names, len(searches))
        for t, sim in enumerate(searches):
            run.step(t, sim, rec)
        run.flush()
        return rec
    finally:
        loaded.close()


def shared_strategies(root: str | os.PathLike[str], strategies: Sequence[str],
                      levels: Sequence[int]) -> InProcessStrategies:
    """The strategies whose answers never change (all but memory), for runs to share (run_policy's
    `shared`): their answer caches fill once for every plan."""
    return InProcessStrategies(root, [s for s in strategies if s != StrategyKind.MEMORY.value], max(levels))


def run_experiment(entities: Sequence[Entity], root: str | os.PathLike[str], strategies: Sequence[str],
                   specs: Sequence[PolicySpec], config: ExperimentConfig, workdir: str | os.PathLike[str],
                   simulator: SimulatorConfig | None = None) -> dict[str, Records]:
    """Every spec over the same `config.searches` searches (seeded by config.seed) on the index at
    `root`, built from `entities` (same order). workdir: memory state, one subdirectory per spec."""
    users, searches = simulated_searches(entities, config, simulator)
    table = EntityTable.from_entities(entities)
    shared = shared_strategies(root, strategies, config.levels)
    out = {}
    for spec in specs:
        state = Path(workdir) / f"memory-{config.seed}-{spec.name}"
        out[spec.name] = run_policy(spec, config, root, strategies, searches, users, table,
                                    memory_state=state, shared=shared)
    return out
