"""The records of the event log (core.eventlog, core.eventlog_pg): a decision, a feedback event, the
logged bandit feedback for off-policy evaluation, and their encoding as table rows, shared by both
backends (core.eventlog_schema describes the columns)."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.eventlog_schema import COLUMNS, COMPACTED, decode_lists, encode_lists
from core.merge import Merged, StrategyList, merge
from core.ranking_train import TrainingGroup, graded_labels
from core.types import EventType

__all__ = ["BanditLog", "DecisionRecord", "EventRecord", "bandit_log", "decision_from_row", "decision_values",
           "event_from_row", "event_values"]

DECISION_COLUMNS = COLUMNS["decisions"]
# An event row as read: its position first.
EVENT_COLUMNS = ("position", "event_id", "decision_id", "entity_id", "type", "value", "ts", "reward")


def check_cursor(name: str, position: object) -> None:
    """ValueError unless `name` is non-empty and `position` an int >= 0 (an event store's cursor)."""
    if not name:
        raise ValueError("`name` must be non-empty")
    if isinstance(position, bool) or not isinstance(position, int | np.integer) or position < 0:
        raise ValueError(f"`position` must be an int >= 0, but got {position!r}")


@dataclass(frozen=True, kw_only=True)
class DecisionRecord:
    """One search as the broker decided and served it (core.eventlog_schema describes the fields).

    ts: s since the epoch. features: float64 (d,). quotas, marginals: one per strategy. lists: the
    answered strategies' lists (a strategy called but absent timed out or failed). final: entity ids
    served, best first. latency_ms: the slowest called strategy's latency (ms), which the reward
    charges. policy_version: the feedback events the deciding policy had applied (0: unknown or
    none). compacted: retention dropped `lists` and `final` (both empty): the ranks are unknown.
    """

    decision_id: str
    ts: float
    query_text: str
    context: Mapping[str, str]
    features: np.ndarray
    strategies: tuple[str, ...]
    quotas: tuple[int, ...]
    allocation: int
    propensity: float
    marginals: tuple[float, ...]
    policy: str
    lists: tuple[StrategyList, ...]
    final: tuple[str, ...]
    latency_ms: float = 0.0
    compacted: bool = False
    policy_version: int = 0

    def __post_init__(self) -> None:
        if not self.decision_id:
            raise ValueError("`decision_id` must be non-empty")
        if not math.isfinite(self.ts):
            raise ValueError(f"`ts` must be finite, but got {self.ts}")
        if isinstance(self.policy_version, bool) or not isinstance(self.policy_version, int | np.integer) \
                or self.policy_version < 0:
            raise ValueError(f"`policy_version` must be an int >= 0, but got {self.policy_version!r}")
        if not (math.isfinite(self.latency_ms) and self.latency_ms >= 0):
            raise ValueError(f"`latency_ms` must be finite and >= 0, but got {self.latency_ms}")
        if self.compacted and (self.lists or self.final):
            raise ValueError("a `compacted` decision must have empty `lists` and `final`")
        x = np.ascontiguousarray(self.features, dtype=np.float64)
        if x.ndim != 1 or not np.isfinite(x).all():
            raise ValueError(f"`features` must be a finite 1-d vector, but got shape {x.shape}")
        object.__setattr__(self, "features", x)
        n = len(self.strategies)
        if len(self.quotas) != n or len(self.marginals) != n:
            raise ValueError(f"`quotas` and `marginals` must have {n} entries (one per strategy), but got "
                             f"{len(self.quotas)} and {len(self.marginals)}")
        if self.allocation < 0:
            raise ValueError(f"`allocation` must be >= 0, but got {self.allocation}")
        if not (0.0 < self.propensity <= 1.0):
            raise ValueError(f"`propensity` must be in (0, 1], but got {self.propensity}")
        names = [lst.strategy for lst in self.lists]
        if len(set(names)) != len(names) or not set(names) <= set(self.strategies):
            raise ValueError(f"`lists` must come from distinct strategies among {self.strategies}, but got {names}")

    @property
    def answered(self) -> tuple[bool, ...]:
        """Per strategy: did it answer in time (it has a list)?"""
        names = {lst.strategy for lst in self.lists}
        return tuple(s in names for s in self.strategies)

    @property
    def returned(self) -> tuple[int | None, ...]:
        """Per strategy: how many candidates it returned within its quota (None: no answer in time)."""
        counts = {lst.strategy: len(lst.entity_ids) for lst in self.lists}
        return tuple(min(counts[s], q) if s in counts else None
                     for s, q in zip(self.strategies, self.quotas, strict=True))

    @property
    def fetched(self) -> int:
        """The candidates returned in all (within the quotas)."""
        return sum(n for n in self.returned if n is not None)

    def merged(self) -> Merged:
        """The candidates as the broker merged them (core.merge.merge of `lists`)."""
        return merge(self.lists, self.strategies)


@dataclass(frozen=True, kw_only=True)
class EventRecord:
    """One feedback event. value: strength in [0, 1] (0 = not given); ts: s since the epoch;
    reward: what the policy was given for it (core.reward.search_reward; 0 for an event that did
    not teach: core.pipeline). entity_id: empty only for a REFORMULATE naming nothing."""

    event_id: str
    decision_id: str
    entity_id: str
    type: EventType
    value: float = 0.0
    ts: float = 0.0
    reward: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "type", EventType(self.type))
        for name in ("event_id", "decision_id"):
            if not getattr(self, name):
                raise ValueError(f"`{name}` must be non-empty")
        if not self.entity_id and self.type is not EventType.REFORMULATE:
            raise ValueError(f"`entity_id` must be non-empty for a {self.type.name} event (only a REFORMULATE "
                             "may name nothing)")
        for name in ("value", "ts", "reward"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"`{name}` must be finite, but got {getattr(self, name)}")


