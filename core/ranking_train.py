"""Training the LambdaMART ranker (core.ranking.LambdaMartRanker) from the broker's event log.

Labels: each logged search (core.eventlog.EventLog.training_groups) becomes one TrainingGroup, its
merged candidates graded by the events on them (`graded_labels`). Grades, 0..3 (LightGBM's gain is
2^grade - 1):

- LIKE, FAVORITE: 3, an explicit statement of taste;
- PLAY: SATISFIED_PLAY_GRADE (2) when core.reward.satisfies (value = fraction listened), else
  SHORT_PLAY_GRADE (1): the listener chose it from the list, then left it early; a satisfied play
  is the strongest implicit signal, a short one says the title looked right but the track was not;
- CLICK: 1, chosen from the list with nothing known of what followed;
- SKIP: 0, shown and not wanted (as good as never acted on);
- REFORMULATE (the user searched again instead of acting on this search): nothing to the
  candidates shown; the entity it names (what the session finally played, if anything) is what
  this search should have put first, so when it is among this search's candidates it gets the
  satisfied-play grade.

A candidate takes the highest grade of its events; candidates nobody acted on get 0. The grading
reads only what the event log stores (entity, type, value), so serving and training agree.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.fusion import rrf_scores
from core.merge import Merged
from core.metrics import ndcg_at_k
from core.ranking import EntityTable, candidate_features, feature_names
from core.reward import DEFAULT_SATISFIED_FRACTION, satisfies
from core.storage import write_file_atomic
from core.types import EventType

SATISFIED_PLAY_GRADE = 2
SHORT_PLAY_GRADE = 1
# Grades of the event types whose grade does not depend on the event's value (module docstring).
RELEVANCE_GRADES: dict[int, int] = {
    EventType.FAVORITE: 3, EventType.LIKE: 3, EventType.CLICK: 1, EventType.SKIP: 0,
    EventType.REFORMULATE: SATISFIED_PLAY_GRADE,
}


def event_grade(event_type: EventType | int, value: float, *,
                satisfied_fraction: float = DEFAULT_SATISFIED_FRACTION) -> int:
    """The relevance grade (0..3) of one logged event (module docstring); value: the event's
    value (a PLAY's fraction listened, in [0, 1]); satisfied_fraction: core.reward.satisfies's
    threshold, the policy's (PolicyConfig.satisfied_fraction)."""
    kind = int(event_type)
    if kind == EventType.PLAY:
        satisfied = satisfies(EventType.PLAY, value, satisfied_fraction=satisfied_fraction)
        return SATISFIED_PLAY_GRADE if satisfied else SHORT_PLAY_GRADE
    if kind not in RELEVANCE_GRADES:
        raise ValueError(f"`event_type` must be one of {sorted([*RELEVANCE_GRADES, int(EventType.PLAY)])}, "
                         f"but got {kind}")
    return RELEVANCE_GRADES[kind]


@dataclass(frozen=True, kw_only=True)
class TrainingGroup:
    """One logged search with feedback: its candidates and graded labels (int32 (n,), 0..3)."""

    query_text: str
    merged: Merged
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.labels.shape != (len(self.merged),):
            raise ValueError(f"`labels` must have shape ({len(self.merged)},), but got {self.labels.shape}")


def graded_labels(merged: Merged, events: Iterable[tuple[str, EventType | int, float]]) -> np.ndarray:
    """int32 (n,): per candidate, the highest `event_grade` of its (entity_id, type, value) events;
    events on entities that are not candidates are passed over."""
    row = {e: i for i, e in enumerate(merged.entity_ids)}
    labels = np.zeros(len(merged), dtype=np.int32)
    for entity_id, kind, value in events:
        grade = event_grade(kind, value)
        if entity_id in row:
            labels[row[entity_id]] = max(labels[row[entity_id]], grade)
    return labels


@dataclass(frozen=True, kw_only=True)
class TrainParams:
    """LambdaMART training. valid_fraction of the groups (drawn with `seed`) is held out for the
    reported NDCG@10; strategies fixes the feature columns (empty: every strategy in the groups,
    in order of first appearance)."""

    num_boost_round: int = 200
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_data_in_leaf: int = 20
    valid_fraction: float = 0.2
    seed: int = 0
    num_threads: int = 1
    strategies: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("num_boost_round", "num_leaves", "min_data_in_leaf", "num_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, but got {getattr(self, name)}")
        if not 0.0 < self.learning_rate <= 1.0:
            raise ValueError(f"`learning_rate` must be in (0, 1], but got {self.learning_rate}")
        if not 0.0 <= self.valid_fraction < 1.0:
            raise ValueError(f"`valid_fraction` must be in [0, 1), but got {self.valid_fraction}")


@dataclass(frozen=True, kw_only=True)
class TrainReport:
    """ndcg_at_10: the model on the held-out groups; rrf_ndcg_at_10: RRF on the same groups, the
    baseline to beat (both NaN without held-out groups). Groups with no positive label are dropped."""

    model_path: Path
    feature_names: tuple[str, ...]
    train_groups: int
    valid_groups: int
    rows: int
    ndcg_at_10: float
    rrf_ndcg_at_10: float


def ndcg_at(labels: np.ndarray, scores: np.ndarray, sizes: Sequence[int], k: int = 10) -> float:
    """Mean NDCG@k over groups (consecutive slices of `sizes`), LightGBM's definition
    (core.metrics.ndcg_at_k with gain 2^label - 1): ties in `scores` keep input order; a group
    with no gain counts 1."""
    out, start = [], 0
    for n in sizes:
        gains = 2.0 ** labels[start:start + n].astype(np.float64) - 1.0
        order = np.argsort(-scores[start:start + n], kind="stable")
        start += n
        out.append(ndcg_at_k(gains[order], gains, k, no_relevant=1.0))
    return float(np.mean(out)) if out else math.nan


def _design(groups: Sequence[TrainingGroup], table: EntityTable, strategies: tuple[str, ...]
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """Feature matrix, labels, RRF scores and group sizes of `groups`, stacked in order."""
    if not groups:
        return np.zeros((0, len(feature_names(strategies))), np.float32), np.zeros(0, np.int32), np.zeros(0), []
    xs = [candidate_features(g.merged, g.query_text, table, strategies) for g in groups]
    return (np.vstack(xs), np.concatenate([g.labels for g in groups]),
            np.concatenate([rrf_scores(g.merged.ranks) for g in groups]), [len(g.merged) for g in groups])


def train_lambdamart(groups: Iterable[TrainingGroup], out_path: str | os.PathLike[str],
                     params: TrainParams | None = None, *, table: EntityTable) -> TrainReport:
    """Train LambdaMART on the logged groups, write the model atomically to `out_path` (LightGBM
    text format) and report NDCG@10 on a held-out split. ValueError if no group has a positive label."""
    import lightgbm as lgb

    p = params or TrainParams()
    kept = [g for g in groups if len(g.merged) and int(g.labels.max()) > 0]
    if not kept:
        raise ValueError("`groups` must hold at least one search with a positive label, but got none")
    strategies = p.strategies or tuple(dict.fromkeys(s for g in kept for s in g.merged.strategies))
    perm = np.random.default_rng(p.seed).permutation(len(kept))
    n_valid = int(len(kept) * p.valid_fraction) if len(kept) > 1 else 0
    valid = [kept[i] for i in sorted(perm[:n_valid])]
    train = [kept[i] for i in sorted(perm[n_valid:])]
    x, y, _, sizes = _design(train, table, strategies)
    names = feature_names(strategies)
    lgb_params = {"objective": "lambdarank", "metric": "ndcg", "eval_at": [10], "verbosity": -1,
                  "learning_rate": p.learning_rate, "num_leaves": p.num_leaves, "seed": p.seed,
                  "min_data_in_leaf": p.min_data_in_leaf, "num_threads": p.num_threads,
                  "deterministic": True, "force_col_wise": True}
    booster = lgb.train(lgb_params, lgb.Dataset(x, y, group=sizes, feature_name=list(names)),
                        num_boost_round=p.num_boost_round)
    write_file_atomic(Path(out_path), booster.model_to_string().encode())
    vx, vy, vrrf, vsizes = _design(valid, table, strategies)
    model_ndcg = ndcg_at(vy, np.asarray(booster.predict(vx, num_threads=p.num_threads)), vsizes) if valid else math.nan
    return TrainReport(model_path=Path(out_path), feature_names=names, train_groups=len(train),
                       valid_groups=len(valid), rows=int(x.shape[0]), ndcg_at_10=model_ndcg,
                       rrf_ndcg_at_10=ndcg_at(vy, vrrf, vsizes) if valid else math.nan)
