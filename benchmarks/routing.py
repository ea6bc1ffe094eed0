"""The routing benchmark on real relevance judgments (issue 13, deliverable 5).

    python -m benchmarks.routing --data DIR [DIR ...] [--searches N] [--seeds S] [--out DIR]
                                 [--json FILE] [--budget B] [--zipf S] [--max-query-chars C]
                                 [--encoder minilm|hashing] [--index DIR] [--jobs J] [--sweep B,B,...]

BEIR-layout collections are pooled into one catalog (benchmarks.routing_data: each document keeps
its collection as the attribute `collection`) and indexed with the four strategies (lexical BM25,
semantic MiniLM, attribute, memory) under DIR/index-<encoder>, or taken from --index. Simulated
searches replay the pooled judged queries: queries recur with Zipf frequencies (exponent --zipf,
default 1.0, the power law of query logs: routing_data.DEFAULT_ZIPF_EXPONENT), the wanted document
is drawn from the query's judged-relevant set with probability proportional to its grade, and the
user acts through the music experiment's user model (core.simulator.runner.user_action, with no
genre taste): the policy sees only that feedback. Query texts longer than --max-query-chars
(default 1024, the shards' request limit) are cut at a word boundary; the run prints how many.

Plans, all at one candidate budget B (levels 0, B/4, B/2, B): each strategy alone at B; the equal
split (B/4 each, the broker's blend ranker); lexical + semantic at B/2 each fused by RRF (what
OpenSearch, Elasticsearch, Qdrant and LanceDB hybrid search do); the best fixed split with
hindsight (every fixed allocation of the space evaluated on the seed's searches from the equal
split run's level tables, the best then run as a plan: an upper bound for static plans); Vowpal
Wabbit SquareCB (benchmarks.vw_peer); the default learned policy (thompson); the per-query oracle.

DEFAULT_BUDGET = 40, chosen with `--sweep 20,40,100` on the six development collections only
(scifact, med, cisi, npl, time, adi; MiniLM; memory empty), pooled target recall of the static plans:

    budget   lexical-only  semantic-only  equal split  lexical+semantic halves (= best fixed)
    20       0.620         0.621          0.566        0.638
    40       0.682         0.696          0.638        0.712
    100      0.758         0.781          0.743        0.803
    (lexical-only at 200: 0.819; attribute-only 0.005 at every budget: titles rarely match)

At 40 no static plan retrieves more than 71% of the wanted documents, so a plan that routes per
query has room to do better (at 100-200 the best static plan is at 0.80-0.82 and the collections
with short documents saturate: time 0.97 at 100), and a search still fetches a fifth of the music
experiment's 200 candidates.

Reported per collection and pooled, mean ± 95% Student-t interval over seeds: target recall at
the budget, nDCG@10 and Recall@100 of the final ranking (ir-measures), candidates fetched,
candidate recall; the share of the (best fixed split -> oracle) gap in pooled target recall
that the learned policy closes; and, on the equal split's level tables, how much of that gap
knowing each query's past could close (routing_run.per_query_routing, leave-one-out:
`per_query_routing` in results.json, one figure per seed, next to each seed's best fixed split on
the same tables). --out gets results.json, results.md and routing.png (the learned
quota mix per collection and the oracle-gap bar); --json writes results.json's content elsewhere.
Held-out collections (cranfield, cacm, lisa) may be run, but --sweep refuses them.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import pin_threads, run_info

DEFAULT_SEARCHES = 20_000
DEFAULT_SEEDS = 3
DEFAULT_BUDGET = 40  # the module docstring gives the sweep that chose it


def index_root(args: argparse.Namespace, data: Any) -> Path:
    """--index, or DIR/index-<encoder> built from the pooled catalog when absent."""
    from benchmarks.routing_data import build_routing_index

    if args.index is not None:
        return Path(args.index)
    root = args.out / f"index-{args.encoder}-{'-'.join(data.collections)}"
    if not (root / "memory").exists():
        print(f"building {root} ({args.encoder} encoder, {len(data.entities):,} documents)...", flush=True)
        build_routing_index(data, root, args.encoder)
    return root


def run_tasks(settings: Any, tasks: Sequence[tuple[int, str, tuple[int, ...] | None, bool]], jobs: int
              ) -> dict[tuple[int, str], Any]:
    """Every (seed, plan, best-fixed quotas, keep tables) task on `jobs` processes (this one for 1)."""
    import concurrent.futures
    import multiprocessing

    from benchmarks.routing_run import run_plan

    out: dict[tuple[int, str], Any] = {}
    started = time.perf_counter()
    if jobs == 1:
        for seed, name, best, keep in tasks:
            out[seed, name] = run_plan(settings, seed, name, best, keep)
            print(f"seed {seed} {name}: {time.perf_counter() - started:.0f} s", flush=True)
        return out
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(run_plan, settings, *task): task for task in tasks}
        for f in concurrent.futures.as_completed(futures):
            seed, name = futures[f][:2]
            out[seed, name] = f.result()
            print(f"seed {seed} {name}: {time.perf_counter() - started:.0f} s", flush=True)
    return out


def run(args: argparse.Namespace, data: Any, root: Path) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """(the JSON result, per plan the RoutingRun of every seed)."""
    from benchmarks.routing_report import gap_closed, seed_record
    from benchmarks.routing_run import (
        BEST_FIXED,
        DEFAULT,
        EQUAL,
        Settings,
        best_fixed_split,
        per_query_routing,
        plan_specs,
    )

    settings = Settings(root=root, data_dirs=tuple(args.data), searches=args.searches, budget=args.budget,
                        zipf_exponent=args.zipf, max_query_chars=args.max_query_chars)
    names = [s.name for s in plan_specs(args.budget)]
    learned_first = sorted(names, key=lambda n: n not in (DEFAULT, "vw-squarecb"))
    runs = run_tasks(settings, [(seed, n, None, n == EQUAL) for n in learned_first for seed in range(args.seeds)],
                     args.jobs)
    best = {seed: best_fixed_split(runs[seed, EQUAL].hits, args.budget) for seed in range(args.seeds)}
    runs.update(run_tasks(settings, [(seed, BEST_FIXED, best[seed][0], False) for seed in range(args.seeds)],
                          args.jobs))
    order = [*names[: names.index(EQUAL) + 2], BEST_FIXED, *names[names.index(EQUAL) + 2:]]
    by_plan = {n: [runs[seed, n] for seed in range(args.seeds)] for n in order}
    plans = {n: [seed_record(r, data.collections) for r in rs] for n, rs in by_plan.items()}
    result: dict[str, Any] = {
        "default_policy": DEFAULT, "plans": plans, "collections": list(data.collections),
        "gap_closed": gap_closed(plans),
        "best_fixed": [{"quotas": list(q), "hindsight_target_recall": r} for q, r in best.values()],
        "per_query_routing": [per_query_routing(runs[seed, EQUAL].hits, runs[seed, EQUAL].queries, args.budget)
                              for seed in range(args.seeds)],
        "settings": {"searches": args.searches, "seeds": args.seeds, "budget": args.budget,
                     "levels": list(plan_levels(args.budget)),
                     "strategies": list(by_plan[DEFAULT][0].records.strategies),
                     "zipf_exponent": args.zipf, "target": "drawn from the judged-relevant set by grade",
                     "max_query_chars": args.max_query_chars, "truncated_queries": data.truncated,
                     "queries": len(data.queries), "documents": len(data.entities), "encoder": args.encoder},
    }
    return result, by_plan


def plan_levels(budget: int) -> tuple[int, ...]:
    from benchmarks.routing_run import routing_levels

    return routing_levels(budget)


def sweep(data: Any, root: Path, budgets: Sequence[int]) -> None:
    from benchmarks.common import print_table
    from benchmarks.routing_budget import budget_sweep

    rows = budget_sweep(data, root, budgets)
    for budget, row in rows.items():
        print(f"budget {budget} (levels {plan_levels(budget)}): pooled target recall, memory empty")
        print_table([[name, value] for name, value in row.items()], ["plan", "target recall"])
        print()


def finite(value: Any) -> Any:
    """`value` with every NaN replaced by None (null), recursively: strict JSON has no NaN (a
    collection without searches in a short run has no measures)."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    from benchmarks.routing_data import DEFAULT_ZIPF_EXPONENT
    from core.query import DEFAULT_MAX_QUERY_CHARS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, nargs="+", required=True, help="BEIR-layout collection folders")
    p.add_argument("--searches", type=int, default=DEFAULT_SEARCHES, help="per plan and seed (default %(default)s)")
    p.add_argument("--seeds", type=int, default=DEFAULT_SEEDS, help="default %(default)s")
    p.add_argument("--out", type=Path, default=Path("routing-results"), help="default %(default)s")
    p.add_argument("--json", type=Path, default=None, help="also write the JSON result here")
    p.add_argument("--budget", type=int, default=DEFAULT_BUDGET, help="candidates per search (default %(default)s)")
    p.add_argument("--zipf", type=float, default=DEFAULT_ZIPF_EXPONENT, help="query frequency exponent")
    p.add_argument("--max-query-chars", type=int, default=DEFAULT_MAX_QUERY_CHARS,
                   help="longer query texts are cut to this (default %(default)s, the shards' limit)")
    p.add_argument("--encoder", choices=("minilm", "hashing"), default="minilm",
                   help="hashing: spelling, not meaning; only for tests and smoke runs")
    p.add_argument("--index", type=Path, default=None, help="a prebuilt index of the same --data (in order)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes (default: the CPUs)")
    p.add_argument("--sweep", type=lambda s: [int(b) for b in s.split(",") if b], default=None,
                   help="print the static plans' target recall at these budgets and exit")
    args = p.parse_args(argv)
    if args.searches < 1 or args.seeds < 1 or args.jobs < 1 or args.max_query_chars < 1:
        p.error("--searches, --seeds, --jobs and --max-query-chars must be >= 1")
    if args.budget < 4 or args.budget % 4:
        p.error(f"--budget must be a positive multiple of 4, but got {args.budget}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    pin_threads()
    from benchmarks.routing_data import pool_collections
    from benchmarks.routing_report import interval, tables, write_plot

    info = run_info()
    data = pool_collections(args.data, args.max_query_chars)
    cut = sum(data.truncated.values())
    print(f"{len(data.entities):,} documents, {len(data.queries):,} judged queries from {', '.join(data.collections)}; "
          f"{cut} query texts cut to {args.max_query_chars} characters {data.truncated}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    root = index_root(args, data)
    if args.sweep:
        sweep(data, root, args.sweep)
        return 0
    started = time.perf_counter()
    result, by_plan = run(args, data, root)
    result["seconds"], result["run"] = round(time.perf_counter() - started, 1), info
    closed = interval(result["gap_closed"])
    text = (f"{tables(result)}\n\nBudget {args.budget} candidates (levels {plan_levels(args.budget)}), Zipf exponent "
            f"{args.zipf}, target drawn by grade, {cut} query texts cut to {args.max_query_chars} characters.\n"
            f"Best fixed split per seed (hindsight): {[b['quotas'] for b in result['best_fixed']]}.\n"
            f"On the equal split's level tables, the best fixed split finds "
            f"{[round(b['hindsight_target_recall'], 3) for b in result['best_fixed']]} of the targets and routing "
            f"each query by its other searches (leave-one-out) {[round(r, 3) for r in result['per_query_routing']]}: "
            f"what knowing each query's past, but not the wanted document, can reach.\n"
            f"{result['default_policy']} closes {closed[0]:.3f} ± {closed[1]:.3f} of the gap in pooled target "
            f"recall between the best fixed split and the oracle.\n"
            f"{result['seconds']:.0f} s, {args.jobs} process(es) of 1 thread (commit {info['commit']}, "
            f"{info['machine']})")
    plot = write_plot(by_plan, result["plans"], data.collections, args.out)
    print(text)
    payload = json.dumps(finite(result), indent=2, allow_nan=False) + "\n"
    (args.out / "results.json").write_text(payload)
    (args.out / "results.md").write_text(text + f"\n\n![routing]({plot.name})\n")
    if args.json is not None:
        args.json.write_text(payload)
    print(f"wrote {args.out / 'results.json'}, {args.out / 'results.md'}, {plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
