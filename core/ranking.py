"""Ranking the merged candidates: features, cold-start rankers, LightGBM LambdaMART.

Feature layout (`feature_names(strategies)`; FEATURE_NAMES is the layout for the four built-in
strategies, in StrategyKind order). All float32, one row per candidate of a `Merged`:

- per strategy s, in the given order: `rank_<s>` (1-based rank in s's list; MISSING_RANK when
  absent), `score_<s>` (strategy-native score; 0 when absent), `missing_<s>` (1 when absent);
- `memory_score`: the score in the "memory" list (Q2E), 0 when absent or not a strategy;
- `log1p_popularity`: log1p of the catalog popularity (0 for ids the EntityTable lacks);
- `title_match`, `artist_match`, `album_match`: fraction of the distinct analysed query terms
  found among the entity's analysed terms of that field (0 when the query has no terms); titles
  and albums are read without their credits (core.collapse.strip_credits: "Mi Gente (feat.
  Beyoncé)" is called "Mi Gente"), since a guest's name says who sings on a track, not what it is
  called: counted as a title word, it made a guest appearance outscore the artist's own tracks;
- `title_exact`: 1 when the title's (credits stripped) `core.analysis.text_key` equals the
  query's (NFKC, case and accent folded, tokenised, joined by single spaces: stop words kept);
- `artist_exact`: the same for the artist: the query names the artist, so the artist's own
  tracks come before anyone else's track that mentions the artist ("Perfect Duet (Ed Sheeran &
  Beyoncé)" for 'beyonce', a credit no pattern recognises);
- `attribute_match`: 1 when the "attribute" strategy found the candidate;
- `n_strategies`: how many strategies found it;
- `rrf`: its reciprocal-rank-fusion score, core.fusion.rrf_scores: sum of 1 / (60 + rank) (trees
  cannot form sums of reciprocals of several columns themselves).

Rankers (one Protocol, a registry keyed by RankerKind): RRF, a score blend (the cold-start
default, DEFAULT_COLD_START) and LambdaMART (LightGBM `lambdarank`, Burges, "From RankNet to
LambdaRank to LambdaMART: An Overview", MSR-TR-2010-82) trained from the event log by
core.ranking_train.train_lambdamart. lightgbm is imported only where a model is trained or loaded.
"""

from __future__ import annotations

import enum
import math
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

import numpy as np

from core.analysis import Analyzer, AnalyzerConfig, text_key
from core.catalog import Entity
from core.collapse import recording_key, strip_credits
from core.errors import IndexFormatError
from core.fusion import DEFAULT_RRF_K, rrf_scores
from core.lazy_jit import lazy_njit
from core.merge import Merged
from core.types import StrategyKind

MISSING_RANK = 1000.0
MATCH_FIELDS = ("title", "artist", "album")
_TAIL = ("memory_score", "log1p_popularity", *(f"{f}_match" for f in MATCH_FIELDS), "title_exact",
         "artist_exact", "attribute_match", "n_strategies", "rrf")


def feature_names(strategies: Sequence[str]) -> tuple[str, ...]:
    """Column names of `candidate_features` for these strategies (see the module docstring)."""
    per = tuple(f"{kind}_{s}" for s in strategies for kind in ("rank", "score", "missing"))
    return per + _TAIL


FEATURE_NAMES = feature_names(tuple(k.value for k in StrategyKind))


