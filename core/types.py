"""The value types every layer shares, and the one interface of a retrieval strategy.

A strategy answers `retrieve(query, quota, allowed)` with Hits: flat arrays of entity ordinals
and scores, best first. The shard server hosts any registered strategy (core.strategies names
them) and never branches on its type; optional abilities (query understanding, learning) are
Protocols below. This module imports no other strategy module, so nothing here can form an
import cycle (tests/core/test_purity.py checks there is none in core/).
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from pyroaring import BitMap

from core.catalog import Entity
from core.collection import Collection
from core.query import Query


class StrategyKind(enum.StrEnum):
    LEXICAL = "lexical"
    SEMANTIC = "semantic"
    ATTRIBUTE = "attribute"
    MEMORY = "memory"


class EventType(enum.IntEnum):
    """User actions; values equal ltrr.v1.EventType's. REFORMULATE: the user searched again
    instead of acting on the search; its entity is what the session finally played (empty when
    nothing): the only event whose entity may be empty. Which events reward the policy: core.reward."""

    CLICK = 1
    PLAY = 2
    LIKE = 3
    FAVORITE = 4
    SKIP = 5
    REFORMULATE = 6


@dataclass(frozen=True, kw_only=True, slots=True)
class FeedbackEvent:
    """One user action (see FeedbackEvent in protos/ltrr/v1/common.proto).

    value: strength in [0, 1]; 0 = not given. timestamp: seconds since the Unix epoch.
    """

    event_id: str
    query_text: str
    entity_id: str
    type: EventType
    value: float = 0.0
    timestamp: float = 0.0
    context: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True, slots=True)
class Slot:
    """An attribute constraint read from the query span text[start:end]; confidence in [0, 1]."""

    field: str
    value: str
    span: str
    start: int
    end: int
    confidence: float


@dataclass(frozen=True, kw_only=True, slots=True)
class Interpretation:
    """One reading of a query: slots plus leftover free text, with its probability in [0, 1]."""

    slots: tuple[Slot, ...]
    free_text: str
    likelihood: float


@dataclass(frozen=True, slots=True)
class Hits:
    """A strategy's answer.

    ordinals: int64, shape (n,), entity ordinals best first, no repeats.
    scores: float32, shape (n,), strategy-native, non-increasing.
    total_matches: entities that matched before the quota cut (>= n); a pruned lexical search
        reports a lower bound, the documents it scored.
    interpretations: the readings of the query the strategy used (attribute strategy).
    """

    ordinals: np.ndarray
    scores: np.ndarray
    total_matches: int
    interpretations: tuple[Interpretation, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.ordinals.shape != self.scores.shape or self.ordinals.ndim != 1:
            raise ValueError(f"ordinals and scores must be 1-d of one shape, got {self.ordinals.shape} "
                             f"and {self.scores.shape}")

    def __len__(self) -> int:
        return int(self.ordinals.shape[0])

    @classmethod
    def empty(cls) -> Hits:
        return cls(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32), 0)


class Strategy(Protocol):
    """What the shard server needs of a loaded strategy."""

    kind: StrategyKind
    collection: Collection

    def retrieve(self, query: Query, quota: int, allowed: BitMap | None) -> Hits:
        """Top `quota` entities for `query` among `allowed` ordinals (None: every live entity)."""
        ...

    def warm_up(self) -> None:
        """Compile and touch everything the first real request would, on a tiny input."""
        ...

    def describe(self) -> Mapping[str, str]:
        """Strategy parameters as text, for Describe."""
        ...

    @property
    def vector_dim(self) -> int:
        """Length of query vectors accepted; 0 when the strategy takes none."""
        ...


@runtime_checkable
class SupportsUnderstand(Protocol):
    """Query understanding without retrieval (the attribute strategy)."""

    def understand(self, query: Query, max_interpretations: int) -> tuple[Interpretation, ...]:
        """Most likely first; likelihoods sum to at most 1."""
        ...


@runtime_checkable
class SupportsLearn(Protocol):
    """Learning from feedback (the memory strategy)."""

    def learn(self, events: Sequence[FeedbackEvent]) -> tuple[int, int]:
        """Record events durably before returning (accepted, duplicates). Unknown entity ids
        raise NotFoundError and record nothing of the batch."""
        ...


@runtime_checkable
class SupportsClose(Protocol):
    """Strategies holding files or background work release them in close()."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class StrategyEntry:
    """How to build a strategy's index component from a catalog, and how to load it.

    build(entities, collection, root, options) writes the component under `root`; options are the
    strategy's build options (CLI: `ltrr index --option NAME.KEY=VALUE`).
    load(root, collection, options) returns the Strategy; options are run-time settings
    (CLI: `ltrr shard NAME --option KEY=VALUE`), e.g. a state directory.
    """

    build: Callable[[Sequence[Entity], Collection, str | os.PathLike[str], Mapping[str, Any]], None]
    load: Callable[[str | os.PathLike[str], Collection, Mapping[str, Any]], Strategy]
