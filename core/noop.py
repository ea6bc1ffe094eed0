"""A strategy that does no work: it returns the first `quota` allowed entities with score 0.

It stands in for every real strategy when measuring the cost of the cluster itself (processes, gRPC
hops, fan-out, merge, ranking): `ltrr shard NAME --noop` serves it under NAME's name.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from pyroaring import BitMap

from core.collection import Collection
from core.query import Query
from core.types import Hits, StrategyKind


class NoopStrategy:
    vector_dim = 0

    def __init__(self, kind: StrategyKind, collection: Collection) -> None:
        self.kind = kind
        self.collection = collection

    def retrieve(self, query: Query, quota: int, allowed: BitMap | None) -> Hits:
        if allowed is None:
            ordinals = np.arange(min(quota, len(self.collection)), dtype=np.int64)
        else:
            ordinals = np.fromiter(allowed, dtype=np.int64, count=min(quota, len(allowed)))
        return Hits(ordinals, np.zeros(len(ordinals), dtype=np.float32), len(ordinals))

    def warm_up(self) -> None:
        return None

    def describe(self) -> Mapping[str, str]:
        return {"noop": "true"}