class FeatureTable(Protocol):
    """What ranking reads of the catalog by entity id: an EntityTable, or a live catalog's table
    (core.catalog_table.LayeredTable: the offline table with the written entities over it).
    Rows index `popularity`; -1 is an id the table lacks."""

    @property
    def popularity(self) -> np.ndarray: ...

    @property
    def positions(self) -> Mapping[str, int]: ...

    def rows(self, entity_ids: Sequence[str]) -> np.ndarray: ...

    def recordings(self, entity_ids: Sequence[str]) -> list[str]: ...

    def match_fractions(self, query_terms: frozenset[str], rows: np.ndarray) -> np.ndarray: ...

    def exact_matches(self, key: str, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def analyze(self, text: str) -> list[str]: ...


@dataclass(frozen=True, kw_only=True)
class EntityTable:
    """What ranking features need of the catalog, indexed by entity id.

    ids: catalog ids, unique. popularity: float64 (n,), >= 0. terms: for each of MATCH_FIELDS, one
    frozenset of analysed terms per entity (n,). title_keys: `core.analysis.text_key` of each title
    (n,); artist_keys: the same of each artist. recording_keys: core.collapse.recording_key of each
    entity (n,), "" = unknown.
    analyzer: the configuration that produced `terms`; queries are analysed the same way.
    Read-only after construction, so one table may be shared by threads (each thread gets its
    own Analyzer, which is not thread-safe).
    """

    ids: tuple[str, ...]
    popularity: np.ndarray
    terms: Mapping[str, tuple[frozenset[str], ...]]
    title_keys: tuple[str, ...]
    artist_keys: tuple[str, ...]
    recording_keys: tuple[str, ...]
    analyzer: AnalyzerConfig = field(default_factory=AnalyzerConfig)
    _row: dict[str, int] = field(init=False, repr=False)
    _local: threading.local = field(init=False, repr=False)
    _term_id: dict[str, int] = field(init=False, repr=False)
    _term_csr: dict[str, tuple[np.ndarray, np.ndarray]] = field(init=False, repr=False)
    _key_ids: tuple[dict[str, int], np.ndarray, np.ndarray] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        n = len(self.ids)
        pop = np.asarray(self.popularity, dtype=np.float64)
        if pop.shape != (n,) or not (np.isfinite(pop).all() and (pop >= 0).all()):
            raise ValueError(f"`popularity` must be finite, >= 0 and of shape ({n},), but got shape {pop.shape}")
        if set(self.terms) != set(MATCH_FIELDS) or any(len(t) != n for t in self.terms.values()):
            raise ValueError(f"`terms` must map each of {MATCH_FIELDS} to {n} term sets, but got "
                             f"{ {k: len(v) for k, v in self.terms.items()} }")
        for name in ("title_keys", "artist_keys", "recording_keys"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"`{name}` must have {n} entries, but got {len(getattr(self, name))}")
        row = {eid: i for i, eid in enumerate(self.ids)}
        if len(row) != n:
            raise ValueError("`ids` must be unique")
        object.__setattr__(self, "popularity", pop)
        object.__setattr__(self, "_row", row)
        object.__setattr__(self, "_local", threading.local())
        term_id: dict[str, int] = {}
        csr = {f: _term_csr(self.terms[f], term_id) for f in MATCH_FIELDS}
        object.__setattr__(self, "_term_id", term_id)
        object.__setattr__(self, "_term_csr", csr)
        key_id: dict[str, int] = {}
        title, artist = (np.fromiter((key_id.setdefault(k, len(key_id)) for k in keys), dtype=np.int64, count=n)
                         for keys in (self.title_keys, self.artist_keys))
        object.__setattr__(self, "_key_ids", (key_id, title, artist))

    @classmethod
    def from_entities(cls, entities: Iterable[Entity], analyzer: AnalyzerConfig | None = None) -> EntityTable:
        """Precompute the analysed term sets of every entity's title, artist and album (titles and
        albums without credits), its title key and its recording key."""
        config = analyzer or AnalyzerConfig()
        analyze = Analyzer(config)
        ents = list(entities)
        text = {f: [_field_text(e, f) for e in ents] for f in MATCH_FIELDS}
        terms = {f: tuple(frozenset(analyze(t)) for t in text[f]) for f in MATCH_FIELDS}
        return cls(ids=tuple(e.id for e in ents), popularity=np.array([e.popularity for e in ents]),
                   terms=terms, title_keys=tuple(text_key(t) for t in text["title"]),
                   artist_keys=tuple(text_key(t) for t in text["artist"]),
                   recording_keys=tuple(recording_key(e.fields.get("title", ""), e.fields.get("artist", ""))
                                        for e in ents),
                   analyzer=config)

    def extended(self, entities: Sequence[Entity]) -> EntityTable:
        """This table with `entities` (ids it does not hold) appended as rows; only they are analysed."""
        return self.joined(EntityTable.from_entities(entities, self.analyzer))

    def joined(self, new: EntityTable) -> EntityTable:
        """This table's rows then `new`'s (ids this one does not hold, analysed alike). Nothing is
        analysed again: rows are copied whole (tuples, dicts and arrays: C-speed) and only `new`'s
        term and key ids are mapped, so a live catalog's small batches cost O(batch) in Python
        instead of rebuilding every row's term ids."""
        if new.analyzer != self.analyzer:
            raise ValueError("`new` must be analysed as this table is, but its analyzer differs")
        if clash := [e for e in new.ids if e in self._row]:
            raise ValueError(f"the new rows must have ids the table does not hold, but got {clash[0]!r}")
        out = object.__new__(EntityTable)
        n = len(self.ids)
        fields: dict[str, Any] = {
            "ids": self.ids + new.ids, "popularity": np.concatenate([self.popularity, new.popularity]),
            "terms": {f: self.terms[f] + new.terms[f] for f in MATCH_FIELDS},
            "title_keys": self.title_keys + new.title_keys, "artist_keys": self.artist_keys + new.artist_keys,
            "recording_keys": self.recording_keys + new.recording_keys, "analyzer": self.analyzer,
            "_row": {**self._row, **{e: n + i for i, e in enumerate(new.ids)}}, "_local": threading.local()}
        # new's ids (terms, keys) are 0..m-1 in its dicts' order: map each onto this table's, adding new ones
        term_id = dict(self._term_id)
        terms = np.array([term_id.setdefault(t, len(term_id)) for t in new._term_id], dtype=np.int64)
        fields["_term_id"] = term_id
        fields["_term_csr"] = {f: _concat_csr(self._term_csr[f], new._term_csr[f], terms) for f in MATCH_FIELDS}
        key_id, title, artist = dict(self._key_ids[0]), self._key_ids[1], self._key_ids[2]
        keys = np.array([key_id.setdefault(k, len(key_id)) for k in new._key_ids[0]], dtype=np.int64)
        fields["_key_ids"] = (key_id, np.concatenate([title, keys[new._key_ids[1]]]),
                              np.concatenate([artist, keys[new._key_ids[2]]]))
        for name, value in fields.items():
            object.__setattr__(out, name, value)
        return out

    @property
    def positions(self) -> Mapping[str, int]:
        """Entity id -> its row, i.e. its catalog position (read-only)."""
        return MappingProxyType(self._row)

    def row(self, entity_id: str) -> int:
        """The row of `entity_id`, -1 when it is not in the table."""
        return self._row.get(entity_id, -1)

    def rows(self, entity_ids: Sequence[str]) -> np.ndarray:
        """int64 (len(entity_ids),): row of each id, -1 for ids not in the table."""
        return np.array([self._row.get(e, -1) for e in entity_ids], dtype=np.int64)

    def recordings(self, entity_ids: Sequence[str]) -> list[str]:
        """The recording key of each id (core.collapse), "" for ids not in the table."""
        keys = self.recording_keys
        return [keys[r] if r >= 0 else "" for r in self.rows(entity_ids).tolist()]

    def match_fractions(self, query_terms: frozenset[str], rows: np.ndarray) -> np.ndarray:
        """float32 (len(rows), len(MATCH_FIELDS)): per field, the share of `query_terms` among the
        terms of each row's entity (rows < 0: 0)."""
        out = np.zeros((len(rows), len(MATCH_FIELDS)), dtype=np.float32)
        ids = np.array([self._term_id.get(t, -1) for t in query_terms], dtype=np.int64)
        ids = ids[ids >= 0]
        if not ids.size or not (rows >= 0).any():
            return out
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        if rows.max() >= len(self.ids):  # the kernel does not check bounds
            raise IndexError(f"row {rows.max()} is out of range for a table of {len(self.ids)} rows")
        hits = np.zeros(len(rows), dtype=np.int64)
        count = _count_matches_jit()
        for j, f in enumerate(MATCH_FIELDS):
            indptr, terms = self._term_csr[f]
            count(indptr, terms, rows, ids, hits)
            out[:, j] = hits / len(query_terms)
        return out

    def exact_matches(self, key: str, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """bool (len(rows),) twice: the title key, the artist key of each row's entity equals `key`
        (rows < 0: False)."""
        key_id, title, artist = self._key_ids
        k = key_id.get(key, -1)
        known = rows >= 0
        safe = np.where(known, rows, 0)
        return known & (title[safe] == k), known & (artist[safe] == k)

    def analyze(self, text: str) -> list[str]:
        """`text` analysed as the entity fields were (a per-thread Analyzer)."""
        if not hasattr(self._local, "analyzer"):
            self._local.analyzer = Analyzer(self.analyzer)
        result: list[str] = self._local.analyzer(text)
        return result


def _field_text(entity: Entity, name: str) -> str:
    """What the features read of a field: titles and albums without their credits."""
    text = entity.fields.get(name, "")
    return strip_credits(text) if name in ("title", "album") else text


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


def _count_matches(indptr: np.ndarray, terms: np.ndarray, rows: np.ndarray, query_ids: np.ndarray,
                   out: np.ndarray) -> None:
    """out[i] = how many of `query_ids` (distinct) the terms of entity rows[i] hold (0 for rows < 0);
    entity r's terms are terms[indptr[r]:indptr[r + 1]]. A search ranks a few hundred candidates
    against a query of a few terms: a loop, where numpy's gathers cost more than the work."""
    for i in range(rows.size):
        r = rows[i]
        hits = 0
        if r >= 0:
            for p in range(indptr[r], indptr[r + 1]):
                t = terms[p]
                for q in range(query_ids.size):
                    if t == query_ids[q]:
                        hits += 1
                        break
        out[i] = hits


_count_matches_jit = lazy_njit(_count_matches)  # numba loads on first use (core.lazy_jit)


def warm_up() -> None:
    """Compile (or load from Numba's cache) the ranking features' kernel, so that a server's first
    search does not pay for it."""
    one = np.zeros(1, dtype=np.int64)
    _count_matches_jit()(np.zeros(2, dtype=np.int64), one, one, one, np.zeros(1, dtype=np.int64))


def _term_csr(sets: Sequence[frozenset[str]], term_id: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """(indptr int64 (n + 1,), term ids int64): entity i's terms are ids[indptr[i]:indptr[i + 1]];
    new terms get the next id of the shared `term_id`."""
    lens = np.fromiter((len(t) for t in sets), dtype=np.int64, count=len(sets))
    indptr = np.concatenate([[0], np.cumsum(lens)])
    ids = np.fromiter((term_id.setdefault(t, len(term_id)) for terms in sets for t in sorted(terms)),
                      dtype=np.int64, count=int(indptr[-1]))
    return indptr, ids


def _concat_csr(old: tuple[np.ndarray, np.ndarray], new: tuple[np.ndarray, np.ndarray], new_ids: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """The CSR of `old`'s rows then `new`'s, whose term ids map through `new_ids` (local -> shared)."""
    indptr, ids = old
    new_indptr, new_terms = new
    return (np.concatenate([indptr, indptr[-1] + new_indptr[1:]]),
            np.concatenate([ids, new_ids[new_terms]]).astype(np.int64, copy=False))


def _field_matches(query_text: str, table: FeatureTable, rows: np.ndarray) -> np.ndarray:
    """float32 (n, len(MATCH_FIELDS) + 2): term-match fractions per field, then title_exact and
    artist_exact, of the entities at `rows` (-1: not in the table, all 0)."""
    out = np.zeros((len(rows), len(MATCH_FIELDS) + 2), dtype=np.float32)
    out[:, :len(MATCH_FIELDS)] = table.match_fractions(frozenset(table.analyze(query_text)), rows)
    key = text_key(query_text)
    if key:
        out[:, -2], out[:, -1] = table.exact_matches(key, rows)
    return out


def candidate_features(merged: Merged, query_text: str, table: FeatureTable,
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
    tail = np.column_stack([memory, np.log1p(pop), _field_matches(query_text, table, rows), attribute,
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
                + exact_artist_weight * artist_exact

    RRF scores are at most S / (DEFAULT_RRF_K + 1) (about 0.016 per strategy), so the default weights let
    popularity (log1p(100) = 4.6 -> 0.005) and field matches break near-ties between RRF scores
    without overturning agreement between strategies. A query that is exactly an artist's name is
    as specific as one that is exactly a title, so the two exact weights are equal.
    """

    table: FeatureTable
    popularity_weight: float = 0.001
    title_weight: float = 0.01
    artist_weight: float = 0.008
    album_weight: float = 0.004
    exact_title_weight: float = 0.01
    exact_artist_weight: float = 0.01

    def __post_init__(self) -> None:
        for name in ("popularity_weight", "title_weight", "artist_weight", "album_weight", "exact_title_weight",
                     "exact_artist_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"`{name}` must be finite and >= 0, but got {value}")

    def rank(self, merged: Merged, query_text: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        x = candidate_features(merged, query_text, self.table).astype(np.float64)
        tail = {name: x[:, -len(_TAIL) + i] for i, name in enumerate(_TAIL)}
        score = (tail["rrf"] + self.popularity_weight * tail["log1p_popularity"]
                 + self.title_weight * tail["title_match"] + self.artist_weight * tail["artist_match"]
                 + self.album_weight * tail["album_match"] + self.exact_title_weight * tail["title_exact"]
                 + self.exact_artist_weight * tail["artist_exact"])
        return _top(score, k)


class LambdaMartRanker:
    """A LightGBM LambdaMART model over `candidate_features`. The model file is LightGBM's text
    format; its feature names fix the strategy columns, so a Merged with other or reordered
    strategies is aligned (absent strategies read as missing). predict runs on one thread."""

    def __init__(self, booster: Any, table: FeatureTable) -> None:
        names = tuple(booster.feature_name())
        self.strategies = tuple(n.removeprefix("rank_") for n in names if n.startswith("rank_"))
        if names != feature_names(self.strategies):
            raise ValueError(f"model features {names} are not a ranking feature layout")
        self.booster, self.table = booster, table

    @classmethod
    def load(cls, path: str | os.PathLike[str], table: FeatureTable) -> LambdaMartRanker:
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


RANKERS: dict[RankerKind, Callable[[FeatureTable, Path | None], Ranker]] = {
    RankerKind.RRF: lambda table, path: RRFRanker(),
    RankerKind.BLEND: lambda table, path: BlendRanker(table=table),
    RankerKind.LAMBDAMART: lambda table, path: LambdaMartRanker.load(_required(path), table),
}


def _required(path: Path | None) -> Path:
    if path is None:
        raise ValueError("`model_path` is required for the lambdamart ranker")
    return path


# What the broker serves until `ltrr train-ranker` has written a model. The score blend, not RRF:
# RRF sees only ranks, so when the policy calls one strategy it passes that list through unchanged,
# whatever the list's own scoring gets wrong (for 'beyonce', the lexical strategy's per-field BM25
# puts the rare title word of "Mi Gente (feat. Beyoncé)" above every track whose artist is
# Beyoncé); the blend adds the field matches and popularity on top of RRF.
DEFAULT_COLD_START = RankerKind.BLEND


def make_ranker(kind: RankerKind | str, table: FeatureTable, model_path: str | os.PathLike[str] | None = None,
                *, cold_start: RankerKind | str = DEFAULT_COLD_START) -> Ranker:
    """The ranker of `kind`. For LAMBDAMART with no file at `model_path` yet, the `cold_start`
    ranker instead (the broker serves that until `ltrr train-ranker` has written a model)."""
    kind = RankerKind(kind)
    path = None if model_path is None else Path(model_path)
    if kind is RankerKind.LAMBDAMART and (path is None or not path.exists()):
        kind = RankerKind(cold_start)
    return RANKERS[kind](table, path)
