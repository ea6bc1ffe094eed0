"""Conversions between the wire messages (ltrr.v1) and core's types. Validation lives in core."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from core.errors import InvalidArgumentError
from core.query import Filter, Limits, Query, make_query
from core.types import EventType, FeedbackEvent, Hits, Interpretation, Slot
from ltrr.v1 import common_pb2, shard_pb2

MAX_EVENT_ID_BYTES = 128


def query_from_proto(query: common_pb2.Query, limits: Limits, vector_dim: int) -> Query:
    filters = [Filter(field=f.field, values=tuple(f.values), exclude=f.exclude) for f in query.filters]
    return make_query(query.text, vector=list(query.vector) or None, context=dict(query.context), filters=filters,
                      limits=limits, vector_dim=vector_dim)


def query_to_proto(text: str, *, vector: Sequence[float] | None = None, context: dict[str, str] | None = None,
                   filters: Sequence[Filter] = ()) -> common_pb2.Query:
    return common_pb2.Query(
        text=text, vector=list(vector) if vector is not None else [], context=context or {},
        filters=[common_pb2.Filter(field=f.field, values=list(f.values), exclude=f.exclude) for f in filters])


def interpretation_to_proto(interp: Interpretation) -> common_pb2.Interpretation:
    slots = [common_pb2.Slot(field=s.field, value=s.value, span=s.span, start=s.start, end=s.end,
                             confidence=s.confidence) for s in interp.slots]
    return common_pb2.Interpretation(slots=slots, free_text=interp.free_text, likelihood=interp.likelihood)


def hits_to_response(strategy: str, hits: Hits, ids: Sequence[str], took_ms: float) -> shard_pb2.RetrieveResponse:
    """Flat hit arrays straight onto repeated Candidate messages; ranks are 1-based positions.
    Candidates are added in place (`candidates.add`): half the CPU of building each message and
    handing the list over (upb; 41 against 78 us per 100)."""
    response = shard_pb2.RetrieveResponse(
        strategy=strategy, total_matches=hits.total_matches, took_ms=took_ms,
        interpretations=[interpretation_to_proto(i) for i in hits.interpretations])
    add = response.candidates.add
    for r, (o, s) in enumerate(zip(hits.ordinals.tolist(), hits.scores.tolist(), strict=True), 1):
        add(entity_id=ids[o], score=s, rank=r)
    return response


def event_from_proto(event: common_pb2.FeedbackEvent, where: str) -> FeedbackEvent:
    """Validate one wire event; `where` prefixes field names in errors (e.g. "events[3]")."""
    if not event.event_id or len(event.event_id.encode()) > MAX_EVENT_ID_BYTES:
        raise InvalidArgumentError(f"{where}.event_id", f"must be 1..{MAX_EVENT_ID_BYTES} bytes")
    if event.type not in EventType._value2member_map_:
        raise InvalidArgumentError(f"{where}.type", f"must be a known EventType, but got {event.type}")
    if not event.entity_id and event.type != EventType.REFORMULATE:
        raise InvalidArgumentError(f"{where}.entity_id", "must not be empty (only a REFORMULATE may name nothing)")
    if not (0.0 <= event.value <= 1.0) or not np.isfinite(event.value):
        raise InvalidArgumentError(f"{where}.value", f"must be in [0, 1], but got {event.value}")
    timestamp = event.timestamp.seconds + event.timestamp.nanos / 1e9 if event.HasField("timestamp") else 0.0
    return FeedbackEvent(event_id=event.event_id, query_text=event.query_text, entity_id=event.entity_id,
                         type=EventType(event.type), value=event.value, timestamp=timestamp,
                         context=dict(event.context))


def event_to_proto(event: FeedbackEvent) -> common_pb2.FeedbackEvent:
    pb = common_pb2.FeedbackEvent(event_id=event.event_id, query_text=event.query_text, entity_id=event.entity_id,
                                  type=int(event.type), value=event.value, context=dict(event.context))
    if event.timestamp:
        pb.timestamp.FromNanoseconds(int(event.timestamp * 1e9))
    return pb


def interpretation_from_proto(interp: common_pb2.Interpretation) -> Interpretation:
    slots = tuple(Slot(field=s.field, value=s.value, span=s.span, start=s.start, end=s.end, confidence=s.confidence)
                  for s in interp.slots)
    return Interpretation(slots=slots, free_text=interp.free_text, likelihood=interp.likelihood)
