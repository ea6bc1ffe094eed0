"""The catalog's wire messages (ltrr.v1.catalog_pb2) <-> core's Entity and CatalogWrite.

`writes_from_proto` checks a whole batch before anything is written (the Write RPC is all or
nothing): the first bad item is an InvalidArgumentError naming it and its field, e.g.
"writes[3].upsert.popularity: must be finite and >= 0, but got nan". Version 0 is "now": the
current time in microseconds since the Unix epoch, made strictly increasing within a batch so that
two writes of one id in one request keep their order.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

from core.catalog import AttributeValue, Entity, id_problem
from core.catalog_log import MAX_VERSION, MAX_WRITES_PER_BATCH, CatalogWrite
from core.errors import CatalogError, InvalidArgumentError
from ltrr.v1 import catalog_pb2

MAX_FIELDS = 64
MAX_VECTOR_DIM = 4096


def entity_to_proto(entity: Entity) -> catalog_pb2.Entity:
    attributes = {}
    for name, value in entity.attributes.items():
        if isinstance(value, str):
            attributes[name] = catalog_pb2.AttributeValue(text=value)
        elif isinstance(value, tuple):
            attributes[name] = catalog_pb2.AttributeValue(texts=catalog_pb2.TextList(values=list(value)))
        else:
            attributes[name] = catalog_pb2.AttributeValue(number=float(value))
    return catalog_pb2.Entity(id=entity.id, type=entity.type, fields=dict(entity.fields), attributes=attributes,
                              popularity=entity.popularity, vector=list(entity.vector or ()))


def _check_id(entity_id: str, where: str) -> None:
    if problem := id_problem(entity_id):
        raise InvalidArgumentError(where, problem)


def _attribute(value: catalog_pb2.AttributeValue, where: str) -> AttributeValue:
    kind = value.WhichOneof("value")
    if kind == "text":
        return str(value.text)
    if kind == "texts":
        return tuple(value.texts.values)
    if kind == "number":
        if not math.isfinite(value.number):
            raise InvalidArgumentError(where, f"must be finite, but got {value.number}")
        return float(value.number)
    raise InvalidArgumentError(where, "must hold a text, a list of texts or a number, but got none")


def entity_from_proto(entity: catalog_pb2.Entity, where: str) -> Entity:
    """Validate one wire entity; `where` prefixes field names in errors (e.g. "writes[3].upsert")."""
    _check_id(entity.id, f"{where}.id")
    if not (math.isfinite(entity.popularity) and entity.popularity >= 0):
        raise InvalidArgumentError(f"{where}.popularity", f"must be finite and >= 0, but got {entity.popularity}")
    if len(entity.fields) > MAX_FIELDS:
        raise InvalidArgumentError(f"{where}.fields", f"must hold at most {MAX_FIELDS} fields, but got "
                                                      f"{len(entity.fields)}")
    if len(entity.vector) > MAX_VECTOR_DIM:
        raise InvalidArgumentError(f"{where}.vector", f"must have at most {MAX_VECTOR_DIM} values, but got "
                                                      f"{len(entity.vector)}")
    vector = tuple(entity.vector)
    bad = next((i for i, x in enumerate(vector) if not math.isfinite(x)), None)
    if bad is not None:
        raise InvalidArgumentError(f"{where}.vector[{bad}]", f"must be finite, but got {vector[bad]}")
    attributes = {name: _attribute(value, f"{where}.attributes[{name!r}]") for name, value in entity.attributes.items()}
    try:
        return Entity(id=entity.id, type=entity.type or "doc", fields=dict(entity.fields), attributes=attributes,
                      popularity=float(entity.popularity), vector=vector or None)
    except CatalogError as err:  # a check Entity makes that the ones above do not
        raise InvalidArgumentError(where, str(err)) from None


def write_to_proto(write: CatalogWrite | Entity | str, version: int = 0) -> catalog_pb2.CatalogWrite:
    """A wire write: an Entity (upsert) or an id (delete) with `version` (0: the broker's now), or a
    CatalogWrite as it is."""
    if isinstance(write, CatalogWrite):
        return write_to_proto(write.entity if write.entity is not None else write.entity_id, write.version)
    if isinstance(write, Entity):
        return catalog_pb2.CatalogWrite(upsert=entity_to_proto(write), version=version)
    return catalog_pb2.CatalogWrite(delete_id=write, version=version)


class Clock:
    """Versions for writes that ask for "now": microseconds since the epoch, strictly increasing
    across calls (two writes in one microsecond still get distinct, ordered versions)."""

    def __init__(self) -> None:
        self.last = 0

    def now_us(self) -> int:
        self.last = max(self.last + 1, time.time_ns() // 1000)
        return self.last


def writes_from_proto(writes: Sequence[catalog_pb2.CatalogWrite], clock: Clock) -> list[CatalogWrite]:
    """The batch as core writes, every item checked first (module docstring)."""
    if not 1 <= len(writes) <= MAX_WRITES_PER_BATCH:
        raise InvalidArgumentError("writes", f"must hold 1..{MAX_WRITES_PER_BATCH} writes, but got {len(writes)}")
    out = []
    for i, write in enumerate(writes):
        where = f"writes[{i}]"
        if write.version > MAX_VERSION:
            raise InvalidArgumentError(f"{where}.version", f"must be at most {MAX_VERSION}, but got {write.version}")
        version = write.version or clock.now_us()
        kind = write.WhichOneof("operation")
        if kind == "upsert":
            entity = entity_from_proto(write.upsert, f"{where}.upsert")
            out.append(CatalogWrite(entity.id, version, entity))
        elif kind == "delete_id":
            _check_id(write.delete_id, f"{where}.delete_id")
            out.append(CatalogWrite(write.delete_id, version))
        else:
            raise InvalidArgumentError(where, "must set an operation (upsert or delete_id), but got none")
    return out
