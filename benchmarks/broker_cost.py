"""Where the broker's CPU goes per search, step by step, in process (no gRPC, no other processes).

    python -m benchmarks.broker_cost [--index indexes/demo] [--searches N] [--json FILE]

The broker's own work on a search is: query understanding's answer converted, `featurize` and the
bandit's draw (`decide`), the candidate lists merged, ranked (features + model) and collapsed
(`serve`), the decision record encoded for the event log, and the response message built. This
benchmark replays N searches of the music simulator's query mix through the same code the broker
runs (core.pipeline.SearchPipeline over the demo catalog, the strategies opened in process to get
real candidate lists) and prints the median and mean microseconds of every step, so a change to
one step is measured against the others in the same run. The gRPC calls themselves are measured
by `benchmarks.load` (the echo and no-op floors).
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.broker import sample_queries
from benchmarks.common import print_table, run_info, write_json
from core.catalog import demo_catalog_path, load_catalog
from core.catalog_table import LiveTable
from core.eventlog import decision_values
from core.indexing import open_strategy
from core.merge import StrategyList
from core.pipeline import Answer, CallStatus, SearchPipeline
from core.policy.features import DIM
from core.policy.policies import BanditPolicy, PolicyConfig
from core.query import Query
from core.ranking import make_ranker, warm_up
from core.types import SupportsUnderstand

STRATEGIES = ("lexical", "semantic", "attribute", "memory")


def _answers(strategies: dict[str, Any], query: Query, quotas: dict[str, int]) -> list[Answer]:
    out = []
    for name in STRATEGIES:
        q = quotas.get(name, 0)
        if q <= 0:
            out.append(Answer(name, 0, CallStatus.SKIPPED, 0.0))
            continue
        s = strategies[name]
        hits = s.retrieve(query, q, s.collection.allowed(query.filters))
        ids = [s.collection.ids[i] for i in hits.ordinals.tolist()]
        out.append(Answer(name, q, CallStatus.OK, 5.0, StrategyList(name, ids, hits.scores.astype(np.float32))))
    return out


def measure(index: str, searches: int, ranker: str = "blend") -> dict[str, dict[str, float]]:
    """Per step: median and mean microseconds over `searches` searches."""
    entities = load_catalog(demo_catalog_path())
    table = LiveTable.from_entities(entities).table  # what the broker ranks with (services.broker)
    strategies = {name: open_strategy(index, name) for name in STRATEGIES}
    attribute = strategies["attribute"]
    assert isinstance(attribute, SupportsUnderstand)
    pipeline = SearchPipeline(BanditPolicy(STRATEGIES, DIM, PolicyConfig()), make_ranker(ranker, table, None),
                              recordings=table)
    warm_up()  # the ranking kernel's compilation is start-up, not a search's
    rng = np.random.default_rng(0)
    times: dict[str, list[float]] = defaultdict(list)
    for text in sample_queries(searches):
        query = Query(text=text)
        t0 = time.perf_counter()
        interps = attribute.understand(query, 8)  # the attribute shard's work, for context
        t1 = time.perf_counter()
        plan = pipeline.decide(text, {}, interps, rng)
        t2 = time.perf_counter()
        answers = _answers(strategies, query, plan.quotas)
        t3 = time.perf_counter()
        served = pipeline.serve(plan, answers, decision_id=uuid.uuid4().hex, ts=time.time(), k=10)
        t4 = time.perf_counter()
        decision_values(served.record)
        t5 = time.perf_counter()
        for step, a, b in (("understand (attribute shard)", t0, t1), ("decide", t1, t2),
                           ("retrieve x4 (the shards)", t2, t3), ("serve: merge+rank+record", t3, t4),
                           ("decision row encode", t4, t5)):
            times[step].append((b - a) * 1e6)
        times["  of which rank"].append(_time_rank(pipeline, served, text))
    return {step: {"median_us": float(np.median(v)), "mean_us": float(np.mean(v))} for step, v in times.items()}


def _time_rank(pipeline: SearchPipeline, served: Any, text: str) -> float:
    t = time.perf_counter()
    pipeline.rank(served.merged, text, 10)
    return (time.perf_counter() - t) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", default="indexes/demo")
    parser.add_argument("--searches", type=int, default=500)
    parser.add_argument("--ranker", default="blend")
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    if not (Path(args.index) / "collection").exists():
        raise SystemExit(f"{args.index}: no index; run `make demo DEMO_ARGS=--once` first")
    result = measure(args.index, args.searches, args.ranker)
    print_table([[k, f"{v['median_us']:.0f}", f"{v['mean_us']:.0f}"] for k, v in result.items()],
                ["step", "median µs", "mean µs"])
    write_json(Path(args.json) if args.json else None, {"run": run_info(), "steps": result})


if __name__ == "__main__":
    main()
