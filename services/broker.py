"""The broker: ltrr.v1.Broker on grpc.aio and uvloop. It only orchestrates; core.pipeline decides.

Search: admitted while fewer than `max_in_flight` searches are in flight (services.admission; beyond
it a bounded wait for a place, then RESOURCE_EXHAUSTED) -> validate -> the deadline: the budget or
the caller's gRPC deadline, whichever ends first -> query understanding (the attribute shard's
Understand, if it answers within a slice of the budget) -> SearchPipeline.decide -> parallel
fan-out, every call carrying the time left (a strategy whose shard sheds counts as failed;
RESOURCE_EXHAUSTED only when every called strategy shed and none answered) -> SearchPipeline.serve
(merge, rank, the decision record) -> the record stored durably (group commit) -> response. A
decision that cannot be stored fails the search with UNAVAILABLE: a served decision id is always
joinable.
Feedback: join by decision id (any broker's decision, on a shared store) -> SearchPipeline.judge
-> on the log's thread, the decision's earlier events read and the event stored durably in one
transaction (so only the decision's first satisfying event teaches, the same one replay finds) ->
the policy catches up with the store up to and past it (services.learning: the one learning path,
which also applies other brokers' events from a background tail) -> the memory shard's outbox
(services.outbox, run by the broker holding the store's lease) forwards the satisfying events.
Describe: the strategies, the policy kind, applied_events, applied_position and policy_digest.

Life: bind at once and report NOT_SERVING; open the event store (BrokerConfig.store: the state
directory's SQLite file, or a PostgreSQL URL shared by several brokers) and the policy snapshot
(services.snapshots), warm-start the policy from the replaced plan's log if asked to and not done
before (BrokerConfig.warm_start), replay the events the snapshot has not learned (a crash loses
nothing acknowledged), then SERVING. A damaged snapshot or log stops the start with an error
naming the file and what to do.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import grpc
import numpy as np

from core.cache import ByteLRU
from core.catalog_table import LiveTable, drop_deleted, with_table
from core.errors import (
    DeadlineExceededError,
    InvalidArgumentError,
    NotFoundError,
    NotReadyError,
    OverloadedError,
    StateError,
    UnavailableError,
)
from core.eventlog import DecisionRecord, EventRecord
from core.eventstore import EventStore, SnapshotStore, StoreKind, parse_store_url
from core.pipeline import Judged, Plan, SearchPipeline, Served, decision_bytes
from core.policy.digest import policy_digest
from core.policy.features import DIM
from core.policy.models import warm_up as warm_up_policy
from core.policy.policies import BanditPolicy
from core.ranking import make_ranker
from core.ranking import warm_up as warm_up_ranking
from core.storage import write_file_atomic
from core.types import StrategyKind
from core.warmstart import warm_start_from_log
from ltrr.v1 import broker_pb2, broker_pb2_grpc, catalog_pb2_grpc, common_pb2
from services import convert, logs, metrics
from services.admission import (
    Limiter,
    LoopLag,
    StandingDelay,
)
from services.broker_config import BrokerConfig
from services.catalog_service import CatalogFollower, CatalogService, replay
from services.decisions import DecisionWriter
from services.fanout import ShardPool, fan_out, understand
from services.learning import Learner
from services.outbox import MemoryOutboxes
from services.server import Refreezer, received_at
from services.shard import rpc
from services.snapshots import (
    APPLIED,
    APPLIED_EVENTS,
    HISTORY,
    POLICY_FILE,
    WARM_START,
    load_history,
    load_snapshot,
    load_stored_snapshot,
)
from services.topology import describe_topology

log = logging.getLogger("ltrr.broker")
SERVICE = broker_pb2.DESCRIPTOR.services_by_name["Broker"].full_name
DEFAULT_K, MAX_K = 10, 100
DEFAULT_BUDGET_MS, MIN_BUDGET_MS, MAX_BUDGET_MS = 100, 5, 10_000
# The attribute shard's answers to Understand, by query text: popular queries repeat, and a cached
# reading saves a round trip before allocation. ~1 KB a text: 16 MiB holds ~16,000 texts. Once the
# live catalog changes, an answer read before the change is used until it is
# BrokerConfig.understood_stale_ms old (it feeds only the policy's features; see broker_config).
DEFAULT_UNDERSTOOD_BYTES = 16 * 2**20
# The broker freezes what its searches built every this many searches, when no rpc is in flight
# (services.server.Refreezer): its caches' entries (decisions, understandings: frozensets, slots,
# tuples) otherwise made each full collection longer, a stall of every search in flight: in the
# demo cluster 33.6-63.5 ms about once a minute at 30 searches/s, 25-105 ms every 20-30 s at 100/s;
# with the freezes, at most 9.1 and 2.4 ms (NOTES.md, session 14). FREEZE_DELAY_S: how long after
# the search that made a freeze due it is tried (its answer has most likely gone by then; if not,
# its rpc is still in flight and the attempt waits for a later search).
FREEZE_SEARCHES = 200
FREEZE_DELAY_S = 0.01


def _check_request(request: broker_pb2.SearchRequest) -> tuple[int, int]:
    k = request.k or DEFAULT_K
    if not 1 <= k <= MAX_K:
        raise InvalidArgumentError("k", f"must be in [1, {MAX_K}] (0 = {DEFAULT_K}), but got {k}")
    budget = request.budget_ms or DEFAULT_BUDGET_MS
    if not MIN_BUDGET_MS <= budget <= MAX_BUDGET_MS:
        raise InvalidArgumentError("budget_ms", f"must be in [{MIN_BUDGET_MS}, {MAX_BUDGET_MS}] "
                                   f"(0 = {DEFAULT_BUDGET_MS}), but got {budget}")
    return k, budget


def _own_time_s(budget_ms: int, caller_s: float | None) -> float:
    """A search's own time: its budget, or the caller's deadline (`caller_s` left) when sooner."""
    return budget_ms / 1000 if caller_s is None else min(budget_ms / 1000, caller_s)


class Understood(NamedTuple):
    """A cached Understand answer and when it was read (time.monotonic())."""

    at: float
    interpretations: list[Any]


def _interpretations_bytes(understood: Understood) -> int:
    """Rough bytes of cached interpretations: a few hundred each, plus their text."""
    return 256 + sum(300 + len(i.free_text) + 100 * len(i.slots) for i in understood.interpretations)


class BrokerService(broker_pb2_grpc.BrokerServicer):
    """Constructed cheaply; `start` loads (on the log's thread) and replays before it serves."""

    def __init__(self, config: BrokerConfig, *, freeze: bool = False, calls: Callable[[], int] | None = None
                 ) -> None:
        """freeze: keep what serving builds (the caches' entries, the live table) out of the garbage
        collector's reach, every FREEZE_SEARCHES searches (services.server.Refreezer; a server
        process's choice, serve(): it freezes the whole process); calls: how many calls the
        server took whose handlers have not returned (ServiceLoop.calls: they include calls not yet
        running here), which a freeze also waits for."""
        self.config = config
        self.strategies = config.strategies
        self.state_dir = Path(config.state_dir)
        self.pool = ShardPool(config.topology, config.replicas, config.security)
        # entity id -> catalog position: Feedback's entity check and the partition merge's ties (None: no catalog)
        self.positions: Mapping[str, int] | None = None
        self.rng = np.random.default_rng(config.seed)
        self.recent: ByteLRU[str, DecisionRecord] = ByteLRU(config.recent_bytes, decision_bytes)
        self.understood: ByteLRU[str, Understood] = ByteLRU(DEFAULT_UNDERSTOOD_BYTES, _interpretations_bytes)
        self.catalog_changed_at = -math.inf  # time.monotonic() of the live catalog's last change
        self.pipeline: SearchPipeline | None = None
        self.writer: DecisionWriter | None = None
        self.outbox: MemoryOutboxes | None = None
        self.learner: Learner | None = None
        self.catalog: CatalogFollower | None = None  # the live catalog (services.catalog_service)
        self.warm_started: dict[str, Any] | None = None  # the snapshot's WARM_START record
        self.updates = 0
        self.snapshot_task: asyncio.Task[None] | None = None
        # its own thread: serialising a large query history takes ~0.6 s, which on the log's thread
        # would hold up every search waiting for its decision to be stored
        self.snapshots = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ltrr-snapshot")
        self.lag = LoopLag(config.lag_target_ms) if config.lag_target_ms else None
        waits = StandingDelay(config.lag_target_ms) if config.lag_target_ms else None
        self.admission = Limiter(config.max_in_flight, name="the broker", lag=self.lag, waits=waits)
        held = calls or (lambda: 0)
        self.refreezer = (Refreezer(FREEZE_SEARCHES,
                                    idle=lambda: metrics.gauge_value(metrics.INFLIGHT) == 0 and held() == 0)
                          if freeze else None)
        self.refreeze_timer: asyncio.TimerHandle | None = None
        self.lag_task: asyncio.Task[None] | None = None

    # -- life ---------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store and the snapshot, replay, start the outbox and, on a store shared with
        other brokers, the tail of their feedback (NOT_SERVING until this returns)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.writer = DecisionWriter(self.config.store_url, self.config.writer, self.config.retention)
        await self.writer.run(self._load)
        memory = self.pool.partitions.get(StrategyKind.MEMORY.value)
        if memory is not None:
            stubs = [[replica.stub for replica in part.replicas] for part in memory]
            self.outbox = MemoryOutboxes(self.writer.log, stubs, self.writer.run, self.config.outbox,
                                         satisfied_fraction=self.config.policy.satisfied_fraction)
            self.outbox.start()
        if parse_store_url(self.config.store_url).shared and self.learner is not None and self.pipeline is not None:
            self.learner.start(self.pipeline)
            assert self.catalog is not None
            self.catalog.start()
        if self.lag is not None:
            self.lag_task = asyncio.get_running_loop().create_task(self.lag.run())
        log.info("broker over %s", "; ".join(f"{s}=" + " | ".join(",".join(r) for r in parts)
                                             for s, parts in self.config.topology.items()))

    def _load(self) -> None:
        """On the log's thread: the policy from its snapshot, then the events it has not learned."""
        c = self.config
        policy = BanditPolicy(self.strategies, DIM, c.policy)
        assert self.writer is not None
        store = self.writer.log
        path = self.state_dir / POLICY_FILE
        saved = load_stored_snapshot(store, policy) if isinstance(store, SnapshotStore) else load_snapshot(path, policy)
        live = replay(store, LiveTable.from_entities(c.entities))  # the offline catalog, then the catalog log
        table = live.table
        self.positions = table.positions if c.entities else None
        ranker = make_ranker(c.ranker, table, c.ranker_model)
        warm_up_ranking()  # the Numba kernels of ranking and of Thompson draws, before the first search
        warm_up_policy()
        log.info("ranker: %s (asked for %s); catalog log applied up to %d", type(ranker).__name__, c.ranker,
                 live.position)
        pipeline = SearchPipeline(policy, ranker, history=load_history(saved, path), recordings=table)
        self.catalog = CatalogFollower(self.writer, live, self._catalog_changed)
        self.learner = learner = Learner(self.writer, position=int(saved.get(APPLIED, 0)),
                                         applied=int(saved.get(APPLIED_EVENTS, 0)), interval_s=c.tail_interval_s,
                                         on_applied=self._applied)
        fresh = self._warm_start(pipeline, saved.get(WARM_START))
        learned, foreign = learner.replay_all(pipeline)
        if learned:
            log.info("policy: replayed %d logged events newer than its snapshot", learned)
        if foreign:
            log.warning("policy: passed over %d logged events whose decisions another policy made (other "
                        "features, strategies or quota levels) or a forced plan did", foreign)
        if fresh:  # written before serving, so that a restart finds the warm start done and does not repeat it
            self._write_snapshot(policy.to_bytes(self._snapshot_extra(learner.position, learner.applied),
                                                 {HISTORY: json.dumps(pipeline.history.to_json()).encode()}),
                                 learner.position, learner.applied)
        self.pipeline = pipeline

    def _catalog_changed(self, live: LiveTable) -> None:
        """On the event loop: the catalog log moved; rankers, Feedback's entity check and query
        understanding follow (one swap each: a search holds the old objects or the new)."""
        pipeline = self._ready()
        pipeline.ranker, pipeline.recordings = with_table(pipeline.ranker, live.table), live.table
        self.positions = live.table.positions if self.config.entities else None
        self.catalog_changed_at = time.monotonic()  # cached understanding ages from here (_understand)

    def _warm_start(self, pipeline: SearchPipeline, done: Any) -> bool:
        """Teach `pipeline` the log of BrokerConfig.warm_start unless its snapshot says it was (`done`:
        the snapshot's WARM_START record). True when it learned now. StateError naming the file for a
        log it cannot learn from (core.warmstart), for this broker's own log, or when the policy was
        warm-started from another file before."""
        self.warm_started = dict(done) if isinstance(done, Mapping) else None
        if not self.config.warm_start:
            return False
        source = Path(self.config.warm_start).resolve()
        own = parse_store_url(self.config.store_url)
        if own.kind is StoreKind.SQLITE and source == Path(own.target).resolve():
            raise StateError(source, "is this broker's own event log; --warm-start takes the log of the plan "
                                     "this broker replaces")
        if self.warm_started is not None:
            if self.warm_started.get("path") != str(source):
                raise StateError(source, f"the policy was warm-started from {self.warm_started.get('path')} "
                                         "already; drop --warm-start, or start from an empty state directory")
            log.info("policy: warm-started from %s before (%s searches); not again", source,
                     self.warm_started.get("searches"))
            return False
        report = warm_start_from_log(pipeline, source, self.config.warm_start_config)
        self.warm_started = {"path": str(source), "searches": report.searches, "clipped": report.clipped}
        log.info("policy: warm-started from %s: %d logged searches (%d weights clipped)", source,
                 report.searches, report.clipped)
        return True

    def _snapshot_extra(self, position: int, applied: int) -> dict[str, Any]:
        """The JSON-able extra data of a policy snapshot taken at event position `position`, after
        `applied` events."""
        return {APPLIED: position, APPLIED_EVENTS: applied,
                **({WARM_START: self.warm_started} if self.warm_started else {})}

    def _write_snapshot(self, data: bytes, position: int, applied: int) -> None:
        """Keep a snapshot: in the store when it keeps them (PostgreSQL: shared by every broker),
        else in the state directory. Blocking I/O: off the event loop."""
        assert self.writer is not None
        store = self.writer.log
        if isinstance(store, SnapshotStore):
            store.save_snapshot(position, applied, data)
        else:
            write_file_atomic(self.state_dir / POLICY_FILE, data)

    def _applied(self, position: int, n: int) -> None:
        """The learner applied n events up to `position`: forward them, snapshot every save_every."""
        if self.outbox is not None:
            self.outbox.notify(position)
        before, self.updates = self.updates, self.updates + n
        if self.updates // self.config.save_every > before // self.config.save_every and self.snapshot_task is None:
            self.snapshot_task = asyncio.get_running_loop().create_task(self._snapshot_then_clear())

    @staticmethod
    def _logged_after(event_log: EventStore, rowid: int
                      ) -> Iterator[tuple[DecisionRecord, EventRecord, list[EventRecord]]]:
        """(decision, event, the decision's events before it) of every event after `rowid`."""
        for position, event in event_log.events_after(rowid):
            yield event_log.decision(event.decision_id), event, event_log.events(event.decision_id, before=position)

    async def close(self) -> None:
        """Stop the outbox and the tail, write a last snapshot, close the log (on SIGTERM, after in-flight calls)."""
        if self.outbox is not None:
            await self.outbox.stop()
        if self.learner is not None:
            await self.learner.stop()
        if self.catalog is not None:
            await self.catalog.stop()
        if self.lag_task is not None:
            self.lag_task.cancel()
            await asyncio.gather(self.lag_task, return_exceptions=True)
        if self.refreeze_timer is not None:
            self.refreeze_timer.cancel()
            self.refreeze_timer = None
        await self.pool.close()
        if self.snapshot_task is not None:
            await self.snapshot_task
        if self.pipeline is not None and self.writer is not None:
            await self._snapshot()
        self.snapshots.shutdown(wait=True)
        if self.writer is not None:
            self.writer.close()

    def _ready(self) -> SearchPipeline:
        if self.pipeline is None:
            raise NotReadyError("the broker is still loading its policy and replaying its event log")
        return self.pipeline

    # -- Search -------------------------------------------------------------------------------------

    async def _understand(self, query: common_pb2.Query, timeout_s: float) -> list[Any]:
        """The attribute shard's readings of the query text (cached by text); none if it has none in time."""
        if StrategyKind.ATTRIBUTE.value not in self.pool.partitions or timeout_s <= 0:
            return []
        cached = self.understood.get(query.text)
        usable = cached is not None and (cached.at >= self.catalog_changed_at or
                                         time.monotonic() - cached.at <= self.config.understood_stale_ms / 1000)
        metrics.count_lookup(metrics.UNDERSTOOD_CACHE, usable)
        if cached is not None and usable:
            return cached.interpretations
        read_at = time.monotonic()  # before the call: a catalog change during it makes the answer stale
        response = await understand(self.pool, query, timeout_s)
        if response is None:
            return []
        interps = [convert.interpretation_from_proto(i) for i in response.interpretations]
        self.understood.put(query.text, Understood(read_at, interps))
        return interps

    @metrics.broker_observed
    @rpc
    async def Search(self, request: broker_pb2.SearchRequest, context: grpc.aio.ServicerContext
                     ) -> broker_pb2.SearchResponse:
        started = received_at(context)  # the wait for the service loop counts against the budget
        relayed_s = time.perf_counter() - started
        caller_s = context.time_remaining()
        if caller_s is not None:
            caller_s += relayed_s  # what the caller had left when the call was taken
        decision_id = uuid.uuid4().hex
        logs.DECISION_ID.set(decision_id)
        # the budget is checked in _search; what is left of the search's own time:
        own_s = _own_time_s(request.budget_ms or DEFAULT_BUDGET_MS, caller_s) - relayed_s
        # a place, waiting at most half of that for one (the rest is for the search)
        await self.admission.acquire_within(min(self.config.max_wait_ms / 1000, max(own_s, 0.0) / 2))
        try:  # the wait counts against the budget: `started` is before it
            return await self._search(request, started, caller_s, decision_id)
        finally:
            self.admission.release()
            self._refreeze_later()

    def _refreeze_later(self) -> None:
        """After a search, once a freeze is due (self.refreezer), one attempt FREEZE_DELAY_S later:
        by then this search's answer has gone, so its call's objects are not frozen; the attempt
        freezes only if no rpc is in flight, else the next search's end schedules another."""
        refreezer = self.refreezer
        if refreezer is None or not refreezer.note() or self.refreeze_timer is not None:
            return

        def attempt() -> None:
            self.refreeze_timer = None
            refreezer.freeze_if_idle()

        self.refreeze_timer = asyncio.get_running_loop().call_later(FREEZE_DELAY_S, attempt)

    def _deadline(self, started: float, budget_ms: int, caller_s: float | None) -> float:
        """When the fan-out must end (perf_counter clock): the budget or the caller's deadline
        (`caller_s` left of it at `started`), whichever ends first, less the reserve for ranking."""
        limit_s = _own_time_s(budget_ms, caller_s)
        if limit_s <= 0:
            self.admission.expired += 1
            raise DeadlineExceededError("the caller's deadline passed before the search started")
        return started + limit_s - self.config.reserve_ms / 1000

    async def _search(self, request: broker_pb2.SearchRequest, started: float, caller_s: float | None,
                      decision_id: str) -> broker_pb2.SearchResponse:
        pipeline = self._ready()
        k, budget_ms = _check_request(request)
        if request.plan:
            pipeline.check_plan(request.plan)  # a bad plan fails before any shard is called
        query = convert.query_from_proto(request.query, self.config.limits, vector_dim=len(request.query.vector))
        deadline = self._deadline(started, budget_ms, caller_s)
        understand_s = min(budget_ms * self.config.understand_fraction / 1000, deadline - time.perf_counter())
        interps = await self._understand(request.query, understand_s)
        version = self.learner.applied if self.learner is not None else 0  # the policy deciding now
        plan = self._plan(pipeline, request, query.text, query.context, interps)
        answers = await fan_out(self.pool, request.query, plan.quotas, deadline - time.perf_counter(),
                                positions=self.positions, probability=self.config.topk_probability)
        if self.catalog is not None:  # a shard may not have applied a delete yet
            answers = drop_deleted(answers, self.catalog.live.deleted)
        if caller_s is not None and time.perf_counter() >= started + caller_s:
            self.admission.expired += 1  # the caller has gone: ranking and storing would be wasted
            raise DeadlineExceededError("the caller's deadline passed during the fan-out")
        if any(a.shed for a in answers) and not any(a.answered for a in answers):
            raise OverloadedError("overloaded: every strategy this search called refused it (their queues are "
                                  "full); retry later")
        served = pipeline.serve(plan, answers, decision_id=decision_id, ts=time.time(), k=k)
        served = replace(served, record=replace(served.record, policy_version=version))
        assert self.writer is not None
        await self.writer.store(served.record)  # UnavailableError (UNAVAILABLE) when it cannot be stored
        self.recent.put(served.record.decision_id, served.record)
        response = self._response(served, started, request.return_candidates)
        metrics.observe_search(served, response.took_ms)
        log.debug("search %r: %d results in %.1f ms", query.text, len(response.results), response.took_ms)
        return response

    def _plan(self, pipeline: SearchPipeline, request: broker_pb2.SearchRequest, text: str,
              context: Mapping[str, str], interps: list[Any]) -> Plan:
        """The policy's plan, or SearchRequest.plan's when given (forced; InvalidArgumentError("plan"))."""
        if request.plan:
            return pipeline.force(text, context, interps, dict(request.plan))
        return pipeline.decide(text, context, interps, self.rng)

    def _response(self, served: Served, started: float, with_candidates: bool) -> broker_pb2.SearchResponse:
        merged, decision = served.merged, served.record
        out = [broker_pb2.Result(entity_id=merged.entity_ids[i], score=s, rank=r, strategies=merged.found_by(i))
               for r, (i, s) in enumerate(zip(served.order.tolist(), served.scores.tolist(), strict=True), start=1)]
        reports = [broker_pb2.StrategyReport(strategy=a.strategy, quota=a.quota, status=int(a.status),
                                             returned=len(a.hits.entity_ids) if a.hits else 0,
                                             latency_ms=a.latency_ms, propensity=decision.marginals[s],
                                             coverage=a.coverage if a.answered else 0.0,
                                             partition_quota=a.partition_quota or a.quota, refetched=a.refetched)
                   for s, a in enumerate(served.answers)]
        candidates = [broker_pb2.MergedCandidate(entity_id=eid, ranks=ranks) for eid, ranks
                      in zip(merged.entity_ids, merged.ranks.tolist(), strict=True)] if with_candidates else []
        return broker_pb2.SearchResponse(decision_id=decision.decision_id, results=out, strategies=reports,
                                         degraded=served.degraded, propensity=decision.propensity,
                                         candidates=candidates, took_ms=(time.perf_counter() - started) * 1000,
                                         policy_version=decision.policy_version, forced=served.forced)

    # -- Feedback -----------------------------------------------------------------------------------

    async def _decision(self, decision_id: str) -> DecisionRecord:
        record = self.recent.get(decision_id)
        metrics.count_lookup(metrics.RECENT_CACHE, record is not None)
        if record is not None:
            return record
        assert self.writer is not None
        try:
            return await self.writer.run(self.writer.log.decision, decision_id)
        except NotFoundError:
            raise NotFoundError(f"decision_id: unknown decision {decision_id!r}") from None

    @metrics.broker_observed
    @rpc
    async def Feedback(self, request: broker_pb2.FeedbackRequest, context: grpc.aio.ServicerContext
                       ) -> broker_pb2.FeedbackResponse:
        logs.DECISION_ID.set(request.decision_id)
        pipeline = self._ready()
        record = await self._decision(request.decision_id)
        deleted = self.catalog is not None and request.entity_id in self.catalog.live.deleted
        if request.entity_id and (deleted or (self.positions is not None and request.entity_id not in self.positions)):
            raise NotFoundError(f"entity_id: {request.entity_id!r} is not in the catalog")
        event = convert.event_from_proto(common_pb2.FeedbackEvent(
            event_id=request.event_id or f"{request.decision_id}:{request.entity_id}:{request.type}",
            query_text=record.query_text, entity_id=request.entity_id, type=request.type,
            value=request.value, timestamp=request.timestamp, context=record.context), "feedback")
        judged = pipeline.judge(record, event.entity_id, event.type, event.value)
        assert self.writer is not None and self.learner is not None
        rowid, judged = await self.writer.run(self._record_once, pipeline, judged, EventRecord(
            event_id=event.event_id, decision_id=record.decision_id, entity_id=event.entity_id, type=event.type,
            value=event.value, ts=event.timestamp or time.time()))
        # It teaches before it is acknowledged, through the one learning path (services.learning):
        # everything stored up to it, other brokers' events included, in the store's order.
        await self.learner.catch_up(pipeline)
        if rowid:
            metrics.FEEDBACK.inc()
        log.debug("feedback %s on %s: reward %.3f%s", event.type.name.lower(), event.entity_id, judged.reward,
                  "" if rowid else " (duplicate)")
        return broker_pb2.FeedbackResponse(duplicate=not rowid, reward=judged.reward)

    def _record_once(self, pipeline: SearchPipeline, judged: Judged, event: EventRecord) -> tuple[int, Judged]:
        """On the log's thread: store the event with its reward, `judged` silenced if an earlier event
        of its decision satisfied (read in the storing transaction, so no broker stores one in
        between: EventStore.record_judged). (log position, 0 for a duplicate; the judgement: a
        duplicate's is its first delivery's, as its own earlier copy is not an earlier event)."""
        assert self.writer is not None
        store, result = self.writer.log, judged

        def reward_of(earlier: list[EventRecord]) -> float:
            nonlocal result
            result = pipeline.once(judged, earlier)
            return result.reward

        position = store.record_judged(event, reward_of)
        if not position:
            result = pipeline.once(judged, [e for e in store.events(event.decision_id) if e.event_id != event.event_id])
        return position, result

    # -- Describe -----------------------------------------------------------------------------------

    @rpc
    async def Describe(self, request: broker_pb2.BrokerDescribeRequest, context: grpc.aio.ServicerContext
                       ) -> broker_pb2.BrokerDescribeResponse:
        """The strategies with their partitions and replicas, the policy and how far it has
        learned: applied_events, applied_position and the digest of its parameters."""
        pipeline = self._ready()
        assert self.learner is not None and self.writer is not None
        topology = describe_topology(self.config.topology)
        allocator = pipeline.allocator
        return broker_pb2.BrokerDescribeResponse(
            strategies=topology, policy=self.config.policy.kind.value, applied_events=self.learner.applied,
            applied_position=self.learner.position, store=self.writer.log.kind,
            policy_digest=policy_digest(allocator) if isinstance(allocator, BanditPolicy) else "")

    # -- snapshots ----------------------------------------------------------------------------------

    async def _snapshot_then_clear(self) -> None:
        try:
            await self._snapshot()
        finally:
            self.snapshot_task = None

    async def _snapshot(self) -> None:
        """Write the policy and the query history as of `applied_rowid`: a consistent copy taken on
        the event loop (the policy's arrays, < 1 ms; the history frozen, not copied), serialised and
        written on the snapshot thread. A failed write is logged and counted; the next one retries."""
        pipeline = self._ready()
        assert self.learner is not None
        policy = copy.deepcopy(pipeline.allocator)
        position, applied = self.learner.position, self.learner.applied
        extra, history = self._snapshot_extra(position, applied), pipeline.history
        frozen = history.freeze()

        def write() -> None:
            blob = json.dumps(history.to_json(frozen)).encode()
            data = policy.to_bytes(extra, {HISTORY: blob})  # type: ignore[attr-defined]
            self._write_snapshot(data, position, applied)

        try:
            await asyncio.get_running_loop().run_in_executor(self.snapshots, write)
        except (OSError, UnavailableError) as e:
            metrics.SNAPSHOT_FAILURES.inc()
            log.error("policy snapshot not written (%s); the event log still holds everything", e)
        finally:
            history.thaw()


def add_services(service: BrokerService, server: grpc.aio.Server) -> None:
    """Serve the Broker and, beside it on the same port, the Catalog service (services.catalog_service)."""
    broker_pb2_grpc.add_BrokerServicer_to_server(service, server)
    catalog = CatalogService(lambda: service.writer if service.pipeline is not None else None,
                             lambda: service.catalog, service.pool)
    catalog_pb2_grpc.add_CatalogServicer_to_server(catalog, server)


async def serve(config: BrokerConfig, host: str, port: int, *,
                on_listening: Callable[[str], None] | None = None, metrics_port: int = 0, health_port: int = 0) -> int:
    """Run the broker until SIGTERM/SIGINT; returns the process exit code. metrics_port: serve
    Prometheus metrics over HTTP there (0 = off, services.metrics.AUTO_PORT = a free port);
    health_port: answer health checks in plaintext there too (0 = off; services.server.run)."""
    from services.server import Hosted, ServiceLoop, run

    # the broker lives on a loop of its own, so that this one takes calls as fast as they come
    # (services.server.ServiceLoop says why)
    own = ServiceLoop(type(asyncio.get_running_loop()))

    async def built() -> BrokerService:  # on the service loop: its channels to the shards belong there
        return BrokerService(config, freeze=True, calls=lambda: own.calls)

    try:
        service = await own.run(built())
        if metrics_port:
            metrics.watch_broker(service)
            metrics.serve(metrics_port, host)
        hosted = Hosted(SERVICE, lambda server: add_services(service, server), service.start, service.close)
        return await run(hosted, host, port, label="broker", on_listening=on_listening, security=config.security,
                         health_port=health_port, service_loop=own)
    finally:
        own.close()
