"""Partitioned strategies: which partition owns what, how much to ask each, and the exact merge.

A strategy over a large catalog is split into P partitions, each served by its own shard process
(and its replicas). Two kinds:

- **document partitions** (lexical, semantic, attribute): each holds the entities whose id hashes
  to it (`document_partition`), in catalog order, scored with the whole catalog's statistics, so a
  document gets the same score in its partition as in one index over everything. Every partition
  is asked and their top lists are merged (`merge_partitions`).
- **query partitions** (memory): each holds the feedback of the queries whose key
  (core.analysis.text_key) hashes to it (`query_partition`); only the owner is asked.

Every strategy breaks ties between equal scores by the lower catalog position (ordinal), so one
index's top list is ordered by (score descending, catalog position ascending). The merge orders by
the same key; given every entity's catalog position, the merged top q equals the top q of one
index over the whole catalog, ties included.

Asking every partition for the full quota q wastes work: a partition holds about 1/P of any top
list. Vespa asks each for k/n + z * sqrt(k * (1/n) * (1 - 1/n)) (its top-k probability, with z the
normal quantile of the probability that no partition holds more than that many of the top k)
(`partition_quota`). What it may lose is recovered exactly: a partition that returned all it was
asked for and whose last hit still made the merged top q may hold more that belong there, so it is
asked again for q (`refetch_needed`); any other partition's unseen hits rank below its last hit,
hence below the merged top q.

Hashes are BLAKE2b of the UTF-8 text, the same in every process and run (Python's hash() is not).
"""

from __future__ import annotations

import hashlib
import heapq
import math
from collections.abc import Mapping, Sequence
from statistics import NormalDist

import numpy as np

from core.analysis import text_key
from core.merge import StrategyList

__all__ = ["DEFAULT_TOPK_PROBABILITY", "document_partition", "merge_partitions", "partition_quota",
           "query_partition", "refetch_needed"]

# Vespa's default top-k-probability: each partition is asked for enough that it holds no more of
# the top k than that with this probability (under a uniform spread of documents over partitions).
DEFAULT_TOPK_PROBABILITY = 0.9999


def _bucket(text: str, partitions: int) -> int:
    if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
        raise ValueError(f"`partitions` must be an int >= 1, but got {partitions!r}")
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % partitions


def document_partition(entity_id: str, partitions: int) -> int:
    """The document partition (0 .. partitions-1) holding entity `entity_id`."""
    if not entity_id:
        raise ValueError("`entity_id` must be non-empty")
    return _bucket(entity_id, partitions)


def query_partition(text: str, partitions: int) -> int:
    """The query partition owning the feedback of query `text` (by its text_key: texts that the
    memory strategy treats as one query go to one partition)."""
    return _bucket(text_key(text), partitions)


def partition_quota(quota: int, partitions: int, probability: float = DEFAULT_TOPK_PROBABILITY) -> int:
    """Candidates to ask of each of `partitions` document partitions for a merged top `quota`:
    ceil(q/n + z * sqrt(q * (1/n) * (1 - 1/n))), z = the standard normal quantile of `probability`,
    at least 1 and at most q (1.0 = always q). Example: q = 100, n = 2, 0.9999 -> 69."""
    if isinstance(quota, bool) or not isinstance(quota, int) or quota < 1:
        raise ValueError(f"`quota` must be an int >= 1, but got {quota!r}")
    if isinstance(partitions, bool) or not isinstance(partitions, int) or partitions < 1:
        raise ValueError(f"`partitions` must be an int >= 1, but got {partitions!r}")
    if not 0.5 <= probability <= 1.0:
        raise ValueError(f"`probability` must be in [0.5, 1], but got {probability}")
    if partitions == 1 or probability == 1.0:
        return quota
    share = 1.0 / partitions
    z = NormalDist().inv_cdf(probability)
    return max(1, min(quota, math.ceil(quota * share + z * math.sqrt(quota * share * (1 - share)))))


def merge_partitions(strategy: str, lists: Sequence[StrategyList | None], quota: int,
                     positions: Mapping[str, int] | None = None) -> StrategyList:
    """The top `quota` of the partitions' lists (None: that partition did not answer), ordered by
    score descending, then catalog position ascending (`positions`: entity id -> catalog position;
    an id without one, or no mapping, sorts after those with one, then by partition and rank).
    Each list must be ordered as its partition ranks (score descending, position ascending)."""
    if quota < 1:
        raise ValueError(f"`quota` must be >= 1, but got {quota}")
    where = positions or {}
    unknown = len(where)  # above every real position

    def keyed(p: int, lst: StrategyList) -> list[tuple[float, int, int, int, str, float]]:
        scores = np.asarray(lst.scores, dtype=np.float32).tolist()
        return [(-s, where.get(eid, unknown), p, r, eid, s)
                for r, (eid, s) in enumerate(zip(lst.entity_ids, scores, strict=True))]

    streams = [keyed(p, lst) for p, lst in enumerate(lists) if lst is not None]
    top = list(heapq.merge(*streams))[:quota] if len(streams) > 1 else (streams[0][:quota] if streams else [])
    return StrategyList(strategy, [t[4] for t in top], np.array([t[5] for t in top], dtype=np.float32))


def refetch_needed(lists: Sequence[StrategyList | None], asked: Sequence[int], merged: StrategyList,
                   quota: int) -> list[int]:
    """The partitions to ask again for `quota` (module docstring): asked for fewer than `quota`,
    answered with all they were asked for, and their last hit is in the merged top `quota`."""
    if len(lists) != len(asked):
        raise ValueError(f"`lists` and `asked` must have one entry per partition, but got {len(lists)} and "
                         f"{len(asked)}")
    top = set(merged.entity_ids[:quota])
    return [p for p, (lst, k) in enumerate(zip(lists, asked, strict=True))
            if lst is not None and k < quota and len(lst.entity_ids) >= k > 0 and lst.entity_ids[k - 1] in top]
