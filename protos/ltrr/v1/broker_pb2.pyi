import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from ltrr.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StrategyStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STRATEGY_STATUS_UNSPECIFIED: _ClassVar[StrategyStatus]
    STRATEGY_STATUS_OK: _ClassVar[StrategyStatus]
    STRATEGY_STATUS_TIMEOUT: _ClassVar[StrategyStatus]
    STRATEGY_STATUS_ERROR: _ClassVar[StrategyStatus]
    STRATEGY_STATUS_SKIPPED: _ClassVar[StrategyStatus]
STRATEGY_STATUS_UNSPECIFIED: StrategyStatus
STRATEGY_STATUS_OK: StrategyStatus
STRATEGY_STATUS_TIMEOUT: StrategyStatus
STRATEGY_STATUS_ERROR: StrategyStatus
STRATEGY_STATUS_SKIPPED: StrategyStatus

class SearchRequest(_message.Message):
    __slots__ = ("query", "k", "budget_ms", "return_candidates", "plan")
    class PlanEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    QUERY_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    BUDGET_MS_FIELD_NUMBER: _ClassVar[int]
    RETURN_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    query: _common_pb2.Query
    k: int
    budget_ms: int
    return_candidates: bool
    plan: _containers.ScalarMap[str, int]
    def __init__(self, query: _Optional[_Union[_common_pb2.Query, _Mapping]] = ..., k: _Optional[int] = ..., budget_ms: _Optional[int] = ..., return_candidates: _Optional[bool] = ..., plan: _Optional[_Mapping[str, int]] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("decision_id", "results", "strategies", "degraded", "took_ms", "propensity", "candidates", "forced", "policy_version")
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    STRATEGIES_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    TOOK_MS_FIELD_NUMBER: _ClassVar[int]
    PROPENSITY_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    FORCED_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    results: _containers.RepeatedCompositeFieldContainer[Result]
    strategies: _containers.RepeatedCompositeFieldContainer[StrategyReport]
    degraded: bool
    took_ms: float
    propensity: float
    candidates: _containers.RepeatedCompositeFieldContainer[MergedCandidate]
    forced: bool
    policy_version: int
    def __init__(self, decision_id: _Optional[str] = ..., results: _Optional[_Iterable[_Union[Result, _Mapping]]] = ..., strategies: _Optional[_Iterable[_Union[StrategyReport, _Mapping]]] = ..., degraded: _Optional[bool] = ..., took_ms: _Optional[float] = ..., propensity: _Optional[float] = ..., candidates: _Optional[_Iterable[_Union[MergedCandidate, _Mapping]]] = ..., forced: _Optional[bool] = ..., policy_version: _Optional[int] = ...) -> None: ...

class MergedCandidate(_message.Message):
    __slots__ = ("entity_id", "ranks")
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    RANKS_FIELD_NUMBER: _ClassVar[int]
    entity_id: str
    ranks: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, entity_id: _Optional[str] = ..., ranks: _Optional[_Iterable[int]] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("entity_id", "score", "rank", "strategies")
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    STRATEGIES_FIELD_NUMBER: _ClassVar[int]
    entity_id: str
    score: float
    rank: int
    strategies: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, entity_id: _Optional[str] = ..., score: _Optional[float] = ..., rank: _Optional[int] = ..., strategies: _Optional[_Iterable[str]] = ...) -> None: ...

class StrategyReport(_message.Message):
    __slots__ = ("strategy", "quota", "returned", "status", "latency_ms", "propensity", "coverage", "partition_quota", "refetched")
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    QUOTA_FIELD_NUMBER: _ClassVar[int]
    RETURNED_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    PROPENSITY_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    PARTITION_QUOTA_FIELD_NUMBER: _ClassVar[int]
    REFETCHED_FIELD_NUMBER: _ClassVar[int]
    strategy: str
    quota: int
    returned: int
    status: StrategyStatus
    latency_ms: float
    propensity: float
    coverage: float
    partition_quota: int
    refetched: int
    def __init__(self, strategy: _Optional[str] = ..., quota: _Optional[int] = ..., returned: _Optional[int] = ..., status: _Optional[_Union[StrategyStatus, str]] = ..., latency_ms: _Optional[float] = ..., propensity: _Optional[float] = ..., coverage: _Optional[float] = ..., partition_quota: _Optional[int] = ..., refetched: _Optional[int] = ...) -> None: ...

class FeedbackRequest(_message.Message):
    __slots__ = ("decision_id", "entity_id", "type", "value", "timestamp", "event_id")
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    entity_id: str
    type: _common_pb2.EventType
    value: float
    timestamp: _timestamp_pb2.Timestamp
    event_id: str
    def __init__(self, decision_id: _Optional[str] = ..., entity_id: _Optional[str] = ..., type: _Optional[_Union[_common_pb2.EventType, str]] = ..., value: _Optional[float] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., event_id: _Optional[str] = ...) -> None: ...

class FeedbackResponse(_message.Message):
    __slots__ = ("duplicate", "reward")
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    duplicate: bool
    reward: float
    def __init__(self, duplicate: _Optional[bool] = ..., reward: _Optional[float] = ...) -> None: ...

class BrokerDescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class BrokerDescribeResponse(_message.Message):
    __slots__ = ("strategies", "policy", "applied_events", "policy_digest", "store", "applied_position")
    STRATEGIES_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    APPLIED_EVENTS_FIELD_NUMBER: _ClassVar[int]
    POLICY_DIGEST_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    APPLIED_POSITION_FIELD_NUMBER: _ClassVar[int]
    strategies: _containers.RepeatedCompositeFieldContainer[StrategyTopology]
    policy: str
    applied_events: int
    policy_digest: str
    store: str
    applied_position: int
    def __init__(self, strategies: _Optional[_Iterable[_Union[StrategyTopology, _Mapping]]] = ..., policy: _Optional[str] = ..., applied_events: _Optional[int] = ..., policy_digest: _Optional[str] = ..., store: _Optional[str] = ..., applied_position: _Optional[int] = ...) -> None: ...

class StrategyTopology(_message.Message):
    __slots__ = ("strategy", "partitioned_by", "partitions")
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    PARTITIONED_BY_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    strategy: str
    partitioned_by: str
    partitions: _containers.RepeatedCompositeFieldContainer[PartitionTopology]
    def __init__(self, strategy: _Optional[str] = ..., partitioned_by: _Optional[str] = ..., partitions: _Optional[_Iterable[_Union[PartitionTopology, _Mapping]]] = ...) -> None: ...

class PartitionTopology(_message.Message):
    __slots__ = ("partition", "replicas")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    partition: int
    replicas: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, partition: _Optional[int] = ..., replicas: _Optional[_Iterable[str]] = ...) -> None: ...
