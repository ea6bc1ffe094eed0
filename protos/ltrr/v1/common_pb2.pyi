import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_TYPE_UNSPECIFIED: _ClassVar[EventType]
    EVENT_TYPE_CLICK: _ClassVar[EventType]
    EVENT_TYPE_PLAY: _ClassVar[EventType]
    EVENT_TYPE_LIKE: _ClassVar[EventType]
    EVENT_TYPE_FAVORITE: _ClassVar[EventType]
    EVENT_TYPE_SKIP: _ClassVar[EventType]
    EVENT_TYPE_REFORMULATE: _ClassVar[EventType]
EVENT_TYPE_UNSPECIFIED: EventType
EVENT_TYPE_CLICK: EventType
EVENT_TYPE_PLAY: EventType
EVENT_TYPE_LIKE: EventType
EVENT_TYPE_FAVORITE: EventType
EVENT_TYPE_SKIP: EventType
EVENT_TYPE_REFORMULATE: EventType

class Query(_message.Message):
    __slots__ = ("text", "vector", "context", "filters")
    class ContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TEXT_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    text: str
    vector: _containers.RepeatedScalarFieldContainer[float]
    context: _containers.ScalarMap[str, str]
    filters: _containers.RepeatedCompositeFieldContainer[Filter]
    def __init__(self, text: _Optional[str] = ..., vector: _Optional[_Iterable[float]] = ..., context: _Optional[_Mapping[str, str]] = ..., filters: _Optional[_Iterable[_Union[Filter, _Mapping]]] = ...) -> None: ...

class Filter(_message.Message):
    __slots__ = ("field", "values", "exclude")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_FIELD_NUMBER: _ClassVar[int]
    field: str
    values: _containers.RepeatedScalarFieldContainer[str]
    exclude: bool
    def __init__(self, field: _Optional[str] = ..., values: _Optional[_Iterable[str]] = ..., exclude: _Optional[bool] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("entity_id", "score", "rank")
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    entity_id: str
    score: float
    rank: int
    def __init__(self, entity_id: _Optional[str] = ..., score: _Optional[float] = ..., rank: _Optional[int] = ...) -> None: ...

class Slot(_message.Message):
    __slots__ = ("field", "value", "span", "start", "end", "confidence")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    SPAN_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    field: str
    value: str
    span: str
    start: int
    end: int
    confidence: float
    def __init__(self, field: _Optional[str] = ..., value: _Optional[str] = ..., span: _Optional[str] = ..., start: _Optional[int] = ..., end: _Optional[int] = ..., confidence: _Optional[float] = ...) -> None: ...

class Interpretation(_message.Message):
    __slots__ = ("slots", "free_text", "likelihood")
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    FREE_TEXT_FIELD_NUMBER: _ClassVar[int]
    LIKELIHOOD_FIELD_NUMBER: _ClassVar[int]
    slots: _containers.RepeatedCompositeFieldContainer[Slot]
    free_text: str
    likelihood: float
    def __init__(self, slots: _Optional[_Iterable[_Union[Slot, _Mapping]]] = ..., free_text: _Optional[str] = ..., likelihood: _Optional[float] = ...) -> None: ...

class FeedbackEvent(_message.Message):
    __slots__ = ("event_id", "query_text", "entity_id", "type", "value", "timestamp", "context")
    class ContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_TEXT_FIELD_NUMBER: _ClassVar[int]
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    query_text: str
    entity_id: str
    type: EventType
    value: float
    timestamp: _timestamp_pb2.Timestamp
    context: _containers.ScalarMap[str, str]
    def __init__(self, event_id: _Optional[str] = ..., query_text: _Optional[str] = ..., entity_id: _Optional[str] = ..., type: _Optional[_Union[EventType, str]] = ..., value: _Optional[float] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., context: _Optional[_Mapping[str, str]] = ...) -> None: ...
