"""The in-process experiment: simulated searches through the same core objects the broker runs.

Per search, the broker's pipeline (core.pipeline: decide -> fan-out -> serve; judge -> learn),
with the strategies answering the fan-out in process: the attribute strategy's understanding ->
SearchPipeline.decide -> each called strategy's top-quota list (PolicyRun.answers) ->
SearchPipeline.serve (merge, rank) -> the user's events (core.simulator.listening: plays, skips, a
reformulation) -> per event, SearchPipeline.judge and learn (the allocator and the query history
learn from the decision's first satisfying event only, core.pipeline), and the memory strategy's
learn for the satisfying events, in batches of `learn_every` (the broker forwards through its outbox).

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
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from core.catalog import Entity
from core.collapse import recording_copies
from core.eventlog import DecisionRecord, EventRecord
from core.pipeline import Answer, CallStatus, SearchPipeline, acted_ranks
from core.policy.allocation import DEFAULT_LEVELS, AllocationSpace
from core.policy.features import DIM
from core.policy.policies import Decision, PolicyConfig
from core.ranking import EntityTable, make_ranker
from core.simulator.listening import ListeningConfig, ListeningModel, Reaction, TrackFacts
from core.simulator.metrics import Records
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


def experiment_levels(budget: int) -> tuple[int, ...]:
    """The quota levels of an experiment at `budget` candidates: (0, budget // 4, budget // 2,
    budget), EXPERIMENT_LEVELS scaled from EXPERIMENT_BUDGET: one strategy alone can take the whole
    budget, two can share it, and the four-way equal split is a level. At 50, 100 or a multiple of
    4 the space is the same 53 allocations of four strategies as at 200."""
    if budget < 4:
        raise ValueError(f"`budget` must be >= 4 (four distinct levels), but got {budget}")
    return (0, budget // 4, budget // 2, budget)

@dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    """searches: per policy run; seed: fixes the searches, the users' reactions and the policies'
    draws; k: results ranked (>= the listener's `shown`); levels, budget: the allocation space every
    policy shares; listening: the simulated listener (its satisfied fraction is the policy's);
    learn_every: feedback reaches the memory strategy in batches of this many events (the broker
    forwards it asynchronously too; batching saves one fsync per event)."""

    searches: int = 1000
    seed: int = 0
    k: int = 10
    levels: tuple[int, ...] = EXPERIMENT_LEVELS
    budget: int = EXPERIMENT_BUDGET
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    listening: ListeningConfig = field(default_factory=ListeningConfig)
    latency: LatencyModel = field(default_factory=LatencyModel)
    learn_every: int = 16

    def __post_init__(self) -> None:
        if self.learn_every < 1:
            raise ValueError(f"`learn_every` must be >= 1, but got {self.learn_every}")
        if self.searches < 1:
            raise ValueError(f"`searches` must be >= 1, but got {self.searches}")
        if not 1 <= self.k <= 100:
            raise ValueError(f"`k` must be in [1, 100], but got {self.k}")
        if self.k < self.listening.shown:
            raise ValueError(f"`k` ({self.k}) must be >= `listening.shown` ({self.listening.shown})")

    def listener(self) -> ListeningModel:
        """The listener of `listening`, satisfied where the policy's reward is."""
        return ListeningModel(self.listening, satisfied_fraction=self.policy.satisfied_fraction)


class Audience(Protocol):
    """Who acts on the results: the user's genre affinity multiplier for each ordinal, and what the
    listener compares with the target (core.simulator.listening: genre and artist).
    core.simulator.users.UserSimulator for the music simulator; benchmarks.routing's audience has
    no tastes (ones)."""

    def affinity_multiplier(self, user: int, ordinals: np.ndarray) -> np.ndarray: ...

    def track_facts(self, ordinals: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """(genre int32 per ordinal, -1 = none; artist per ordinal) of int64 `ordinals`."""
        ...


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
    """The listener's uniforms for a run of `seed`: common random numbers, every policy of a
    seed sees the same ones."""
    return np.random.default_rng([seed, 1])


def as_target(shown: np.ndarray, target: int, copies: AbstractSet[int]) -> np.ndarray:
    """`shown` (int64 ordinals) with every copy of the target's recording (`copies`, empty = the
    target alone) read as the target itself: what the user hears and what the rank measures judge."""
    if not copies:
        return shown
    return np.where(np.isin(shown, np.fromiter(copies, dtype=np.int64, count=len(copies))), target, shown)


def user_action(listener: ListeningModel, users: Audience, sim: SimSearch, shown: np.ndarray,
                rng: np.random.Generator, copies: AbstractSet[int] = frozenset()) -> list[Reaction]:
    """The events of the user of `sim` on the ranked ordinals `shown` (int64, best first), in
    order (core.simulator.listening): the one user model every benchmark calls. copies: the
    ordinals of the target's recording (core.collapse.recording_copies; empty = the target alone):
    the user wants the recording, so a shown copy is heard as the target, and the event names the
    copy that was shown."""
    visible = shown[: listener.config.shown]
    heard = as_target(shown, sim.target, copies)
    genre, artist = users.track_facts(visible)
    target_genre, target_artist = users.track_facts(np.array([sim.target], dtype=np.int64))
    facts = TrackFacts(affinity=users.affinity_multiplier(sim.user, visible), genre=genre, artist=artist)
    reactions = listener.react(heard, sim.relevant, sim.target, rng, facts, int(target_genre[0]), target_artist[0])
    return [replace(r, entity=int(shown[r.rank - 1])) if r.rank > 0 else r for r in reactions]


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
        self.pipeline = SearchPipeline(self.allocator, make_ranker(spec.ranker, table), policy_name=spec.name,
                                       recordings=table)
        self.listener = config.listener()
        self.copies = recording_copies(table.recording_keys)  # the target is a recording: any copy
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

    def answers(self, sim: SimSearch, decision: Decision) -> list[Answer]:
        """The in-process fan-out: every called strategy answers its top-quota list for the search's
        text and context in its simulated latency (core.pipeline.Answer, column order)."""
        level = self.space.allocations[decision.allocation]
        lists = iter(self.strategies.lists(sim.text, decision.quotas, sim.context))
        return [Answer(name, q, CallStatus.OK, float(self.latency[s, level[s]]), next(lists)) if q > 0
                else Answer(name, 0, CallStatus.SKIPPED, 0.0)
                for s, (name, q) in enumerate(zip(self.strategies.names, decision.quotas, strict=True))]

    def step(self, t: int, sim: SimSearch, rec: Records) -> None:
        self.now = SIM_EPOCH + t * SECONDS_PER_SEARCH
        copies = self.copies.get(sim.target, frozenset((sim.target,)))
        hits, returned = self.strategies.level_tables(sim.text, copies, self.config.levels, sim.context)
        rewards = self.foresight.rewards = target_rewards(self.space, hits, returned, self.latency,
                                                          self.allocator.config)
        plan = self.pipeline.decide(sim.text, sim.context, self.strategies.understand(sim.text), self.rng)
        served = self.pipeline.serve(plan, self.answers(sim, plan.decision), decision_id=str(t), ts=self.now,
                                     k=self.config.k)
        ordinal = self.strategies.ordinal
        shown = np.array([ordinal[e] for e in served.record.final], dtype=np.int64)
        reactions = user_action(self.listener, self.users, sim, shown, self.click_rng, copies)
        level = self.space.allocations[plan.decision.allocation]
        record_search(rec, t, sim, served.record, as_target(shown, sim.target, copies), len(served.merged),
                      bool(hits[np.arange(level.size), level].any()), rewards, self.space, self.config)
        if self.observer is not None:
            self.observer(t, sim, served.record, hits, returned)
        self.feedback(t, sim, served.record, reactions, rec, copies)

    def feedback(self, t: int, sim: SimSearch, record: DecisionRecord, reactions: Sequence[Reaction],
                 rec: Records, copies: AbstractSet[int]) -> None:
        """Every event of search t through the pipeline, as the broker's Feedback takes them (the
        first satisfying one teaches); the satisfying ones to the memory strategy. A plan taught the
        target (PolicySpec.teach_target) learns instead from one REFORMULATE naming the copy of the
        target (`copies`: its recording's ordinals) that the most strategies retrieved: what the
        user wanted, as if they had said so."""
        logged: list[EventRecord] = []
        for i, r in enumerate(reactions):
            entity_id, event_id = self.strategies.ids[r.entity], f"{t}:{i}"
            judged = self.pipeline.judge(record, entity_id, r.type, r.value, earlier=logged)
            if not self.spec.teach_target:
                self.pipeline.learn(record, judged, entity_id, r.type)
            logged.append(EventRecord(event_id=event_id, decision_id=record.decision_id, entity_id=entity_id,
                                      type=r.type, value=r.value, ts=self.now, reward=judged.reward))
            if judged.teaches:  # what the user acted on, whatever the allocator is taught
                record_feedback(rec, t, judged.reward, judged.retrieved)
            if self.pipeline.satisfies(r.type, r.value, entity_id):
                self.pending.append(FeedbackEvent(event_id=event_id, query_text=sim.text, entity_id=entity_id,
                                                  type=r.type, value=r.value, timestamp=self.now, context=sim.context))
        if self.spec.teach_target:
            wanted = max((self.strategies.ids[c] for c in sorted(copies)),
                         key=lambda e: sum(r > 0 for r in acted_ranks(record, e)))
            judged = self.pipeline.judge(record, wanted, EventType.REFORMULATE)
            self.pipeline.learn(record, judged, wanted, EventType.REFORMULATE)
        if len(self.pending) >= self.config.learn_every:
            self.flush()


def record_search(rec: Records, t: int, sim: SimSearch, record: DecisionRecord, shown: np.ndarray,
                  candidates: int, target_found: bool, rewards: np.ndarray, space: AllocationSpace,
                  config: ExperimentConfig) -> None:
    """Fill row t of `rec` for a served search: what it chose and fetched, whether the target was
    a candidate (target recall), the final ranking `shown` (ordinals, best first; copies of the
    target's recording read as the target, as_target) with the
    search's bounded qrels for MRR@k and nDCG@k of the visible config.listening.shown
    (Records.set_ranking; measured in one batch through ir-measures) and the regret against the
    oracle (rewards: target_rewards of every allocation). Both modes call it."""
    rec.intent[t], rec.quotas[t], rec.propensity[t] = sim.intent, record.quotas, record.propensity
    rec.allocation[t], rec.features[t] = record.allocation, record.features
    rec.fetched[t], rec.candidates[t] = record.fetched, candidates
    rec.called[t], rec.target_found[t] = sum(q > 0 for q in record.quotas), target_found
    rec.set_ranking(t, shown[: config.listening.shown], sim.relevant, sim.target)
    rec.regret[t] = rewards[oracle_allocation(rewards, space).allocation] - rewards[record.allocation]


def record_feedback(rec: Records, t: int, reward: float, retrieved: bool) -> None:
    """Row t of `rec` taught the policy (its first satisfying event): the reward the policy was
    given and whether the satisfying entity was a candidate (candidate recall)."""
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
