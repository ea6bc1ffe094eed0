"""The broker: ltrr.v1.Broker on grpc.aio and uvloop. It only orchestrates; core/ decides.

Search: validate -> query understanding (the attribute shard's Understand, if it answers within a
small slice of the budget) -> features -> policy decision (a quota per strategy, with propensities)
-> parallel fan-out under the budget -> merge -> rank -> decision logged -> response.
Feedback: join by decision id -> per-strategy outcomes and reward -> durable event log ->
policy update -> forwarded to the memory shard.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from core.catalog import Entity
from core.errors import InvalidArgumentError, NotFoundError
from core.eventlog import DecisionRecord, EventLog, EventRecord
from core.merge import Merged, merge
from core.policy.features import DIM, featurize
from core.policy.history import QueryHistory
from core.policy.policies import BanditPolicy, Decision, PolicyConfig
from core.query import Limits
from core.ranking import EntityTable, make_ranker
from core.reward import acted_ranks, search_reward, strategy_outcomes
from core.storage import write_file_atomic
from core.types import EventType, FeedbackEvent, StrategyKind
from ltrr.v1 import broker_pb2, broker_pb2_grpc, common_pb2, shard_pb2
from services import convert
from services.fanout import CallResult, CallStatus, ShardPool, fan_out, lists_in_time
from services.shard import rpc

log = logging.getLogger("ltrr.broker")
SERVICE = broker_pb2.DESCRIPTOR.services_by_name["Broker"].full_name
DEFAULT_K, MAX_K = 10, 100
DEFAULT_BUDGET_MS, MIN_BUDGET_MS, MAX_BUDGET_MS = 100, 5, 10_000
RECENT_DECISIONS = 100_000
POLICY_FILE = "policy.npz"
APPLIED = "applied_event_rowid"  # the event-log position a policy snapshot has learned up to
HISTORY = "query_history"  # the query history (core.policy.history) as of that position
EVENTS_FILE = "events.sqlite"


@dataclass(frozen=True, kw_only=True)
class BrokerConfig:
    """shards: strategy name -> shard address (any subset of the strategies); state_dir: event log
    and policy snapshot; entities: the catalog (ranking features, entity-id checks); reserve_ms: part
    of the budget kept for merge and ranking; understand_fraction: share of the budget the query
    understanding call may take before allocation; save_every: policy snapshot every N updates."""

    shards: Mapping[str, str]
    state_dir: str
    entities: tuple[Entity, ...] = ()
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    ranker: str = "lambdamart"
    ranker_model: str | None = None
    reserve_ms: float = 3.0
    understand_fraction: float = 0.2
    save_every: int = 200
    seed: int = 0
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        order = [k.value for k in StrategyKind]
        unknown = [s for s in self.shards if s not in order]
        if unknown or not self.shards:
            raise ValueError(f"`shards` must name some of {order}, but got {list(self.shards)}")
        object.__setattr__(self, "shards", {s: self.shards[s] for s in order if s in self.shards})
        if not 0 <= self.understand_fraction < 1 or self.reserve_ms < 0 or self.save_every < 1:
            raise ValueError("`understand_fraction` must be in [0, 1), `reserve_ms` >= 0, `save_every` >= 1")

    @property
    def strategies(self) -> tuple[str, ...]:
        return tuple(self.shards)


@dataclass(frozen=True, slots=True)
class Logged:
    """What Feedback needs of a recent decision without reading the log."""

    record: DecisionRecord
    merged: Merged
    latency_ms: float


def _check_request(request: broker_pb2.SearchRequest) -> tuple[int, int]:
    k = request.k or DEFAULT_K
    if not 1 <= k <= MAX_K:
        raise InvalidArgumentError("k", f"must be in [1, {MAX_K}] (0 = {DEFAULT_K}), but got {k}")
    budget = request.budget_ms or DEFAULT_BUDGET_MS
    if not MIN_BUDGET_MS <= budget <= MAX_BUDGET_MS:
        raise InvalidArgumentError("budget_ms", f"must be in [{MIN_BUDGET_MS}, {MAX_BUDGET_MS}] "
                                   f"(0 = {DEFAULT_BUDGET_MS}), but got {budget}")
    return k, budget


class DecisionWriter:
    """Batches decision records onto the event log's one writer thread (one fsync per batch).
    Events go through the same thread after a flush, so a decision is always stored before any
    feedback on it."""

    def __init__(self, event_log: EventLog) -> None:
        self.log = event_log
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ltrr-eventlog")
        self.pending: list[DecisionRecord] = []
        self.lock = threading.Lock()

    def add(self, record: DecisionRecord) -> None:
        with self.lock:
            self.pending.append(record)
            first = len(self.pending) == 1
        if first:
            self.executor.submit(self.flush)

    def flush(self) -> None:
        with self.lock:
            batch, self.pending = self.pending, []
        self.log.record_decisions(batch)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        def flushed() -> Any:
            self.flush()
            return fn(*args)

        return await asyncio.get_running_loop().run_in_executor(self.executor, flushed)

    def close(self) -> None:
        self.executor.submit(self.flush).result()
        self.executor.shutdown(wait=True)
        self.log.close()


class BrokerService(broker_pb2_grpc.BrokerServicer):
    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self.strategies = config.strategies
        self.state_dir = Path(config.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.pool = ShardPool(config.shards)
        self.policy = BanditPolicy(self.strategies, DIM, config.policy)
        saved = self._load_policy()
        self.history = self._load_history(saved)
        self.table = EntityTable.from_entities(config.entities)
        self.known_ids = frozenset(self.table.ids) if config.entities else None
        self.ranker = make_ranker(config.ranker, self.table, config.ranker_model)
        log.info("ranker: %s (asked for %s)", type(self.ranker).__name__, config.ranker)
        self.rng = np.random.default_rng(config.seed)
        self.writer = DecisionWriter(EventLog(self.state_dir / EVENTS_FILE))
        self.recent: OrderedDict[str, Logged] = OrderedDict()
        self.updates = 0
        self.applied_rowid = self._replay(int(saved.get(APPLIED, 0)))

    def _load_policy(self) -> dict[str, Any]:
        """The policy snapshot's extra data after loading it; {} without one. A snapshot of another
        policy (other strategies, features or model: an upgrade or a changed config) is moved
        aside to policy.npz.incompatible, with a warning, and the policy is rebuilt from the log."""
        path = self.state_dir / POLICY_FILE
        if not path.exists():
            return {}
        try:
            return self.policy.load(path)
        except ValueError as e:
            aside = path.with_name(POLICY_FILE + ".incompatible")
            path.replace(aside)
            log.warning("policy: %s; moved it to %s and rebuilding from the event log", e, aside)
            return {}

    @staticmethod
    def _load_history(saved: Mapping[str, Any]) -> QueryHistory:
        """The query history of the policy snapshot; empty without one (the replay rebuilds it)."""
        if HISTORY not in saved:
            return QueryHistory()
        try:
            return QueryHistory.from_json(saved[HISTORY])
        except ValueError as e:
            log.warning("policy: %s; starting the query history empty", e)
            return QueryHistory()

    def _observe(self, rec: DecisionRecord, ranks: tuple[int, ...], event: FeedbackEvent | EventRecord) -> None:
        """Feed one event to the query history (a skip is not an action on an entity)."""
        if event.type is not EventType.SKIP:
            self.history.observe(rec.query_text, event.entity_id, retrieved=any(r > 0 for r in ranks))

    def _replay(self, applied: int) -> int:
        """Learn the logged events the policy snapshot does not include (after a crash, or with no
        snapshot at all): the policy is rebuilt from snapshot + event log. Returns the new watermark.
        Decisions logged with other features or quota levels (by an older policy) cannot teach this
        one and are passed over, with a count in the log."""
        log_ = self.writer.log
        events = log_.events_after(applied)
        foreign = 0
        levels = set(self.config.policy.levels)
        for rowid, event in events:
            rec = log_.decision(event.decision_id)
            applied = rowid
            ranks = acted_ranks(rec.merged(), event.entity_id)
            self._observe(rec, ranks, event)
            if rec.features.shape != (DIM,) or rec.strategies != self.strategies or not levels.issuperset(rec.quotas):
                foreign += 1
                continue
            self.policy.update(rec.features,
                               strategy_outcomes(rec.quotas, ranks, rec.answered, event.type, rec.returned))
        if events:
            log.info("policy: replayed %d logged events newer than its snapshot", len(events) - foreign)
        if foreign:
            log.warning("policy: passed over %d logged events whose decisions another policy made (other "
                        "features, strategies or quota levels)", foreign)
        return applied

    async def _understand(self, query: common_pb2.Query, timeout_s: float) -> list[Any]:
        stub = self.pool.stubs.get(StrategyKind.ATTRIBUTE.value)
        if stub is None or timeout_s <= 0:
            return []
        try:
            response = await stub.Understand(shard_pb2.UnderstandRequest(query=query), timeout=timeout_s)
        except grpc.aio.AioRpcError:
            return []
        return [convert.interpretation_from_proto(i) for i in response.interpretations]

    @rpc
    async def Search(self, request: broker_pb2.SearchRequest, context: grpc.aio.ServicerContext
                     ) -> broker_pb2.SearchResponse:
        started = time.perf_counter()
        k, budget_ms = _check_request(request)
        query = convert.query_from_proto(request.query, self.config.limits, vector_dim=len(request.query.vector))
        deadline = started + (budget_ms - self.config.reserve_ms) / 1000
        interps = await self._understand(request.query, budget_ms * self.config.understand_fraction / 1000)
        x = featurize(query.text, query.context, interps, self.history)
        decision = self.policy.decide(x, self.rng)
        quotas = dict(zip(self.strategies, decision.quotas, strict=True))
        results = await fan_out(self.pool, request.query, quotas, max(deadline - time.perf_counter(), 0.001))
        for s, r in enumerate(results):
            if r.status is CallStatus.OK:
                self.policy.observe_latency(s, r.latency_ms)
        answered = lists_in_time(results)
        merged = merge(answered, self.strategies)
        order, scores = self.ranker.rank(merged, query.text, k)
        record = DecisionRecord(
            decision_id=uuid.uuid4().hex, ts=time.time(), query_text=query.text, context=dict(query.context),
            features=x, strategies=self.strategies, quotas=decision.quotas, allocation=decision.allocation,
            propensity=decision.propensity, marginals=decision.marginals, policy=self.config.policy.kind.value,
            lists=tuple(answered), final=tuple(merged.entity_ids[i] for i in order.tolist()))
        self._remember(Logged(record, merged, max((r.latency_ms for r in results), default=0.0)))
        self.writer.add(record)
        return self._response(record.decision_id, merged, order, scores, decision, results, started,
                              request.return_candidates)

    def _response(self, decision_id: str, merged: Merged, order: np.ndarray, scores: np.ndarray, decision: Decision,
                  results: list[CallResult], started: float, with_candidates: bool) -> broker_pb2.SearchResponse:
        out = [broker_pb2.Result(entity_id=merged.entity_ids[i], score=s, rank=r, strategies=merged.found_by(i))
               for r, (i, s) in enumerate(zip(order.tolist(), scores.tolist(), strict=True), start=1)]
        reports = [broker_pb2.StrategyReport(strategy=r.strategy, quota=r.quota, status=int(r.status),
                                             returned=len(r.hits.entity_ids) if r.hits else 0,
                                             latency_ms=r.latency_ms, propensity=decision.marginals[s])
                   for s, r in enumerate(results)]
        degraded = any(r.status in (CallStatus.TIMEOUT, CallStatus.ERROR) for r in results)
        candidates = [broker_pb2.MergedCandidate(entity_id=eid, ranks=ranks) for eid, ranks
                      in zip(merged.entity_ids, merged.ranks.tolist(), strict=True)] if with_candidates else []
        return broker_pb2.SearchResponse(decision_id=decision_id, results=out, strategies=reports, degraded=degraded,
                                         propensity=decision.propensity, candidates=candidates,
                                         took_ms=(time.perf_counter() - started) * 1000)

    def _remember(self, logged: Logged) -> None:
        self.recent[logged.record.decision_id] = logged
        if len(self.recent) > RECENT_DECISIONS:
            self.recent.popitem(last=False)

    async def _logged(self, decision_id: str) -> Logged:
        logged = self.recent.get(decision_id)
        if logged is None:
            try:
                record = await self.writer.run(self.writer.log.decision, decision_id)
            except NotFoundError:
                raise NotFoundError(f"decision_id: unknown decision {decision_id!r}") from None
            logged = Logged(record, record.merged(), 0.0)
        return logged

    @rpc
    async def Feedback(self, request: broker_pb2.FeedbackRequest, context: grpc.aio.ServicerContext
                       ) -> broker_pb2.FeedbackResponse:
        logged = await self._logged(request.decision_id)
        if self.known_ids is not None and request.entity_id not in self.known_ids:
            raise NotFoundError(f"entity_id: {request.entity_id!r} is not in the catalog")
        event = convert.event_from_proto(common_pb2.FeedbackEvent(
            event_id=request.event_id or f"{request.decision_id}:{request.entity_id}:{request.type}",
            query_text=logged.record.query_text, entity_id=request.entity_id, type=request.type,
            value=request.value, timestamp=request.timestamp, context=logged.record.context), "feedback")
        rec = logged.record
        ranks = acted_ranks(logged.merged, event.entity_id)
        c = self.config.policy
        reward = search_reward(rec.quotas, ranks, event.type, event.value, cost_per_candidate=c.cost_per_candidate,
                               cost_per_ms=c.cost_per_ms, latency_ms=logged.latency_ms, fetched=rec.fetched)
        rowid = await self.writer.run(self._record, EventRecord(
            event_id=event.event_id, decision_id=rec.decision_id, entity_id=event.entity_id, type=event.type,
            value=event.value, ts=event.timestamp or time.time(), reward=reward))
        if rowid:
            self._learn(rec, ranks, event, rowid)
        return broker_pb2.FeedbackResponse(duplicate=not rowid, reward=reward)

    def _record(self, event: EventRecord) -> int:
        """On the writer thread: store the event; its log position, 0 for a duplicate. Events are
        written by this one thread only, so the newest position right after is this event's."""
        return self.writer.log.last_event_rowid() if self.writer.log.record_event(event) else 0

    def _learn(self, rec: DecisionRecord, ranks: tuple[int, ...], event: FeedbackEvent, rowid: int) -> None:
        self.policy.update(rec.features, strategy_outcomes(rec.quotas, ranks, rec.answered, event.type, rec.returned))
        self._observe(rec, ranks, event)
        self.applied_rowid = rowid
        self.updates += 1
        if self.updates % self.config.save_every == 0:
            self._save_policy_async()
        memory = self.pool.stubs.get(StrategyKind.MEMORY.value)
        if memory is not None and event.type is not EventType.SKIP:
            task = asyncio.ensure_future(memory.Learn(shard_pb2.LearnRequest(events=[convert.event_to_proto(event)]),
                                                      timeout=5.0))
            task.add_done_callback(_log_failure)

    def _save_policy_async(self) -> None:
        """Snapshot the policy here (a consistent copy, with the log position it has learned up
        to); write it on the writer thread."""
        data = self.policy.to_bytes({APPLIED: self.applied_rowid, HISTORY: self.history.to_json()})
        self.writer.executor.submit(write_file_atomic, self.state_dir / POLICY_FILE, data)

    async def close(self) -> None:
        await self.pool.close()
        self._save_policy_async()
        self.writer.close()


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("forwarding feedback to the memory shard failed: %s", task.exception())


async def serve(config: BrokerConfig, host: str, port: int, *,
                on_listening: Callable[[str], None] | None = None) -> int:
    """Run the broker until SIGTERM/SIGINT; returns the process exit code."""
    from services.server import Hosted, run

    service = BrokerService(config)

    async def load() -> None:
        log.info("broker over %s", ", ".join(f"{s}={a}" for s, a in config.shards.items()))

    hosted = Hosted(SERVICE, lambda server: broker_pb2_grpc.add_BrokerServicer_to_server(service, server), load,
                    service.close)
    return await run(hosted, host, port, label="broker", on_listening=on_listening)
