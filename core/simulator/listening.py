"""The simulated listener: what a user plays, skips and searches again for, given a ranked list.

A cascade over the top `shown` results (Craswell et al., WSDM 2008) whose examination is
position-based (PBM; Chuklin, Markov and de Rijke, "Click Models for Web Search", 2015, 3.3):
walking down from rank 1, the user examines rank r with probability 1 / r ** eta (eta =
`examination_decay`) and starts playing the result when it attracts them:

    P(A_d) = target_attraction               the track the user wants (grade 2)
           = relevant_attraction * m_u(d)    the rest of the relevant set (grade 1), m_u(d) the
                                               user's genre-affinity multiplier, capped at 1
           = irrelevant_attraction           otherwise

What a play becomes depends on the result:

- the target is played long: fraction listened ~ U[target_min_fraction, 1], which satisfies the
  user (core.reward.satisfies) and ends the search;
- another relevant track is skipped with probability
      p_skip(d) = skip_near + (skip_far - skip_near) * distance(d),
      distance(d) = (1[d's genre != the target's] + 1[d's artist != the target's]) / 2,
  so a track by the wanted artist in the wanted genre is skipped least and one of another genre
  by another artist most (both are what the simulator knows of a track besides its affinity,
  which already shapes attraction). Not skipped, it is played for a fraction ~ U[0,
  relevant_max_fraction]: a near miss, often below the satisfied threshold; if it reaches the
  threshold the user settles for it and the search ends there;
- an irrelevant track is skipped.

After a skip or an unsatisfying play the user goes on down the list. A user the list did not
satisfy reformulates with probability `reformulate`, finds the target with the later search and
plays it: a REFORMULATE event naming the target (session attribution), which is what makes
candidate recall observable from feedback; otherwise they abandon and the search has no further
event.

Parameters and where they come from:
- skip_near 0.24: Lamere ("The Skip", Music Machinery, 2014, over a billion Spotify plays) found
  24% of all plays abandoned within the first 5 s: the skip rate of music in general, taken for
  a track as close as a non-target can be to what was wanted.
- skip_far 0.9: a judgement: a track of another genre by another artist than the one searched
  for is almost always skipped; no published figure conditions skips on distance from intent.
- target_min_fraction 0.5: a judgement: the track searched for is heard mostly through; Lamere
  found 51.4% of all plays reach the end (48.6% skipped before it).
- relevant_max_fraction 0.3 (= 2 x the default satisfied fraction 0.15): a judgement, so that about
  half the unskipped near misses reach Spotify's 30 s stream threshold (core.reward).
- reformulate 0.5: a judgement (the follow-up rate of the click model it replaces). Studies of
  search logs (Huang and Efthimiadis, CIKM 2009, on query reformulation; Li, Huffman and Tokuda,
  SIGIR 2009, on good abandonment) show both reformulating and abandoning are common; neither
  gives the rate of reformulation after a search that failed.
- examination_decay 1, target_attraction 0.9, relevant_attraction 0.3, irrelevant_attraction 0.01:
  the PBM of issue 6, unchanged.
None was chosen by running the experiment.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.policy.policies import DEFAULT_SATISFIED_FRACTION
from core.reward import satisfies
from core.types import EventType

DEFAULT_SHOWN = 10
DEFAULT_SKIP_NEAR = 0.24  # Lamere 2014: plays abandoned within 5 s
DEFAULT_SKIP_FAR = 0.9
DEFAULT_TARGET_MIN_FRACTION = 0.5
DEFAULT_RELEVANT_MAX_FRACTION = 0.3
DEFAULT_REFORMULATE = 0.5
UNIFORMS_PER_RANK = 3  # attraction, skip, fraction listened


@dataclass(frozen=True, kw_only=True)
class ListeningConfig:
    """The listener of the module docstring (probabilities and fractions in [0, 1];
    examination_decay >= 0). Where the user stops is the reward's satisfied fraction, which the
    model takes from the policy (ListeningModel)."""

    shown: int = DEFAULT_SHOWN
    examination_decay: float = 1.0
    target_attraction: float = 0.9
    relevant_attraction: float = 0.3
    irrelevant_attraction: float = 0.01
    skip_near: float = DEFAULT_SKIP_NEAR
    skip_far: float = DEFAULT_SKIP_FAR
    target_min_fraction: float = DEFAULT_TARGET_MIN_FRACTION
    relevant_max_fraction: float = DEFAULT_RELEVANT_MAX_FRACTION
    reformulate: float = DEFAULT_REFORMULATE

    def __post_init__(self) -> None:
        if self.shown < 1:
            raise ValueError(f"`shown` must be >= 1, but got {self.shown}")
        if not (math.isfinite(self.examination_decay) and self.examination_decay >= 0):
            raise ValueError(f"`examination_decay` must be finite and >= 0, but got {self.examination_decay}")
        for name in ("target_attraction", "relevant_attraction", "irrelevant_attraction", "skip_near", "skip_far",
                     "target_min_fraction", "relevant_max_fraction", "reformulate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"`{name}` must be in [0, 1], but got {getattr(self, name)}")
        if self.skip_far < self.skip_near:
            raise ValueError(f"`skip_far` must be >= `skip_near` ({self.skip_near}), but got {self.skip_far}")


@dataclass(frozen=True, slots=True)
class Reaction:
    """One event of a search. entity: ordinal; rank: 1-based in the shown list, 0 for a
    REFORMULATE (found by a later search); type: PLAY (value = fraction listened, in (0, 1]),
    SKIP (value 0) or REFORMULATE (value 0)."""

    entity: int
    rank: int
    type: EventType
    value: float


@dataclass(frozen=True, slots=True)
class TrackFacts:
    """What the listener knows of the shown tracks, aligned with them. affinity: float64, the
    user's genre multiplier m_u; genre: int, -1 unknown; artist: str."""

    affinity: np.ndarray
    genre: np.ndarray
    artist: Sequence[str]


