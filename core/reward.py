"""Rewards for the allocation policy, from one feedback event joined with its decision.

The reward of a search for an event on entity e is (the realised form of the allocation value in
core.policy.allocation):

    reward = gain * hit - cost_per_candidate * fetched - cost_per_ms * latency_ms

where fetched is the number of candidates the strategies returned (at most the sum of the quotas:
a filter or a memory may have fewer to give), hit = 1 when some strategy s returned e within its
top quota_s (rank_s in 1..quota_s), gain is the event's `value` when given (in (0, 1]) and 1
otherwise, and latency_ms is the latency of the slowest strategy called (they run in parallel).
A skip says the user saw e and did not want it: it is no evidence that any strategy found what
the user wanted, nor that the search cost too much, so a skip's reward is exactly 0.

Per strategy the policy learns from an `Outcome(quota, rank, answered, returned)`: a strategy
called with quota q that ranked e at r reveals, for every level q' <= q, whether e was in its
top-q' (r <= q'), so feedback on one search also teaches the smaller quotas it did not choose (the
counterfactual expansion happens in BanditPolicy.update); its list of `returned` candidates
teaches the policy how full each level's list is, which prices the allocation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from core.policy.policies import Outcome
from core.types import EventType


def _check_lengths(quotas: Sequence[int], ranks: Sequence[int]) -> None:
    if len(ranks) != len(quotas):
        raise ValueError(f"`ranks` must have {len(quotas)} entries (one per strategy, like `quotas`), "
                         f"but got {len(ranks)}")
    if any(q < 0 for q in quotas):
        raise ValueError(f"`quotas` must be >= 0, but got {list(quotas)}")
    if any(r < 0 for r in ranks):
        raise ValueError(f"`ranks` must be >= 0 (0 = absent), but got {list(ranks)}")


def _non_negative(name: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"`{name}` must be finite and >= 0, but got {value}")


def search_reward(quotas: Sequence[int], ranks: Sequence[int], event_type: EventType | int, value: float = 0.0,
                  *, cost_per_candidate: float, cost_per_ms: float, latency_ms: float,
                  fetched: int | None = None) -> float:
    """The reward of one search for one event (see the module docstring).

    quotas: per strategy, the quota asked (0 = not called). ranks: per strategy, the 1-based rank
    of the acted-on entity in its list (0 = absent or not answered). value: event strength in
    [0, 1], 0 = not given. latency_ms: the slowest called strategy's latency, >= 0. fetched: the
    candidates returned in all, <= sum(quotas) (None: the quotas were filled).
    """
    _check_lengths(quotas, ranks)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"`value` must be in [0, 1], but got {value}")
    for name, v in (("cost_per_candidate", cost_per_candidate), ("cost_per_ms", cost_per_ms),
                    ("latency_ms", latency_ms)):
        _non_negative(name, v)
    if fetched is None:
        fetched = sum(quotas)
    elif not 0 <= fetched <= sum(quotas):
        raise ValueError(f"`fetched` must be in [0, sum(quotas) = {sum(quotas)}], but got {fetched}")
    if EventType(event_type) is EventType.SKIP:
        return 0.0
    hit = any(0 < r <= q for q, r in zip(quotas, ranks, strict=True))
    gain = value if value > 0 else 1.0
    return gain * float(hit) - cost_per_candidate * float(fetched) - cost_per_ms * latency_ms


def strategy_outcomes(quotas: Sequence[int], ranks: Sequence[int], answered: Sequence[bool],
                      event_type: EventType | int, returned: Sequence[int | None] | None = None) -> list[Outcome]:
    """One Outcome per strategy for BanditPolicy.update.

    quotas, ranks: as in `search_reward`; answered: per strategy, False for TIMEOUT, ERROR or
    SKIPPED; returned: per strategy, how many candidates it returned (None: unknown). A rank
    beyond the quota (a strategy returning more than asked) counts as absent.
    A skip teaches no strategy anything (module docstring), so every outcome of a skip is marked
    unanswered, which BanditPolicy.update passes over: the broker need not special-case skips.
    """
    _check_lengths(quotas, ranks)
    if len(answered) != len(quotas):
        raise ValueError(f"`answered` must have {len(quotas)} entries (one per strategy), but got {len(answered)}")
    if returned is not None and len(returned) != len(quotas):
        raise ValueError(f"`returned` must have {len(quotas)} entries (one per strategy), but got {len(returned)}")
    learn = EventType(event_type) is not EventType.SKIP
    counts = returned if returned is not None else (None,) * len(quotas)
    return [Outcome(quota=int(q), rank=int(r) if 0 < r <= q else 0, answered=bool(a) and learn,
                    returned=None if n is None else int(n))
            for q, r, a, n in zip(quotas, ranks, answered, counts, strict=True)]


def hits_by_level(outcome: Outcome, levels: Sequence[int]) -> np.ndarray:
    """float64 (len(levels),): per quota level q, 1 if the entity was in the strategy's top-q, 0 if
    not, NaN where unknown (level 0, above the quota asked, or not answered). The table
    BanditPolicy.update learns from, for logging and tests."""
    out = np.full(len(levels), np.nan)
    if outcome.answered:
        for i, q in enumerate(levels):
            if 0 < q <= outcome.quota:
                out[i] = 1.0 if 0 < outcome.rank <= q else 0.0
    return out
