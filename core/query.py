"""The query every strategy receives, and the validation shared by all of them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from core.errors import InvalidArgumentError

DEFAULT_MAX_QUOTA = 1000
DEFAULT_MAX_QUERY_CHARS = 1024


@dataclass(frozen=True, kw_only=True, slots=True)
class Filter:
    """A hard constraint: keep (or, with exclude, drop) entities whose `field` has any of `values`."""

    field: str
    values: tuple[str, ...]
    exclude: bool = False


@dataclass(frozen=True, kw_only=True)
class Query:
    """text: trimmed query text; vector: optional float32 embedding, shape (dim,);
    context: request context pairs (see Query.context in protos/ltrr/v1/common.proto)."""

    text: str
    vector: np.ndarray | None = None
    context: Mapping[str, str] = field(default_factory=dict)
    filters: tuple[Filter, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Per-shard request limits; reported by Describe."""

    max_quota: int = DEFAULT_MAX_QUOTA
    max_query_chars: int = DEFAULT_MAX_QUERY_CHARS

    def __post_init__(self) -> None:
        if not 1 <= self.max_quota <= 100_000:
            raise ValueError(f"`max_quota` must be in [1, 100000], but got {self.max_quota}")
        if not 1 <= self.max_query_chars <= 1_000_000:
            raise ValueError(f"`max_query_chars` must be in [1, 1000000], but got {self.max_query_chars}")


def make_query(
    text: str,
    *,
    vector: Sequence[float] | None = None,
    context: Mapping[str, str] | None = None,
    filters: Sequence[Filter] = (),
    limits: Limits = Limits(),
    vector_dim: int = 0,
) -> Query:
    """Validate and normalise raw request values into a Query.

    vector_dim: the dimension the strategy accepts; 0 when it takes no vectors (a vector is then
    ignored, and an empty text is an error). Raises InvalidArgumentError naming the wire field.
    """
    trimmed = text.strip()
    has_vector = vector_dim > 0 and vector is not None and len(vector) > 0
    if not trimmed and not has_vector:
        raise InvalidArgumentError("query.text", "must not be empty or only white space")
    if len(trimmed) > limits.max_query_chars:
        raise InvalidArgumentError(
            "query.text", f"must be at most {limits.max_query_chars} characters, but got {len(trimmed)}")
    vec = None
    if has_vector and vector is not None:
        vec = np.asarray(vector, dtype=np.float32)
        if vec.shape != (vector_dim,):
            raise InvalidArgumentError("query.vector", f"must have {vector_dim} values, but got {vec.size}")
        if not np.isfinite(vec).all():
            raise InvalidArgumentError("query.vector", "must hold only finite values (no NaN or infinity)")
    for i, f in enumerate(filters):
        if not f.field.strip():
            raise InvalidArgumentError(f"query.filters[{i}].field", "must not be empty")
        if not f.values or any(not v.strip() for v in f.values):
            raise InvalidArgumentError(f"query.filters[{i}].values", "must hold at least one non-empty value")
    return Query(text=trimmed, vector=vec, context=dict(context or {}), filters=tuple(filters))


def check_quota(quota: int, limits: Limits) -> int:
    """`quota` if it is in [1, limits.max_quota]; InvalidArgumentError("quota") otherwise."""
    if not 1 <= quota <= limits.max_quota:
        raise InvalidArgumentError("quota", f"must be in [1, {limits.max_quota}], but got {quota}")
    return quota
