"""The one definition of what a search's feedback is worth to the allocation policy.

Satisfaction. A search is answered by the user's first *satisfying* event (`satisfies`):

- a PLAY whose `value` (the fraction of the track listened, in [0, 1]) reaches
  `satisfied_fraction` (PolicyConfig.satisfied_fraction, default 0.15; value 0 means "not given"
  and reads as a full play, as the wire contract says);
- a LIKE, a FAVORITE or a CLICK;
- a REFORMULATE that names an entity: the user searched again and the session then played that
  entity, so it is what this search should have found (session attribution).

A SKIP, a PLAY below the threshold and a REFORMULATE naming nothing satisfy nothing: they are
evidence that the user did NOT want that entity, not that some strategy found what they wanted,
nor that the search cost too much. Their reward is exactly 0 and every strategy outcome is marked
unanswered, so they teach the policy nothing. A decision teaches the policy once, on its first
satisfying event (core.pipeline: later events are logged but teach nothing).

The threshold. Spotify counts a play as a stream once it has lasted 30 s (its public rule for
stream counts and royalties), the point below which the industry treats a play as a skip; the
median popular track lasts about 3.5 minutes (210 s), so 30 s is 30 / 210 = 0.143 of it, rounded
to 0.15. Paul Lamere's analysis of Spotify plays ("The Skip", Music Machinery, 2014) found 35% of
plays abandoned within the first 30 s (24% within 5 s, 48.6% before the end): the threshold
separates that third from the plays a listener kept. A fraction rather than seconds because the
event carries a fraction.

The reward of a satisfying event on entity e (the realised form of the allocation value in
core.policy.allocation):

    reward = hit - cost_per_candidate * fetched - cost_per_ms * latency_ms

where hit = 1 when some strategy s returned e within its top quota_s (rank_s in 1..quota_s), fetched
is the number of candidates the strategies returned (at most the sum of the quotas: a filter or a
memory may have fewer to give) and latency_ms is the latency of the slowest strategy called (they
run in parallel). The gain is 1 for every satisfying event (not the listened fraction: a satisfied
user got what they searched for, however long the track).

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

from core.policy.policies import DEFAULT_SATISFIED_FRACTION, Outcome
from core.types import EventType

POSITIVE = frozenset({EventType.CLICK, EventType.LIKE, EventType.FAVORITE})


def satisfies(event_type: EventType | int, value: float = 0.0, entity_id: str | None = None, *,
              satisfied_fraction: float = DEFAULT_SATISFIED_FRACTION) -> bool:
    """Does this event satisfy the search (module docstring)? value: the event's strength in
    [0, 1] (for a PLAY, the fraction listened; 0 = not given, a full play). entity_id: the
    event's entity; only a REFORMULATE's may be empty (it names nothing) and None means the
    caller holds an entity."""
    kind = EventType(event_type)
    if kind is EventType.PLAY:
        return value == 0.0 or value >= satisfied_fraction
    if kind is EventType.REFORMULATE:
        return entity_id is None or entity_id != ""
    return kind in POSITIVE


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
                  fetched: int | None = None, entity_id: str | None = None,
                  satisfied_fraction: float = DEFAULT_SATISFIED_FRACTION) -> float:
    """The reward of one search for one event (see the module docstring): 0 for an event that
    does not satisfy.

    quotas: per strategy, the quota asked (0 = not called). ranks: per strategy, the 1-based rank
    of the event's entity in its list (0 = absent or not answered). value: event strength in
    [0, 1], 0 = not given. latency_ms: the slowest called strategy's latency, >= 0. fetched: the
    candidates returned in all, <= sum(quotas) (None: the quotas were filled). entity_id,
    satisfied_fraction: as in `satisfies`.
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
    if not satisfies(event_type, value, entity_id, satisfied_fraction=satisfied_fraction):
        return 0.0
    hit = any(0 < r <= q for q, r in zip(quotas, ranks, strict=True))
    return float(hit) - cost_per_candidate * float(fetched) - cost_per_ms * latency_ms


def strategy_outcomes(quotas: Sequence[int], ranks: Sequence[int], answered: Sequence[bool],
                      event_type: EventType | int, returned: Sequence[int | None] | None = None, *,
                      value: float = 0.0, entity_id: str | None = None,
                      satisfied_fraction: float = DEFAULT_SATISFIED_FRACTION) -> list[Outcome]:
    """One Outcome per strategy for BanditPolicy.update.

    quotas, ranks, value, entity_id, satisfied_fraction: as in `search_reward`; answered: per
    strategy, False for TIMEOUT, ERROR or SKIPPED; returned: per strategy, how many candidates it
    returned (None: unknown). A rank beyond the quota (a strategy returning more than asked) counts
    as absent. An event that does not satisfy (a skip, a short play) teaches no strategy anything
    (module docstring), so each of its outcomes is marked unanswered, which BanditPolicy.update
    passes over: the broker need not special-case them.
    """
    _check_lengths(quotas, ranks)
    if len(answered) != len(quotas):
        raise ValueError(f"`answered` must have {len(quotas)} entries (one per strategy), but got {len(answered)}")
    if returned is not None and len(returned) != len(quotas):
        raise ValueError(f"`returned` must have {len(quotas)} entries (one per strategy), but got {len(returned)}")
    learn = satisfies(event_type, value, entity_id, satisfied_fraction=satisfied_fraction)
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
