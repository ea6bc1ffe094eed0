"""Ranking the merged candidates: features, cold-start rankers, LightGBM LambdaMART.

Feature layout (`feature_names(strategies)`; FEATURE_NAMES is the layout for the four built-in
strategies, in StrategyKind order). All float32, one row per candidate of a `Merged`:

- per strategy s, in the given order: `rank_<s>` (1-based rank in s's list; MISSING_RANK when
  absent), `score_<s>` (strategy-native score; 0 when absent), `missing_<s>` (1 when absent);
- `memory_score`: the score in the "memory" list (Q2E), 0 when absent or not a strategy;
- `log1p_popularity`: log1p of the catalog popularity (0 for ids the EntityTable lacks);
- `title_match`, `artist_match`, `album_match`: fraction of the distinct analysed query terms
  found among the entity's analysed terms of that field (0 when the query has no terms);
- `title_exact`: 1 when the title's `core.analysis.text_key` equals the query's (NFKC, case and
  accent folded, tokenised, joined by single spaces: stop words kept, nothing stemmed);
- `attribute_match`: 1 when the "attribute" strategy found the candidate;
- `n_strategies`: how many strategies found it;
- `rrf`: its reciprocal-rank-fusion score, core.fusion.rrf_scores: sum of 1 / (60 + rank) (trees
  cannot form sums of reciprocals of several columns themselves).

Rankers (one Protocol, a registry keyed by RankerKind): RRF (the cold-start default), a score
blend (the alternative cold start) and LambdaMART (LightGBM `lambdarank`, Burges, "From RankNet to
LambdaRank to LambdaMART: An Overview", MSR-TR-2010-82) trained from the event log by
`train_lambdamart`. lightgbm is imported only where a model is trained or loaded.
"""

from __future__ import annotations

import enum
import math
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from core.analysis import Analyzer, AnalyzerConfig, text_key
from core.catalog import Entity
from core.errors import IndexFormatError
from core.fusion import DEFAULT_RRF_K, rrf_scores
from core.merge import Merged
from core.metrics import ndcg_at_k
from core.storage import write_file_atomic
from core.types import EventType, StrategyKind

MISSING_RANK = 1000.0
MATCH_FIELDS = ("title", "artist", "album")
_TAIL = ("memory_score", "log1p_popularity", *(f"{f}_match" for f in MATCH_FIELDS), "title_exact",
         "attribute_match", "n_strategies", "rrf")
# Graded relevance of a logged event for LambdaMART labels; a candidate takes the highest grade
# of its events; candidates nobody acted on get 0, as do skips (shown, not wanted).
RELEVANCE_GRADES: dict[EventType, int] = {
    EventType.FAVORITE: 3, EventType.LIKE: 3, EventType.PLAY: 2, EventType.CLICK: 1, EventType.SKIP: 0,
    EventType.REFORMULATE: 2,  # the entity the session finally played: wanted as much as a play
}


def feature_names(strategies: Sequence[str]) -> tuple[str, ...]:
    """Column names of `candidate_features` for these strategies (see the module docstring)."""
    per = tuple(f"{kind}_{s}" for s in strategies for kind in ("rank", "score", "missing"))
    return per + _TAIL


FEATURE_NAMES = feature_names(tuple(k.value for k in StrategyKind))


