"""The position-based click model (PBM) by which simulated users act on a ranked list.

Craswell et al. (WSDM 2008) and Chuklin, Markov and de Rijke, "Click Models for Web Search"
(2015), section 3.3: a result at rank r (1-based) is clicked when the user examines rank r and
finds the result attractive, independently:

    P(E_r) = 1 / r ** eta                    (examination, eta = `examination_decay`; rank 1 is
                                               always examined, rank 2 with 1/2**eta, ...)
    P(A_d) = target_attraction               for the track the user wants (grade 2)
           = relevant_attraction * m_u(d)    for the rest of the relevant set (grade 1), where
                                               m_u(d) is the user's affinity multiplier for d's
                                               genre, clipped to [0, 1 / relevant_attraction]
           = irrelevant_attraction           otherwise
    P(click at r) = P(E_r) * P(A_{d_r})

Only the top `shown` results are visible. A user acts at most once per search: of the ranks that
would be clicked, the acted-on entity is the first (top-most) one, so a list that puts the target
above other relevant tracks gets the target. When nothing is clicked, with probability
`follow_up` the user reaches the target another way (a reformulation, browsing) and that play is
attributed to the search, as session-level attribution does; the acted-on entity then need not
be among the candidates, which is what makes candidate recall observable from feedback. Otherwise
the search gets no feedback at all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_SHOWN = 10


@dataclass(frozen=True, kw_only=True)
class ClickConfig:
    """Parameters of the PBM above (probabilities in [0, 1]; examination_decay >= 0)."""

    shown: int = DEFAULT_SHOWN
    examination_decay: float = 1.0
    target_attraction: float = 0.9
    relevant_attraction: float = 0.3
    irrelevant_attraction: float = 0.01
    follow_up: float = 0.5

    def __post_init__(self) -> None:
        if self.shown < 1:
            raise ValueError(f"`shown` must be >= 1, but got {self.shown}")
        if not (math.isfinite(self.examination_decay) and self.examination_decay >= 0):
            raise ValueError(f"`examination_decay` must be finite and >= 0, but got {self.examination_decay}")
        for name in ("target_attraction", "relevant_attraction", "irrelevant_attraction", "follow_up"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"`{name}` must be in [0, 1], but got {getattr(self, name)}")


@dataclass(frozen=True, slots=True)
class Action:
    """What the user did. entity: the acted-on ordinal, -1 = no feedback; rank: its 1-based rank
    in the shown list, 0 = not clicked from the list (a follow-up, or no action); follow_up: the
    action came after the search (the target, reached another way)."""

    entity: int
    rank: int
    follow_up: bool


NO_ACTION = Action(-1, 0, False)


class ClickModel:
    def __init__(self, config: ClickConfig | None = None) -> None:
        self.config = config or ClickConfig()
        ranks = np.arange(1, self.config.shown + 1, dtype=np.float64)
        self.examination = 1.0 / ranks ** self.config.examination_decay

    def attraction(self, shown: np.ndarray, relevant: np.ndarray, target: int,
                   affinity: np.ndarray | None = None) -> np.ndarray:
        """float64 (len(shown),): P(A) per shown ordinal. shown: int64 ordinals in rank order;
        relevant: int64 ordinals, ascending; affinity: per shown ordinal, the user's multiplier
        for its genre (None = 1)."""
        c = self.config
        is_rel = np.isin(shown, relevant, assume_unique=False)
        rel = c.relevant_attraction * (1.0 if affinity is None else affinity)
        out = np.where(is_rel, np.minimum(rel, 1.0), c.irrelevant_attraction)
        out[shown == target] = c.target_attraction
        return out

    def act(self, shown: Sequence[int] | np.ndarray, relevant: np.ndarray, target: int,
            rng: np.random.Generator, affinity: np.ndarray | None = None) -> Action:
        """The user's one action on the ranked list `shown` (ordinals, best first; only the first
        `shown` of the config are visible). Draws exactly shown+1 uniforms whatever happens, so
        the stream of one user does not depend on the list's length."""
        c = self.config
        visible = np.asarray(shown, dtype=np.int64)[: c.shown]
        u = rng.random(c.shown + 1)
        attract = self.attraction(visible, relevant, target,
                                  None if affinity is None else np.asarray(affinity)[: c.shown])
        clicked = np.flatnonzero(u[: visible.size] < self.examination[: visible.size] * attract)
        if clicked.size:
            r = int(clicked[0])
            return Action(int(visible[r]), r + 1, False)
        if u[c.shown] < c.follow_up:
            return Action(int(target), 0, True)
        return NO_ACTION
