"""The routing benchmark's runs: one plan over one seed's searches through core.simulator.runner,
the final rankings judged against the qrels with ir-measures, the hindsight search over fixed
splits and the budget sweep.

Every run goes through core.simulator.runner.run_policy (the broker's pipeline in process, the
shared user model of core.simulator.runner.user_action); a SearchObserver keeps what Records does
not: the final ranking of each search (for nDCG@10 and Recall@100 against the qrels) and the level
tables (for the best fixed split with hindsight).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import headroom
from benchmarks.routing_data import STRATEGIES, PooledData, routing_searches
from core.eventlog import DecisionRecord
from core.policy.allocation import AllocationSpace, equal_split
from core.policy.policies import PolicyKind
from core.ranking import RankerKind
from core.simulator.metrics import Records
from core.simulator.policies import ORACLE, PolicySpec
from core.simulator.users import SimSearch

DEFAULT = "thompson"  # the broker's default policy (benchmarks.experiment.DEFAULT)
PEER = "vw-squarecb"
HYBRID = "hybrid-rrf"
EQUAL = "static-equal"
BEST_FIXED = "best-fixed"
RANKED = 100  # the final ranking's depth: Recall@100 needs 100 (ExperimentConfig.k's maximum)


class NoAffinity:
    """The routing benchmark's audience (core.simulator.runner.Audience): no user prefers one
    relevant document to another by taste (multiplier 1). For the listener's distance from the
    wanted document, a document's collection stands for its genre (its domain) and every document
    is its own author, so another relevant document of the same collection is half-way from the
    wanted one. collection_of: int32 per ordinal, the index of its collection."""

    def __init__(self, collection_of: np.ndarray) -> None:
        self.collection_of = collection_of

    def affinity_multiplier(self, user: int, ordinals: np.ndarray) -> np.ndarray:
        return np.ones(len(ordinals), dtype=np.float64)

    def track_facts(self, ordinals: np.ndarray) -> tuple[np.ndarray, list[str]]:
        return self.collection_of[ordinals], [str(o) for o in ordinals.tolist()]


def routing_levels(budget: int) -> tuple[int, ...]:
    """(0, budget/4, budget/2, budget): the music experiment's level ladder (0, 50, 100, 200 at
    budget 200) scaled, so the allocation space has the same 53 allocations and the equal split
    gives each of the four strategies a quarter."""
    from core.simulator.runner import experiment_levels

    if budget < 4 or budget % 4:
        raise ValueError(f"`budget` must be a positive multiple of 4, but got {budget}")
    return experiment_levels(budget)


def plan_specs(budget: int, names: Sequence[str] = (), best_fixed: tuple[int, ...] | None = None) -> list[PolicySpec]:
    """The plans of the benchmark (benchmarks.routing docstring) in report order; names: keep only
    these (empty = all); best_fixed: the hindsight split's quotas (None = leave that plan out)."""
    space = routing_space(budget)
    specs = [PolicySpec(name=f"{s}-only", kind=PolicyKind.STATIC,
                        static_quotas=tuple(budget if t == s else 0 for t in STRATEGIES)) for s in STRATEGIES]
    specs += [PolicySpec(name=EQUAL, kind=PolicyKind.STATIC, static_quotas=equal_split(space), ranker=RankerKind.BLEND),
              PolicySpec(name=HYBRID, kind=PolicyKind.STATIC,
                         static_quotas=tuple(budget // 2 if s in ("lexical", "semantic") else 0 for s in STRATEGIES))]
    if best_fixed is not None:
        specs.append(PolicySpec(name=BEST_FIXED, kind=PolicyKind.STATIC, static_quotas=best_fixed))
    try:
        from benchmarks.vw_peer import squarecb_spec
    except ImportError:  # vowpalwabbit is in the bench extra; the report says the peer is missing
        pass
    else:
        specs.append(squarecb_spec(name=PEER))
    specs += [PolicySpec(name=DEFAULT, kind=PolicyKind.THOMPSON), PolicySpec(name=ORACLE, kind=None)]
    return [s for s in specs if not names or s.name in names]


@dataclass(frozen=True, kw_only=True)
class Settings:
    """What every task of a run shares (picklable, for worker processes). root: the index;
    data_dirs: the collections, as pooled; searches, budget, zipf_exponent, max_query_chars: the
    benchmark's settings (benchmarks.routing)."""

    root: Path
    data_dirs: tuple[Path, ...]
    searches: int
    budget: int
    zipf_exponent: float
    max_query_chars: int


@dataclass(frozen=True, kw_only=True)
class RoutingRun:
    """One plan over one seed. records: the runner's per-search rows (intent = collection index);
    ndcg, recall: float64 (N,), nDCG@10 and Recall@100 of each search's final ranking against the
    query's qrels (ir-measures); hits: bool (N, S, L) and returned: int64 (N, S, L), the level
    tables, and queries: each search's query id, kept only when asked (tables=True)."""

    records: Records
    ndcg: np.ndarray
    recall: np.ndarray
    hits: np.ndarray | None = None
    returned: np.ndarray | None = None
    queries: tuple[str, ...] = ()


@dataclass
class Observed:
    """A SearchObserver collecting each search's query id (query_ids[t]), final ranking and level
    tables."""

    query_ids: Sequence[str]
    finals: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    hits: list[np.ndarray] = field(default_factory=list)
    returned: list[np.ndarray] = field(default_factory=list)

    def __call__(self, t: int, sim: SimSearch, record: DecisionRecord, hits: np.ndarray,
                 returned: np.ndarray) -> None:
        self.finals.append((self.query_ids[t], record.final))
        self.hits.append(hits)
        self.returned.append(returned)


def judge_rankings(finals: Sequence[tuple[str, Sequence[str]]], qrels: dict[str, dict[str, int]]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(nDCG@10, Recall@100), float64 (N,), of each (query id, ranked doc ids) against `qrels`,
    with ir-measures; a ranking repeated for the same query is evaluated once."""
    import ir_measures
    from ir_measures import R, nDCG

    unique = {(q, tuple(docs)) for q, docs in finals}
    key_of = {k: str(i) for i, k in enumerate(sorted(unique))}
    scored = [ir_measures.ScoredDoc(key_of[k], d, float(len(k[1]) - r)) for k in unique for r, d in enumerate(k[1])]
    judged = [ir_measures.Qrel(key_of[k], d, g) for k in unique for d, g in qrels[k[0]].items()]
    per: dict[str, dict[str, float]] = {v: {"ndcg": 0.0, "recall": 0.0} for v in key_of.values()}
    for m in ir_measures.iter_calc([nDCG @ 10, R @ 100], judged, scored):
        per[m.query_id]["ndcg" if m.measure == nDCG @ 10 else "recall"] = float(m.value)
    keys = [key_of[(q, tuple(docs))] for q, docs in finals]
    return np.array([per[k]["ndcg"] for k in keys]), np.array([per[k]["recall"] for k in keys])


_WORKER: dict[str, Any] = {}


def _state(settings: Settings) -> tuple[PooledData, Any, Any]:
    """(pooled data, EntityTable, shared strategies) of this process, loaded once per settings."""
    from benchmarks.routing_data import pool_collections
    from core.ranking import EntityTable
    from core.simulator.runner import shared_strategies

    if _WORKER.get("settings") != settings:
        data = pool_collections(settings.data_dirs, settings.max_query_chars)
        _WORKER.clear()
        _WORKER.update(settings=settings, data=data, table=EntityTable.from_entities(data.entities),
                       shared=shared_strategies(settings.root, STRATEGIES, routing_levels(settings.budget)),
                       searches={})
    return _WORKER["data"], _WORKER["table"], _WORKER["shared"]


def seed_searches(settings: Settings, seed: int) -> tuple[list[SimSearch], list[str]]:
    """The searches of `seed` and their query ids (routing_searches), drawn once per process."""
    data, _, shared = _state(settings)
    if seed not in _WORKER["searches"]:
        _WORKER["searches"][seed] = routing_searches(data, shared.ordinal, settings.searches, seed,
                                                     settings.zipf_exponent)
    stream: tuple[list[SimSearch], list[str]] = _WORKER["searches"][seed]
    return stream


def run_plan(settings: Settings, seed: int, name: str, best_fixed: tuple[int, ...] | None = None,
             tables: bool = False) -> RoutingRun:
    """Plan `name` over the searches of `seed` (a task of its own, for worker processes)."""
    from core.simulator.runner import ExperimentConfig, run_policy

    data, table, shared = _state(settings)
    searches, query_ids = seed_searches(settings, seed)
    config = ExperimentConfig(searches=settings.searches, seed=seed, k=RANKED, levels=routing_levels(settings.budget),
                              budget=settings.budget)
    spec = next(s for s in plan_specs(settings.budget, best_fixed=best_fixed) if s.name == name)
    observed = Observed(query_ids)
    with tempfile.TemporaryDirectory() as work:
        rec = run_policy(spec, config, settings.root, STRATEGIES, searches, NoAffinity(data.collection_of()), table,
                         memory_state=Path(work) / "memory", shared=shared, observer=observed)
    ndcg, recall = judge_rankings(observed.finals, data.qrels)
    if not tables:
        return RoutingRun(records=rec, ndcg=ndcg, recall=recall)
    return RoutingRun(records=rec, ndcg=ndcg, recall=recall, hits=np.array(observed.hits),
                      returned=np.array(observed.returned), queries=tuple(query_ids))


def routing_space(budget: int) -> AllocationSpace:
    """The allocation space of the routing benchmark's strategies at `budget`."""
    return AllocationSpace(strategies=STRATEGIES, levels=routing_levels(budget), budget=budget)


def per_query_routing(hits: np.ndarray, queries: Sequence[str], budget: int) -> float:
    """The target recall of routing each search by the other searches of its query
    (benchmarks.headroom.leave_one_out): what a policy that knew each query's past (but not the
    wanted document) could reach. hits: the level tables (bool (N, S, L)); queries: query id per
    search."""
    space = routing_space(budget)
    return headroom.leave_one_out(headroom.allocation_table(hits, space), queries, space)


def best_fixed_split(hits: np.ndarray, budget: int) -> tuple[tuple[int, ...], float]:
    """(quotas, target recall) of the fixed allocation retrieving the target most often over the
    searches of `hits` (bool (N, S, L), the level tables), every allocation of the space evaluated
    (benchmarks.headroom.best_fixed)."""
    space = routing_space(budget)
    return headroom.best_fixed(headroom.allocation_table(hits, space), space)