@dataclass(frozen=True, kw_only=True)
class BanditLog:
    """Logged bandit feedback for off-policy evaluation, one round per decision, in time order.

    contexts float64 (n, d); action int64 (n,): allocation index; reward float64 (n,): the highest
    logged reward of the decision's events, 0 without events; pscore float64 (n,): propensity;
    quotas int64 (n, S).
    """

    strategies: tuple[str, ...]
    decision_ids: tuple[str, ...]
    contexts: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    pscore: np.ndarray
    quotas: np.ndarray = field(repr=False)


def decision_values(record: DecisionRecord) -> tuple[Any, ...]:
    """The decisions table row of `record`, encoded as it is stored (benchmarks time this)."""
    return (record.decision_id, record.ts, record.query_text, json.dumps(dict(record.context)),
            record.features.astype("<f8").tobytes(), json.dumps(list(record.strategies)),
            json.dumps([int(q) for q in record.quotas]), int(record.allocation), float(record.propensity),
            json.dumps([float(m) for m in record.marginals]), record.policy,
            COMPACTED if record.compacted else encode_lists(record.lists), json.dumps(list(record.final)),
            float(record.latency_ms), int(record.policy_version))


def decision_from_row(row: Sequence[Any]) -> DecisionRecord:
    """The DecisionRecord of a decisions row (COLUMNS order, as decision_values encodes it)."""
    lists = decode_lists(row[11])
    return DecisionRecord(
        decision_id=row[0], ts=row[1], query_text=row[2], context=json.loads(row[3]),
        features=np.frombuffer(row[4], dtype="<f8").copy(), strategies=tuple(json.loads(row[5])),
        quotas=tuple(json.loads(row[6])), allocation=row[7], propensity=row[8],
        marginals=tuple(json.loads(row[9])), policy=row[10], lists=lists or (), final=tuple(json.loads(row[12])),
        latency_ms=row[13], compacted=lists is None, policy_version=int(row[14]))


def event_from_row(r: Sequence[Any]) -> EventRecord:
    """The event of a row of EVENT_COLUMNS (r[0] is the position)."""
    return EventRecord(event_id=r[1], decision_id=r[2], entity_id=r[3], type=EventType(r[4]), value=r[5],
                       ts=r[6], reward=r[7])


def event_values(event: EventRecord) -> tuple[Any, ...]:
    """The events table row of `event` without its position (EVENT_COLUMNS[1:])."""
    return (event.event_id, event.decision_id, event.entity_id, int(event.type), event.value, event.ts, event.reward)


def training_groups_of(rows: Iterable[Sequence[Any]]) -> Iterator[TrainingGroup]:
    """One TrainingGroup per decision of `rows`: a decision's columns then (entity_id, type, value)
    of one of its events, grouped by decision, events in position order."""
    n = len(COLUMNS["decisions"])
    for _, group in itertools.groupby(rows, key=lambda r: r[0]):
        batch = list(group)
        record = decision_from_row(batch[0][:n])
        merged = record.merged()
        yield TrainingGroup(query_text=record.query_text, merged=merged,
                            labels=graded_labels(merged, ((r[n], r[n + 1], r[n + 2]) for r in batch)))


def bandit_log(rows: Sequence[Sequence[Any]], strategies: Sequence[str] | None, policy: str | None) -> BanditLog:
    """The BanditLog of decision rows (decision_id, strategies, features, allocation, propensity,
    quotas, policy, max event reward or None) in time order, filtered by `strategies` and `policy`
    (EventLog.bandit_feedback)."""
    want = None if strategies is None else list(strategies)
    rows = [r for r in rows if (want is None or json.loads(r[1]) == want) and (policy is None or r[6] == policy)]
    if not rows:
        raise ValueError(f"no logged decisions for strategies {want} and policy {policy!r}")
    kinds = {(r[1], len(r[2])) for r in rows}
    if len(kinds) > 1:
        raise ValueError(f"logged decisions mix strategy sets or feature sizes {sorted(kinds)}; pass `strategies`")
    return BanditLog(
        strategies=tuple(json.loads(rows[0][1])), decision_ids=tuple(r[0] for r in rows),
        contexts=np.vstack([np.frombuffer(r[2], dtype="<f8") for r in rows]),
        action=np.array([r[3] for r in rows], dtype=np.int64),
        reward=np.array([0.0 if r[7] is None else r[7] for r in rows], dtype=np.float64),
        pscore=np.array([r[4] for r in rows], dtype=np.float64),
        quotas=np.array([json.loads(r[5]) for r in rows], dtype=np.int64))
