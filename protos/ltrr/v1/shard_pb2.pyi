from ltrr.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RetrieveRequest(_message.Message):
    __slots__ = ("query", "quota")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    QUOTA_FIELD_NUMBER: _ClassVar[int]
    query: _common_pb2.Query
    quota: int
    def __init__(self, query: _Optional[_Union[_common_pb2.Query, _Mapping]] = ..., quota: _Optional[int] = ...) -> None: ...

class RetrieveResponse(_message.Message):
    __slots__ = ("strategy", "candidates", "total_matches", "interpretations", "took_ms")
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MATCHES_FIELD_NUMBER: _ClassVar[int]
    INTERPRETATIONS_FIELD_NUMBER: _ClassVar[int]
    TOOK_MS_FIELD_NUMBER: _ClassVar[int]
    strategy: str
    candidates: _containers.RepeatedCompositeFieldContainer[_common_pb2.Candidate]
    total_matches: int
    interpretations: _containers.RepeatedCompositeFieldContainer[_common_pb2.Interpretation]
    took_ms: float
    def __init__(self, strategy: _Optional[str] = ..., candidates: _Optional[_Iterable[_Union[_common_pb2.Candidate, _Mapping]]] = ..., total_matches: _Optional[int] = ..., interpretations: _Optional[_Iterable[_Union[_common_pb2.Interpretation, _Mapping]]] = ..., took_ms: _Optional[float] = ...) -> None: ...

class UnderstandRequest(_message.Message):
    __slots__ = ("query", "max_interpretations")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    MAX_INTERPRETATIONS_FIELD_NUMBER: _ClassVar[int]
    query: _common_pb2.Query
    max_interpretations: int
    def __init__(self, query: _Optional[_Union[_common_pb2.Query, _Mapping]] = ..., max_interpretations: _Optional[int] = ...) -> None: ...

class UnderstandResponse(_message.Message):
    __slots__ = ("interpretations", "took_ms")
    INTERPRETATIONS_FIELD_NUMBER: _ClassVar[int]
    TOOK_MS_FIELD_NUMBER: _ClassVar[int]
    interpretations: _containers.RepeatedCompositeFieldContainer[_common_pb2.Interpretation]
    took_ms: float
    def __init__(self, interpretations: _Optional[_Iterable[_Union[_common_pb2.Interpretation, _Mapping]]] = ..., took_ms: _Optional[float] = ...) -> None: ...

class LearnRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_common_pb2.FeedbackEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[_common_pb2.FeedbackEvent, _Mapping]]] = ...) -> None: ...

class LearnResponse(_message.Message):
    __slots__ = ("accepted", "duplicates")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    duplicates: int
    def __init__(self, accepted: _Optional[int] = ..., duplicates: _Optional[int] = ...) -> None: ...

class DescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DescribeResponse(_message.Message):
    __slots__ = ("strategy", "format_version", "index_id", "num_entities", "num_deleted", "max_quota", "max_query_chars", "filter_fields", "vector_dim", "params")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    FORMAT_VERSION_FIELD_NUMBER: _ClassVar[int]
    INDEX_ID_FIELD_NUMBER: _ClassVar[int]
    NUM_ENTITIES_FIELD_NUMBER: _ClassVar[int]
    NUM_DELETED_FIELD_NUMBER: _ClassVar[int]
    MAX_QUOTA_FIELD_NUMBER: _ClassVar[int]
    MAX_QUERY_CHARS_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELDS_FIELD_NUMBER: _ClassVar[int]
    VECTOR_DIM_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    strategy: str
    format_version: int
    index_id: str
    num_entities: int
    num_deleted: int
    max_quota: int
    max_query_chars: int
    filter_fields: _containers.RepeatedScalarFieldContainer[str]
    vector_dim: int
    params: _containers.ScalarMap[str, str]
    def __init__(self, strategy: _Optional[str] = ..., format_version: _Optional[int] = ..., index_id: _Optional[str] = ..., num_entities: _Optional[int] = ..., num_deleted: _Optional[int] = ..., max_quota: _Optional[int] = ..., max_query_chars: _Optional[int] = ..., filter_fields: _Optional[_Iterable[str]] = ..., vector_dim: _Optional[int] = ..., params: _Optional[_Mapping[str, str]] = ...) -> None: ...

class CatalogPositionRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CatalogPositionResponse(_message.Message):
    __slots__ = ("applied_position", "base_position", "pending_entities", "live")
    APPLIED_POSITION_FIELD_NUMBER: _ClassVar[int]
    BASE_POSITION_FIELD_NUMBER: _ClassVar[int]
    PENDING_ENTITIES_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    applied_position: int
    base_position: int
    pending_entities: int
    live: bool
    def __init__(self, applied_position: _Optional[int] = ..., base_position: _Optional[int] = ..., pending_entities: _Optional[int] = ..., live: _Optional[bool] = ...) -> None: ...
