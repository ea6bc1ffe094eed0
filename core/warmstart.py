"""Warm-start a search pipeline from the event log of the plan it replaces (issue 13, cold start).

A deployment that swaps a static plan for the learned policy has the old plan's event log: its
decisions (context features, quotas, propensity, every answered strategy's list) and the feedback
on them. `warm_start_from_log` reads that log as the broker's replay reads its own (events in
recording order, each joined with its decision and judged by SearchPipeline.judge), and then:

- per decision, its first satisfying event (Judged.teaches, core.reward.satisfies) feeds the
  query history, as live feedback does (SearchPipeline.observe): how often a query was searched
  and missed is a fact about the query, whichever plan served it;
- and becomes one LoggedSearch, and core.policy.warmstart teaches the policy all of them at once,
  weighted by the logged propensities. At most one event per decision teaches, as live (the
  policy learns at most once per decision); skips and short plays teach nothing.

The logged decisions' strategies are matched to the policy's by name: a strategy the old plan did
not have is not answered in its searches, and one the policy does not have is left out. A logged
quota between the policy's levels shows the levels below it (BanditPolicy.reveal).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from core.errors import StateError
from core.eventlog import DecisionRecord, EventLog, EventRecord
from core.pipeline import SearchPipeline
from core.policy.policies import BanditPolicy, Outcome
from core.policy.warmstart import LoggedSearch, WarmStartConfig, WarmStartReport, warm_start

_NOT_CALLED = Outcome(quota=0, rank=0, answered=False)


def logged_searches(pipeline: SearchPipeline, pairs: Iterable[tuple[DecisionRecord, EventRecord]],
                    dim: int) -> Iterator[LoggedSearch]:
    """The LoggedSearches of logged (decision, event) pairs in recording order, in the columns of
    `pipeline`; feeds every event to its query history on the way. ValueError for a decision whose
    features are not `dim` long (another feature layout: it cannot teach this policy)."""
    taught: set[str] = set()
    for record, event in pairs:
        if record.features.shape != (dim,):
            raise ValueError(f"decision {record.decision_id!r} has {record.features.size} features, but the "
                             f"policy has {dim} (the log was written by another feature layout)")
        judged = pipeline.judge(record, event.entity_id, event.type, event.value)
        # a decision teaches once, by its first satisfying event (core.pipeline), as when served
        if not judged.teaches or record.decision_id in taught:
            continue
        taught.add(record.decision_id)
        pipeline.observe(record, judged, event.entity_id, event.type)
        by_name = dict(zip(record.strategies, judged.outcomes, strict=True))
        yield LoggedSearch(features=record.features, propensity=record.propensity,
                           outcomes=tuple(by_name.get(s, _NOT_CALLED) for s in pipeline.strategies))


def _pairs(log: EventLog) -> Iterator[tuple[DecisionRecord, EventRecord]]:
    last: DecisionRecord | None = None
    for _, event in log.events_after(0):
        if last is None or last.decision_id != event.decision_id:
            last = log.decision(event.decision_id)
        yield last, event


def warm_start_from_log(pipeline: SearchPipeline, path: str | os.PathLike[str],
                        config: WarmStartConfig | None = None) -> WarmStartReport:
    """Teach `pipeline` (its BanditPolicy and its query history) the event log at `path` (module
    docstring). StateError naming the file if it is missing, not an event log, shares no strategy
    with the policy, was written with other features, or holds no feedback that teaches."""
    source = Path(path)
    policy = pipeline.allocator
    if not isinstance(policy, BanditPolicy):
        raise TypeError(f"only a BanditPolicy can be warm-started, but the pipeline holds {type(policy).__name__}")
    if not source.is_file():
        raise StateError(source, "no such event log to warm-start from")
    with EventLog(source) as log:
        decisions, events = log.counts()
        if events == 0:
            raise StateError(source, f"the event log holds {decisions} decisions and no feedback: nothing to "
                                     "warm-start from")
        try:
            searches = list(logged_searches(pipeline, _pairs(log), policy.dim))
        except ValueError as e:
            raise StateError(source, f"it cannot warm-start this policy: {e}") from None
    if not searches or not any(o.answered for s in searches for o in s.outcomes):
        raise StateError(source, f"none of its {events} feedback events teaches a strategy of "
                                 f"{list(pipeline.strategies)} (other strategies, skips only, or lists dropped "
                                 "by retention)")
    return warm_start(policy, searches, config)
