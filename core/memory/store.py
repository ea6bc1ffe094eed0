"""Query-to-entity (Q2E) statistics and their smoothed, time-decayed score.

Model (Beta-Bernoulli): every event on (query q, entity e) is one Bernoulli trial whose success
is the event's reward r in [0, 1] (EVENT_REWARDS; a play's `value`, the fraction played, scales its
reward), counted with the event type's weight w: alpha += w * r, beta += w * (1 - r).
Prior: Beta(m * p, m * (1 - p)) with strength m = `prior_strength` pseudo-trials and mean p = the
pair's predicted score (cold start, core.memory.predict) or `prior_mean` for pairs never predicted.
Score: the posterior mean (m * p + alpha) / (m + alpha + beta); observed evidence outweighs the
prediction once alpha + beta >> m, which is how observed statistics replace predicted ones.
Time decay: alpha and beta are multiplied by 2 ** (-age / half_life) (age since the pair's last
update), at every update and when scored, so old evidence fades back towards the prior.
Pruning (`prune_pairs`): a pair whose decayed evidence n = (alpha + beta) * decay(age) is below a
threshold eps is dropped. Its score differs from its prior mean p by
|keep * (alpha - p * (alpha + beta))| / (m + n) <= n / (m + n) < eps / (m + eps), so dropping it
moves its score back to p by less than that; kept pairs are not touched. Without decay
(half_life_days = 0) evidence never fades (every event adds its weight >= 1), so nothing is pruned.
"""

from __future__ import annotations

import math
from collections.abc import MutableMapping
from dataclasses import dataclass

from core.types import EventType

DEFAULT_PRIOR_STRENGTH = 2.0
DEFAULT_PRIOR_MEAN = 0.05
DEFAULT_HALF_LIFE_DAYS = 30.0

# event type -> (reward when `value` is 0, weight)
EVENT_REWARDS: dict[EventType, tuple[float, float]] = {
    EventType.CLICK: (1.0, 1.0),
    EventType.PLAY: (1.0, 1.0),
    EventType.LIKE: (1.0, 2.0),
    EventType.FAVORITE: (1.0, 3.0),
    EventType.SKIP: (0.0, 1.0),
    EventType.REFORMULATE: (1.0, 1.0),  # names what the session finally played: what the query wanted
}


def reward(event_type: EventType, value: float) -> tuple[float, float]:
    """(reward in [0, 1], weight) of one event; a positive event's non-zero `value` is its reward."""
    base, weight = EVENT_REWARDS[event_type]
    if base > 0 and value > 0:
        return min(value, 1.0), weight
    return base, weight


@dataclass(frozen=True, kw_only=True)
class ScoringConfig:
    """prior_strength: pseudo-trials of the prior (> 0); prior_mean: prior mean of unpredicted
    pairs, in (0, 1); half_life_days: evidence half-life (0 = no decay)."""

    prior_strength: float = DEFAULT_PRIOR_STRENGTH
    prior_mean: float = DEFAULT_PRIOR_MEAN
    half_life_days: float = DEFAULT_HALF_LIFE_DAYS

    def __post_init__(self) -> None:
        if not (math.isfinite(self.prior_strength) and self.prior_strength > 0):
            raise ValueError(f"`prior_strength` must be finite and > 0, but got {self.prior_strength}")
        if not 0 < self.prior_mean < 1:
            raise ValueError(f"`prior_mean` must be in (0, 1), but got {self.prior_mean}")
        if not (math.isfinite(self.half_life_days) and self.half_life_days >= 0):
            raise ValueError(f"`half_life_days` must be finite and >= 0, but got {self.half_life_days}")

    def decay(self, age_s: float) -> float:
        if self.half_life_days == 0 or age_s <= 0:
            return 1.0
        return float(2.0 ** (-age_s / (self.half_life_days * 86400.0)))


@dataclass(slots=True)
class PairStats:
    """Observed statistics of one (query, entity) pair. impressions: events seen; positives: events
    with reward > 0; reward_sum: sum of rewards (raw, undecayed); alpha, beta: decayed weighted
    successes and failures as of `last` (seconds since the Unix epoch)."""

    impressions: int = 0
    positives: int = 0
    reward_sum: float = 0.0
    alpha: float = 0.0
    beta: float = 0.0
    last: float = 0.0

    def add(self, r: float, weight: float, at: float, config: ScoringConfig) -> None:
        """Record one event of reward `r` and `weight` at time `at`; events older than `last` are
        counted without moving `last` back (no negative ages)."""
        if at > self.last:
            keep = config.decay(at - self.last) if self.impressions else 1.0
            self.alpha *= keep
            self.beta *= keep
            self.last = at
            w = weight
        else:
            w = weight * config.decay(self.last - at)
        self.alpha += w * r
        self.beta += w * (1.0 - r)
        self.impressions += 1
        self.positives += r > 0
        self.reward_sum += r

    def score(self, predicted: float | None, now: float, config: ScoringConfig) -> float:
        """Posterior mean of the pair's Beta at time `now` (see the module docstring)."""
        keep = config.decay(now - self.last)
        p = config.prior_mean if predicted is None else predicted
        m = config.prior_strength
        return (m * p + keep * self.alpha) / (m + keep * (self.alpha + self.beta))

    def evidence(self, now: float, config: ScoringConfig) -> float:
        """Decayed pseudo-trials at time `now`: (alpha + beta) * decay(now - last)."""
        return (self.alpha + self.beta) * config.decay(now - self.last)

    def to_list(self) -> list[float]:
        return [self.impressions, self.positives, self.reward_sum, self.alpha, self.beta, self.last]

    @classmethod
    def from_list(cls, row: list[float]) -> PairStats:
        return cls(int(row[0]), int(row[1]), float(row[2]), float(row[3]), float(row[4]), float(row[5]))


def prune_pairs(observed: MutableMapping[str, dict[int, PairStats]], now: float, config: ScoringConfig,
                min_evidence: float) -> int:
    """Drop, in place, the pairs of `observed` (query key -> entity ordinal -> stats) whose evidence
    at `now` is below `min_evidence` (see the module docstring for the bound on what that changes),
    and the query keys left without pairs; returns how many pairs were dropped. Nothing is dropped
    when `min_evidence` is 0 or there is no decay (half_life_days = 0). One pass over every pair:
    call it where such a pass is paid anyway (the snapshot)."""
    if min_evidence <= 0 or config.half_life_days == 0:
        return 0
    dropped = 0
    for key in list(observed):
        pairs = observed[key]
        stale = [o for o, stats in pairs.items() if stats.evidence(now, config) < min_evidence]
        for o in stale:
            del pairs[o]
        dropped += len(stale)
        if not pairs:
            del observed[key]
    return dropped