class ListeningModel:
    """The listener of `config`, satisfied by a play of at least `satisfied_fraction` of a track
    (PolicyConfig.satisfied_fraction: the broker's and the simulator's one threshold)."""

    def __init__(self, config: ListeningConfig | None = None, *,
                 satisfied_fraction: float = DEFAULT_SATISFIED_FRACTION) -> None:
        self.config = config or ListeningConfig()
        if not 0.0 < satisfied_fraction <= self.config.target_min_fraction:
            raise ValueError(f"`satisfied_fraction` must be in (0, target_min_fraction = "
                             f"{self.config.target_min_fraction}] (the target satisfies), but got {satisfied_fraction}")
        self.satisfied_fraction = satisfied_fraction
        ranks = np.arange(1, self.config.shown + 1, dtype=np.float64)
        self.examination = 1.0 / ranks ** self.config.examination_decay

    def distance(self, facts: TrackFacts, at: int, target_genre: int, target_artist: str) -> float:
        """In [0, 1]: how far the shown track `at` is from the target (module docstring)."""
        other_genre = float(facts.genre[at] != target_genre or target_genre < 0)
        return (other_genre + float(facts.artist[at] != target_artist)) / 2

    def react(self, shown: Sequence[int] | np.ndarray, relevant: np.ndarray, target: int, rng: np.random.Generator,
              facts: TrackFacts, target_genre: int, target_artist: str) -> list[Reaction]:
        """The events of one search, in order (module docstring). shown: ordinals, best first (the
        first `shown` of the config are visible); relevant: int64 ordinals, holding the target;
        facts: of the visible tracks. Draws exactly 3 * shown + 1 uniforms whatever happens, so a
        user's stream does not depend on the list (common random numbers across policies)."""
        c = self.config
        visible = np.asarray(shown, dtype=np.int64)[: c.shown]
        u = rng.random(c.shown * UNIFORMS_PER_RANK + 1)
        per_rank = u[:-1].reshape(c.shown, UNIFORMS_PER_RANK)
        is_rel = np.isin(visible, relevant)
        out: list[Reaction] = []
        for r, entity in enumerate(visible.tolist()):
            if entity == target:
                attraction = c.target_attraction
            elif is_rel[r]:
                attraction = min(c.relevant_attraction * float(facts.affinity[r]), 1.0)
            else:
                attraction = c.irrelevant_attraction
            if per_rank[r, 0] >= self.examination[r] * attraction:
                continue
            d = self.distance(facts, r, target_genre, target_artist) if is_rel[r] and entity != target else 1.0
            reaction = self._play(entity, r, target, bool(is_rel[r]), per_rank[r], d)
            out.append(reaction)
            if satisfies(reaction.type, reaction.value, satisfied_fraction=self.satisfied_fraction):
                return out
        if u[-1] < c.reformulate:
            out.append(Reaction(int(target), 0, EventType.REFORMULATE, 0.0))
        return out

    def _play(self, entity: int, r: int, target: int, relevant: bool, u: np.ndarray, distance: float) -> Reaction:
        """What the play of the attractive result `entity` at 0-based rank r becomes; u: its
        uniforms (attraction, skip, fraction); distance: from the target (relevant tracks only)."""
        c = self.config
        if entity == target:
            fraction = c.target_min_fraction + (1 - c.target_min_fraction) * float(u[2])
            return Reaction(entity, r + 1, EventType.PLAY, fraction)
        if relevant and u[1] >= c.skip_near + (c.skip_far - c.skip_near) * distance:
            # a fraction of exactly 0 reads as "not given" (a full play) on the wire: keep it > 0
            return Reaction(entity, r + 1, EventType.PLAY, max(c.relevant_max_fraction * float(u[2]), 1e-3))
        return Reaction(entity, r + 1, EventType.SKIP, 0.0)