@dataclass(frozen=True, kw_only=True)
class EntityTable:
    """What ranking features need of the catalog, indexed by entity id.

    ids: catalog ids, unique. popularity: float64 (n,), >= 0. terms: for each of MATCH_FIELDS, one
    frozenset of analysed terms per entity (n,). title_keys: `core.analysis.text_key` of each title (n,).
    analyzer: the configuration that produced `terms`; queries are analysed the same way.
    Read-only after construction, so one table may be shared by threads (each thread gets its
    own Analyzer, which is not thread-safe).
    """

    ids: tuple[str, ...]
    popularity: np.ndarray
    terms: Mapping[str, tuple[frozenset[str], ...]]
    title_keys: tuple[str, ...]
    analyzer: AnalyzerConfig = field(default_factory=AnalyzerConfig)
    _row: dict[str, int] = field(init=False, repr=False)
    _local: threading.local = field(init=False, repr=False)

    def __post_init__(self) -> None:
        n = len(self.ids)
        pop = np.asarray(self.popularity, dtype=np.float64)
        if pop.shape != (n,) or not (np.isfinite(pop).all() and (pop >= 0).all()):
            raise ValueError(f"`popularity` must be finite, >= 0 and of shape ({n},), but got shape {pop.shape}")
        if set(self.terms) != set(MATCH_FIELDS) or any(len(t) != n for t in self.terms.values()):
            raise ValueError(f"`terms` must map each of {MATCH_FIELDS} to {n} term sets, but got "
                             f"{ {k: len(v) for k, v in self.terms.items()} }")
        if len(self.title_keys) != n:
            raise ValueError(f"`title_keys` must have {n} entries, but got {len(self.title_keys)}")
        row = {eid: i for i, eid in enumerate(self.ids)}
        if len(row) != n:
            raise ValueError("`ids` must be unique")
        object.__setattr__(self, "popularity", pop)
        object.__setattr__(self, "_row", row)
        object.__setattr__(self, "_local", threading.local())

    @classmethod
    def from_entities(cls, entities: Iterable[Entity], analyzer: AnalyzerConfig | None = None) -> EntityTable:
        """Precompute the analysed term sets of every entity's title, artist and album."""
        config = analyzer or AnalyzerConfig()
        analyze = Analyzer(config)
        ents = list(entities)
        terms = {f: tuple(frozenset(analyze(e.fields.get(f, ""))) for e in ents) for f in MATCH_FIELDS}
        return cls(ids=tuple(e.id for e in ents), popularity=np.array([e.popularity for e in ents]),
                   terms=terms, title_keys=tuple(text_key(e.fields.get("title", "")) for e in ents),
                   analyzer=config)

    def rows(self, entity_ids: Sequence[str]) -> np.ndarray:
        """int64 (len(entity_ids),): row of each id, -1 for ids not in the table."""
        return np.array([self._row.get(e, -1) for e in entity_ids], dtype=np.int64)

    def analyze(self, text: str) -> list[str]:
        """`text` analysed as the entity fields were (a per-thread Analyzer)."""
        if not hasattr(self._local, "analyzer"):
            self._local.analyzer = Analyzer(self.analyzer)
        result: list[str] = self._local.analyzer(text)
        return result


