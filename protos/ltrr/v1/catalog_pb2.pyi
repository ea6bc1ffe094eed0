from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Entity(_message.Message):
    __slots__ = ("id", "type", "fields", "attributes", "popularity", "vector")
    class FieldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: AttributeValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[AttributeValue, _Mapping]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    POPULARITY_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    id: str
    type: str
    fields: _containers.ScalarMap[str, str]
    attributes: _containers.MessageMap[str, AttributeValue]
    popularity: float
    vector: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, id: _Optional[str] = ..., type: _Optional[str] = ..., fields: _Optional[_Mapping[str, str]] = ..., attributes: _Optional[_Mapping[str, AttributeValue]] = ..., popularity: _Optional[float] = ..., vector: _Optional[_Iterable[float]] = ...) -> None: ...

class AttributeValue(_message.Message):
    __slots__ = ("text", "texts", "number")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    text: str
    texts: TextList
    number: float
    def __init__(self, text: _Optional[str] = ..., texts: _Optional[_Union[TextList, _Mapping]] = ..., number: _Optional[float] = ...) -> None: ...

class TextList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, values: _Optional[_Iterable[str]] = ...) -> None: ...

class CatalogWrite(_message.Message):
    __slots__ = ("upsert", "delete_id", "version")
    UPSERT_FIELD_NUMBER: _ClassVar[int]
    DELETE_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    upsert: Entity
    delete_id: str
    version: int
    def __init__(self, upsert: _Optional[_Union[Entity, _Mapping]] = ..., delete_id: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class CatalogWriteRequest(_message.Message):
    __slots__ = ("writes", "wait", "wait_timeout_ms")
    WRITES_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    WAIT_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    writes: _containers.RepeatedCompositeFieldContainer[CatalogWrite]
    wait: bool
    wait_timeout_ms: int
    def __init__(self, writes: _Optional[_Iterable[_Union[CatalogWrite, _Mapping]]] = ..., wait: _Optional[bool] = ..., wait_timeout_ms: _Optional[int] = ...) -> None: ...

class CatalogWriteResponse(_message.Message):
    __slots__ = ("results", "position", "visible")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    VISIBLE_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[CatalogWriteResult]
    position: int
    visible: bool
    def __init__(self, results: _Optional[_Iterable[_Union[CatalogWriteResult, _Mapping]]] = ..., position: _Optional[int] = ..., visible: _Optional[bool] = ...) -> None: ...

class CatalogWriteResult(_message.Message):
    __slots__ = ("id", "outcome", "version", "position")
    class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        OUTCOME_UNSPECIFIED: _ClassVar[CatalogWriteResult.Outcome]
        OUTCOME_APPLIED: _ClassVar[CatalogWriteResult.Outcome]
        OUTCOME_STALE: _ClassVar[CatalogWriteResult.Outcome]
    OUTCOME_UNSPECIFIED: CatalogWriteResult.Outcome
    OUTCOME_APPLIED: CatalogWriteResult.Outcome
    OUTCOME_STALE: CatalogWriteResult.Outcome
    ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    id: str
    outcome: CatalogWriteResult.Outcome
    version: int
    position: int
    def __init__(self, id: _Optional[str] = ..., outcome: _Optional[_Union[CatalogWriteResult.Outcome, str]] = ..., version: _Optional[int] = ..., position: _Optional[int] = ...) -> None: ...

class CatalogStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CatalogStatusResponse(_message.Message):
    __slots__ = ("log_position", "replicas", "visibility_bound_ms")
    LOG_POSITION_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    VISIBILITY_BOUND_MS_FIELD_NUMBER: _ClassVar[int]
    log_position: int
    replicas: _containers.RepeatedCompositeFieldContainer[CatalogReplicaStatus]
    visibility_bound_ms: int
    def __init__(self, log_position: _Optional[int] = ..., replicas: _Optional[_Iterable[_Union[CatalogReplicaStatus, _Mapping]]] = ..., visibility_bound_ms: _Optional[int] = ...) -> None: ...

class CatalogReplicaStatus(_message.Message):
    __slots__ = ("strategy", "partition", "address", "applied_position", "pending_entities", "error", "live")
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    APPLIED_POSITION_FIELD_NUMBER: _ClassVar[int]
    PENDING_ENTITIES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    strategy: str
    partition: int
    address: str
    applied_position: int
    pending_entities: int
    error: str
    live: bool
    def __init__(self, strategy: _Optional[str] = ..., partition: _Optional[int] = ..., address: _Optional[str] = ..., applied_position: _Optional[int] = ..., pending_entities: _Optional[int] = ..., error: _Optional[str] = ..., live: _Optional[bool] = ...) -> None: ...
