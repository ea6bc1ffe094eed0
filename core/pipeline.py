"""One search -> feedback pipeline: what the broker serves, the simulator simulates and the tests test.

Per search, given the query understanding (the attribute strategy's readings):

    plan = pipeline.decide(text, context, interpretations, rng)   # features -> allocation, propensity
    answers = <the fan-out: whoever answers plan.quotas>           # gRPC shards, or strategies in process
    served = pipeline.serve(plan, answers, decision_id, ts, k)    # merge, rank, collapse, the DecisionRecord

Per feedback event on a served decision (earlier: the decision's events logged before this one):

    judged = pipeline.judge(record, entity_id, event_type, value, earlier=earlier)  # outcomes, reward
    pipeline.learn(record, judged, entity_id, event_type)   # the allocator and the query history

A decision teaches once: only its first satisfying event (core.reward.satisfies) teaches the
allocator and the query history (Judged.teaches); every other event is logged with reward 0 and
teaches nothing. Whether an event is the first is a function of the log alone (the events before
it), so replay decides it exactly as serving did. After a restart, `pipeline.replay(items)` learns
the logged (decision, event, earlier events) the policy snapshot does not hold.

The only difference between serving and simulating is who answers the fan-out: services/broker.py
calls shard processes under a deadline, core/simulator/runner.py calls the strategies
in process with simulated latencies.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from core.cache import text_bytes
from core.collapse import distinct_top
from core.errors import InvalidArgumentError
from core.eventlog import DecisionRecord, EventRecord
from core.merge import Merged, StrategyList, merge
from core.policy.allocator import Allocator
from core.policy.features import DIM, featurize
from core.policy.history import QueryHistory
from core.policy.policies import Decision, Outcome
from core.ranking import FeatureTable, Ranker
from core.reward import satisfies, search_reward, strategy_outcomes
from core.types import EventType, Interpretation

# DecisionRecord.policy of a decision whose quotas SearchRequest.plan forced (SearchPipeline.force)
FORCED = "forced"


class CallStatus(enum.IntEnum):
    """What became of one strategy's call; values equal ltrr.v1.StrategyStatus's."""

    OK = 1
    TIMEOUT = 2
    ERROR = 3
    SKIPPED = 4


@dataclass(frozen=True, slots=True)
class Answer:
    """One strategy's part of a search's fan-out. quota: asked (0 = not called, SKIPPED);
    latency_ms: until it answered or was given up; hits: its list, for OK only (with several
    document partitions, their merged top `quota`: core.partitions); shed: an ERROR because the
    strategy's server refused the call under overload (it never ran). For a partitioned strategy:
    coverage: partitions answered / partitions asked, in [0, 1] (OK below 1 makes the search
    degraded); partition_quota: asked of each partition first (0: `quota`); refetched: partitions
    asked again for `quota`."""

    strategy: str
    quota: int
    status: CallStatus
    latency_ms: float
    hits: StrategyList | None = None
    shed: bool = False
    coverage: float = 1.0
    partition_quota: int = 0
    refetched: int = 0

    @property
    def answered(self) -> bool:
        return self.status is CallStatus.OK and self.hits is not None


@dataclass(frozen=True, slots=True)
class Plan:
    """A search decided but not yet answered. features: float64 (DIM,), the context the allocator
    saw (core.policy.features); decision: its allocation and propensity."""

    text: str
    context: Mapping[str, str]
    features: np.ndarray
    decision: Decision
    strategies: tuple[str, ...]
    forced: bool = False  # SearchRequest.plan chose the quotas (SearchPipeline.force), not the policy

    @property
    def quotas(self) -> dict[str, int]:
        """Strategy name -> quota, in column order (0 = not called)."""
        return dict(zip(self.strategies, self.decision.quotas, strict=True))


@dataclass(frozen=True, slots=True)
class Served:
    """A search answered: its record (what the event log stores), the merged candidates, and the
    top k shown (order: int64 indexes into merged, best first, one per recording when the pipeline
    collapses; scores: float64, the ranker's). record.final is exactly what was shown."""

    record: DecisionRecord
    merged: Merged
    order: np.ndarray
    scores: np.ndarray
    answers: tuple[Answer, ...]
    explored: bool = False  # the plan was not the policy's most probable one (Decision.explored)
    forced: bool = False  # SearchRequest.plan chose the quotas (Plan.forced)

    @property
    def degraded(self) -> bool:
        """Some called strategy timed out or failed, or answered from only some of its partitions."""
        return any(a.status in (CallStatus.TIMEOUT, CallStatus.ERROR) or (a.answered and a.coverage < 1.0)
                   for a in self.answers)


@dataclass(frozen=True, slots=True)
class Judged:
    """One feedback event joined with its decision. ranks: per strategy, the 1-based rank of the
    event's entity in its list (0 = absent or no answer); outcomes: per strategy, what the
    allocator learns from (all unanswered unless it teaches); reward: core.reward.search_reward, 0
    unless it teaches; known: False when the decision's lists were dropped by retention
    (core.eventlog.RetentionConfig.keep_lists_s), so nothing can be said of which strategy found
    the entity: the event is stored with reward 0 and teaches nothing; teaches: the decision's
    first satisfying event, the one the allocator and the query history learn from."""

    ranks: tuple[int, ...]
    outcomes: tuple[Outcome, ...]
    reward: float
    known: bool = True
    teaches: bool = True

    def silenced(self) -> Judged:
        """The same event teaching nothing: reward 0, every outcome unanswered."""
        return replace(self, outcomes=tuple(replace(o, answered=False) for o in self.outcomes), reward=0.0,
                       teaches=False)

    @property
    def retrieved(self) -> bool:
        """The acted-on entity was a candidate."""
        return any(r > 0 for r in self.ranks)


def acted_ranks(record: DecisionRecord, entity_id: str) -> tuple[int, ...]:
    """Per strategy of record.strategies: the 1-based rank of `entity_id` in its logged list, 0 =
    absent or no list (the merged candidates' rank columns, without merging)."""
    lists = {lst.strategy: lst.entity_ids for lst in record.lists}
    out = []
    for s in record.strategies:
        ids = lists.get(s, ())
        try:
            out.append(list(ids).index(entity_id) + 1)
        except ValueError:
            out.append(0)
    return tuple(out)


def decision_bytes(record: DecisionRecord) -> int:
    """Estimated memory of a decision record: its id lists, scores, features and a fixed part
    (the record, its tuples and context); what the broker's recent-decision cache is bounded by."""
    lists = sum(text_bytes(lst.entity_ids) + lst.scores.nbytes + 112 for lst in record.lists)
    context = sum(100 + len(k) + len(v) for k, v in record.context.items())
    return 1024 + lists + text_bytes(record.final) + record.features.nbytes + context + len(record.query_text)


class SearchPipeline:
    """The search -> feedback steps of the module docstring around one allocator, ranker and query
    history. policy_name: logged with every decision (core.eventlog). recordings: the catalog's
    table (core.ranking.FeatureTable), whose recording keys collapse copies of one recording in
    what is served (core.collapse; None: no collapse, every candidate is its own recording). Not thread-safe: the
    broker calls it from its event loop, the simulator from its one loop.

    Feedback names the copy that was shown (the best-ranked one), and so does what the memory
    strategy learns from it: the next search for the same query finds that copy first again."""

    def __init__(self, allocator: Allocator, ranker: Ranker, *, history: QueryHistory | None = None,
                 policy_name: str = "", recordings: FeatureTable | None = None) -> None:
        self.allocator, self.ranker, self.recordings = allocator, ranker, recordings
        self.history = history if history is not None else QueryHistory()
        self.strategies = tuple(allocator.space.strategies)
        self.policy_name = policy_name or allocator.config.kind.value

    def decide(self, text: str, context: Mapping[str, str], interpretations: Sequence[Interpretation],
               rng: np.random.Generator) -> Plan:
        """Features of the query, its understanding, its context and its history -> the allocator's choice."""
        x = featurize(text, context, interpretations, self.history)
        return Plan(text, dict(context), x, self.allocator.decide(x, rng), self.strategies)

    def force(self, text: str, context: Mapping[str, str], interpretations: Sequence[Interpretation],
              quotas: Mapping[str, int]) -> Plan:
        """The plan `quotas` (strategy -> quota; strategies left out get 0) instead of the
        allocator's choice: propensity 1, logged as policy FORCED, never learned by the allocator
        (the query history still learns what users wanted). InvalidArgumentError("plan") unless
        `check_plan` accepts the quotas."""
        wanted, allocation = self.check_plan(quotas)
        x = featurize(text, context, interpretations, self.history)
        decision = Decision(wanted, 1.0, (1.0,) * len(wanted), allocation)
        return Plan(text, dict(context), x, decision, self.strategies, forced=True)

    def check_plan(self, quotas: Mapping[str, int]) -> tuple[tuple[int, ...], int]:
        """(quotas in column order, allocation index) of a forced plan: its strategies must be
        this pipeline's and its quotas an allocation of the policy's space (each one of its levels,
        their sum within its budget, some quota > 0), so that the decision's allocation index is
        exact for off-policy evaluation; InvalidArgumentError("plan") otherwise."""
        space = self.allocator.space
        unknown = sorted(set(quotas) - set(self.strategies))
        if unknown:
            raise InvalidArgumentError("plan", f"must name only the strategies {list(self.strategies)}, but got "
                                       f"{unknown}")
        wanted = tuple(int(quotas.get(s, 0)) for s in self.strategies)
        if not any(wanted):
            raise InvalidArgumentError("plan", f"must give some strategy a quota > 0, but got {dict(quotas)}")
        try:
            allocation = space.index_of(wanted)
        except ValueError:
            raise InvalidArgumentError("plan", f"must give each strategy one of the levels {list(space.levels)} "
                                       f"with a total of at most {space.budget}, but got {dict(quotas)}") from None
        return wanted, allocation

    def serve(self, plan: Plan, answers: Sequence[Answer], *, decision_id: str, ts: float, k: int) -> Served:
        """Merge what came back in time, rank it and build the decision record. answers: one per
        strategy, in column order. The allocator hears every answered call's latency."""
        if [a.strategy for a in answers] != list(self.strategies):
            raise ValueError(f"`answers` must hold one Answer per strategy in order {list(self.strategies)}, "
                             f"but got {[a.strategy for a in answers]}")
        for s, a in enumerate(answers):
            if a.answered:
                self.allocator.observe_latency(s, a.latency_ms)
        lists = [a.hits for a in answers if a.answered and a.hits is not None]
        merged = merge(lists, self.strategies)
        order, scores = self.rank(merged, plan.text, k)
        d = plan.decision
        record = DecisionRecord(
            decision_id=decision_id, ts=ts, query_text=plan.text, context=plan.context, features=plan.features,
            strategies=self.strategies, quotas=d.quotas, allocation=d.allocation, propensity=d.propensity,
            marginals=d.marginals, policy=FORCED if plan.forced else self.policy_name, lists=tuple(lists),
            final=tuple(merged.entity_ids[i] for i in order.tolist()),
            latency_ms=max((a.latency_ms for a in answers if a.quota > 0), default=0.0))
        return Served(record, merged, order, scores, tuple(answers), explored=d.explored, forced=plan.forced)

    def rank(self, merged: Merged, text: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ranker's top k of `merged`, one per recording when collapsing: every candidate is
        ranked, so that a copy of a recording already shown gives its slot to the next distinct one."""
        if self.recordings is None:
            return self.ranker.rank(merged, text, k)
        order, scores = self.ranker.rank(merged, text, len(merged))
        keep = distinct_top(order, self.recordings.recordings(merged.entity_ids), k)
        return order[keep], scores[keep]

    @property
    def satisfied_fraction(self) -> float:
        return float(self.allocator.config.satisfied_fraction)

    def satisfies(self, event_type: EventType, value: float, entity_id: str | None = None) -> bool:
        """core.reward.satisfies at this pipeline's threshold."""
        return satisfies(event_type, value, entity_id, satisfied_fraction=self.satisfied_fraction)

    def once(self, judged: Judged, earlier: Sequence[EventRecord]) -> Judged:
        """`judged` silenced when an earlier event of its decision already satisfied (and taught).
        earlier: the decision's events logged before this one, in any order."""
        if judged.teaches and any(self.satisfies(e.type, e.value, e.entity_id) for e in earlier):
            return judged.silenced()
        return judged

    def judge(self, record: DecisionRecord, entity_id: str, event_type: EventType, value: float = 0.0, *,
              earlier: Sequence[EventRecord] = ()) -> Judged:
        """The reward and per-strategy outcomes of one event on `record` (core.reward), silenced
        unless it is the decision's first satisfying event (earlier: its events logged before)."""
        if record.compacted:
            unknown = tuple(Outcome(quota=q, rank=0, answered=False) for q in record.quotas)
            return Judged((0,) * len(record.quotas), unknown, 0.0, known=False, teaches=False)
        ranks = acted_ranks(record, entity_id)
        c = self.allocator.config
        reward = search_reward(record.quotas, ranks, event_type, value, cost_per_candidate=c.cost_per_candidate,
                               cost_per_ms=c.cost_per_ms, latency_ms=record.latency_ms, fetched=record.fetched,
                               entity_id=entity_id, satisfied_fraction=c.satisfied_fraction)
        outcomes = strategy_outcomes(record.quotas, ranks, record.answered, event_type, record.returned, value=value,
                                     entity_id=entity_id, satisfied_fraction=c.satisfied_fraction)
        judged = Judged(ranks, tuple(outcomes), reward, teaches=self.satisfies(event_type, value, entity_id))
        return self.once(judged, earlier)

    def learn(self, record: DecisionRecord, judged: Judged, entity_id: str, event_type: EventType) -> None:
        """Teach the allocator and the query history one event, if it teaches (Judged.teaches: the
        decision's first satisfying event, on a decision still known in full); otherwise nothing."""
        if not judged.teaches:
            return
        self.observe(record, judged, entity_id, event_type)
        if record.policy == FORCED:  # the policy did not choose it: nothing to learn of its choice
            return
        decision = Decision(record.quotas, record.propensity, record.marginals, record.allocation)
        self.allocator.learn(record.features, decision, judged.outcomes, judged.reward)

    def observe(self, record: DecisionRecord, judged: Judged, entity_id: str, event_type: EventType) -> None:
        """The query-history part of `learn` alone (only a teaching event names what the user wanted)."""
        if judged.teaches:
            self.history.observe(record.query_text, entity_id, retrieved=judged.retrieved)

    def compatible(self, record: DecisionRecord) -> bool:
        """Can this logged decision teach the allocator? Not when another policy made it (other
        features, strategies or quota levels: an upgrade or a changed config), nor when a forced
        plan did (policy FORCED: the allocator did not choose it)."""
        levels = set(self.allocator.space.levels)
        return record.policy != FORCED and record.features.shape == (DIM,) and record.strategies == self.strategies \
            and levels.issuperset(record.quotas)

    def replay(self, items: Iterable[tuple[DecisionRecord, EventRecord, Sequence[EventRecord]]]) -> tuple[int, int]:
        """Learn logged (decision, event, the decision's events logged before it) in log order, as
        `learn` did when they arrived, with the logged reward: the same events teach (module
        docstring). Decisions another policy made (`compatible`) feed the query history only.
        Returns (learned, passed over): events seen, whether or not they taught."""
        learned = foreign = 0
        for record, event, earlier in items:
            judged = self.judge(record, event.entity_id, event.type, event.value, earlier=earlier)
            judged = replace(judged, reward=event.reward) if judged.teaches else judged
            if self.compatible(record):
                self.learn(record, judged, event.entity_id, event.type)
                learned += 1
            else:
                self.observe(record, judged, event.entity_id, event.type)
                foreign += 1
        return learned, foreign