def _strategy_columns(merged: Merged, strategies: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """ranks int32 (n, S') and scores float32 (n, S') aligned to `strategies` (absent columns: 0 / NaN)."""
    n = len(merged)
    ranks = np.zeros((n, len(strategies)), dtype=np.int32)
    scores = np.full((n, len(strategies)), np.nan, dtype=np.float32)
    for j, s in enumerate(strategies):
        if s in merged.strategies:
            src = merged.strategies.index(s)
            ranks[:, j], scores[:, j] = merged.ranks[:, src], merged.scores[:, src]
    return ranks, scores


def _field_matches(merged: Merged, query_text: str, table: EntityTable) -> np.ndarray:
    """float32 (n, len(MATCH_FIELDS) + 1): term-match fractions per field, then title_exact."""
    out = np.zeros((len(merged), len(MATCH_FIELDS) + 1), dtype=np.float32)
    query = frozenset(table.analyze(query_text))
    key = text_key(query_text)
    field_terms = [table.terms[f] for f in MATCH_FIELDS]
    for i, r in enumerate(table.rows(merged.entity_ids).tolist()):
        if r < 0:
            continue
        if query:
            for j, terms in enumerate(field_terms):
                out[i, j] = len(query & terms[r]) / len(query)
        out[i, -1] = float(bool(key) and table.title_keys[r] == key)
    return out


def candidate_features(merged: Merged, query_text: str, table: EntityTable,
                       strategies: Sequence[str] | None = None) -> np.ndarray:
    """float32 (n, len(feature_names(strategies))), rows in `merged` order.

    strategies: the per-strategy column order (default: merged.strategies). Strategies missing
    from `merged` get all-absent columns; merged columns not listed are ignored, also by
    memory_score, attribute_match, n_strategies and rrf. Entity ids the table lacks get
    popularity and field matches 0.
    """
    strategies = tuple(merged.strategies if strategies is None else strategies)
    ranks, scores = _strategy_columns(merged, strategies)
    n, missing = len(merged), ranks <= 0
    per = np.stack([np.where(missing, MISSING_RANK, ranks), np.where(missing, 0.0, scores),
                    missing], axis=2).reshape(n, 3 * len(strategies))
    col = {s: j for j, s in enumerate(strategies)}
    memory = np.nan_to_num(scores[:, col["memory"]], nan=0.0) if "memory" in col else np.zeros(n)
    attribute = ~missing[:, col["attribute"]] if "attribute" in col else np.zeros(n)
    rows = table.rows(merged.entity_ids)
    pop = np.zeros(n)
    pop[rows >= 0] = table.popularity[rows[rows >= 0]]
    tail = np.column_stack([memory, np.log1p(pop), _field_matches(merged, query_text, table), attribute,
                            (~missing).sum(axis=1), rrf_scores(ranks)])
    return np.hstack([per, tail]).astype(np.float32)


def _top(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best `k` of `scores` (float64 (n,)), ties kept in index (Merged) order."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 0:
        raise ValueError(f"`k` must be an integer >= 0, but got {k!r}")
    order = np.argsort(-scores, kind="stable")[:k].astype(np.int64)
    return order, scores[order].astype(np.float32)


class Ranker(Protocol):
    """Orders merged candidates: returns (order int64 (m,), scores float32 (m,)), best first, with
    m = min(k, len(merged)) and `order` indexing merged.entity_ids."""

    def rank(self, merged: Merged, query_text: str, k: int) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True, kw_only=True)
class RRFRanker:
    """Reciprocal rank fusion over the strategy lists, k = 60; the cold-start default. Scores are
    ignored; ties keep Merged order (best rank in any list, then strategy column)."""

    k: float = DEFAULT_RRF_K

    def __post_init__(self) -> None:
        if not (math.isfinite(self.k) and self.k > 0):
            raise ValueError(f"`k` must be finite and > 0, but got {self.k}")

    def rank(self, merged: Merged, query_text: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        return _top(rrf_scores(merged.ranks, self.k), k)


@dataclass(frozen=True, kw_only=True)
class BlendRanker:
    """A hand-set score blend, the alternative cold start:

        score = rrf + popularity_weight * log1p(popularity)
                + title_weight * title_match + artist_weight * artist_match
                + album_weight * album_match + exact_title_weight * title_exact

    RRF scores are at most S / (DEFAULT_RRF_K + 1) (about 0.016 per strategy), so the default weights let
    popularity (log1p(100) = 4.6 -> 0.005) and field matches break near-ties between RRF scores
    without overturning agreement between strategies.
    """

    table: EntityTable
    popularity_weight: float = 0.001
    title_weight: float = 0.01
    artist_weight: float = 0.008
    album_weight: float = 0.004
    exact_title_weight: float = 0.01

    def __post_init__(self) -> None:
        for name in ("popularity_weight", "title_weight", "artist_weight", "album_weight", "exact_title_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"`{name}` must be finite and >= 0, but got {value}")

    def rank(self, merged: Merged, query_text: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        x = candidate_features(merged, query_text, self.table).astype(np.float64)
        tail = {name: x[:, -len(_TAIL) + i] for i, name in enumerate(_TAIL)}
        score = (tail["rrf"] + self.popularity_weight * tail["log1p_popularity"]
                 + self.title_weight * tail["title_match"] + self.artist_weight * tail["artist_match"]
                 + self.album_weight * tail["album_match"] + self.exact_title_weight * tail["title_exact"])
        return _top(score, k)


class LambdaMartRanker:
    """A LightGBM LambdaMART model over `candidate_features`. The model file is LightGBM's text
    format; its feature names fix the strategy columns, so a Merged with other or reordered
    strategies is aligned (absent strategies read as missing). predict runs on one thread."""

    def __init__(self, booster: Any, table: EntityTable) -> None:
        names = tuple(booster.feature_name())
        self.strategies = tuple(n.removeprefix("rank_") for n in names if n.startswith("rank_"))
        if names != feature_names(self.strategies):
            raise ValueError(f"model features {names} are not a ranking feature layout")
        self.booster, self.table = booster, table

    @classmethod
    def load(cls, path: str | os.PathLike[str], table: EntityTable) -> LambdaMartRanker:
        import lightgbm as lgb

        try:
            booster = lgb.Booster(model_str=Path(path).read_text())
            return cls(booster, table)
        except (OSError, UnicodeDecodeError, lgb.basic.LightGBMError, ValueError) as err:
            raise IndexFormatError(path, f"not a readable LambdaMART ranking model ({err})") from None

    def rank(self, merged: Merged, query_text: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        if len(merged) == 0:
            return _top(np.zeros(0), k)
        x = candidate_features(merged, query_text, self.table, self.strategies)
        return _top(np.asarray(self.booster.predict(x, num_threads=1), dtype=np.float64), k)


class RankerKind(enum.StrEnum):
    RRF = "rrf"
    BLEND = "blend"
    LAMBDAMART = "lambdamart"


RANKERS: dict[RankerKind, Callable[[EntityTable, Path | None], Ranker]] = {
    RankerKind.RRF: lambda table, path: RRFRanker(),
    RankerKind.BLEND: lambda table, path: BlendRanker(table=table),
    RankerKind.LAMBDAMART: lambda table, path: LambdaMartRanker.load(_required(path), table),
}


def _required(path: Path | None) -> Path:
    if path is None:
        raise ValueError("`model_path` is required for the lambdamart ranker")
    return path


def make_ranker(kind: RankerKind | str, table: EntityTable, model_path: str | os.PathLike[str] | None = None,
                *, cold_start: RankerKind | str = RankerKind.RRF) -> Ranker:
    """The ranker of `kind`. For LAMBDAMART with no file at `model_path` yet, the `cold_start`
    ranker instead (the broker serves that until `ltrr train-ranker` has written a model)."""
    kind = RankerKind(kind)
    path = None if model_path is None else Path(model_path)
    if kind is RankerKind.LAMBDAMART and (path is None or not path.exists()):
        kind = RankerKind(cold_start)
    return RANKERS[kind](table, path)


@dataclass(frozen=True, kw_only=True)
class TrainingGroup:
    """One logged search with feedback: its candidates and graded labels (int32 (n,), 0..3)."""

    query_text: str
    merged: Merged
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.labels.shape != (len(self.merged),):
            raise ValueError(f"`labels` must have shape ({len(self.merged)},), but got {self.labels.shape}")


def graded_labels(merged: Merged, events: Iterable[tuple[str, EventType]]) -> np.ndarray:
    """int32 (n,): per candidate, the highest RELEVANCE_GRADES of its (entity_id, type) events."""
    row = {e: i for i, e in enumerate(merged.entity_ids)}
    labels = np.zeros(len(merged), dtype=np.int32)
    for entity_id, kind in events:
        if entity_id in row:
            labels[row[entity_id]] = max(labels[row[entity_id]], RELEVANCE_GRADES[EventType(kind)])
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
