"""The LTR&R experiment (issue 6): every retrieval plan over the same simulated searches, in process or over gRPC.

    python -m benchmarks.experiment [--mode inprocess|grpc] [--searches N] [--seeds K] [--out DIR]
                                    [--encoder hashing|minilm] [--index DIR] [--policies a,b,...]
                                    [--ope-searches M] [--jobs J]

For each seed, core.simulator.runner replays one stream of N simulated searches
(core.simulator.users: spearfishing, topical, attribute and context intents over the bundled
catalog) through every plan of core.simulator.policies, plus Vowpal Wabbit SquareCB
(benchmarks.vw_peer), at one budget of 200 candidates, and the simulated listener
(core.simulator.listening) plays, skips or searches again on each ranked list. The table gives,
per plan, the mean over seeds with a 95% Student-t confidence interval over seeds:

- candidate recall: the share of searches with an action whose acted-on entity is among the
  candidates (the issue's definition; what the policies learn from);
- target recall: the share of searches whose target (the track the user wants) is among the
  candidates (a user may act on another relevant track instead);
- MRR@10, nDCG@10: of the target (grade 2) and the rest of the relevant set (grade 1) after ranking;
- fetched: candidates the strategies returned, per search; strategies: strategies called;
- regret: cumulative regret against the oracle over the N searches (core.simulator.runner).

Then: both recalls per intent; the acceptance comparisons, paired over seeds (every plan of a
seed sees the same searches and click draws); and the off-policy check (benchmarks.experiment_ope,
--ope-searches, 0 skips it). The index is built once with the chosen encoder (hashing by default:
no model needed; MiniLM embeddings are cached in ~/.cache/ltrr/embeddings) under DIR/index-<encoder>,
or taken from --index. results.json, results.md and the PNG plots (benchmarks.experiment_plots:
recall over time, cumulative regret, the default policy's quota mix per intent) go to DIR.
In process, every (seed, plan) is a task and --jobs processes run them (default: one per CPU), the
off-policy check beside them; the results do not depend on --jobs (every task is seeded).

--mode grpc runs the same searches, clicks and measures through a real cluster (shard and broker
processes on loopback; benchmarks/experiment_grpc.py), by default a short run: 300 searches, one
seed, thompson and static-equal. Latency there is measured, not simulated (regret still uses the
simulated latency model, so it means the same in both modes); a third table gives the Search round
trip and searches/s.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import pin_threads, run_info

STRATEGIES = ("lexical", "semantic", "attribute", "memory")
DEFAULT = "thompson"  # the broker's default policy, the one the acceptance is about
PEER = "vw-squarecb"
COLUMNS = (("acted_recall", "candidate recall"), ("candidate_recall", "target recall"), ("mrr@10", "MRR@10"),
           ("ndcg@10", "nDCG@10"), ("fetched", "fetched"),
           ("strategies_called", "strategies"), ("cumulative_regret", "regret"))


def add_index_options(parser: argparse.ArgumentParser) -> None:
    """--index and --encoder, what build_or_open takes."""
    parser.add_argument("--index", type=Path, default=None, help="an index directory with the four strategies")
    parser.add_argument("--encoder", choices=("hashing", "minilm"), default="hashing")


def build_or_open(index: Path | None, out: Path, encoder: str) -> Path:
    from core.catalog import demo_catalog_path, load_catalog
    from core.indexing import build_index

    if index is not None:
        return index
    root = out / f"index-{encoder}"
    if not (root / "memory").exists():
        print(f"building {root} ({encoder} encoder)...", flush=True)
        build_index(load_catalog(demo_catalog_path()), root, STRATEGIES,
                    {"lexical": {"fields": "title^2,artist^1.5,album^0.5", "progress": False},
                     "semantic": {"encoder": encoder, "progress": False}})
    return root


def interval(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% Student-t interval (0 for a single value)."""
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        return float(x.mean()), 0.0
    half = stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return float(x.mean()), float(half)


def fmt(values: Sequence[float]) -> str:
    mean, half = interval(values)
    digits = 1 if abs(mean) >= 10 else 3
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


def markdown(rows: list[list[str]], header: Sequence[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def plans(args: argparse.Namespace, config: Any) -> list[Any]:
    """The plans of this run: core.simulator.policies.standard_policies plus, in process, Vowpal
    Wabbit SquareCB (benchmarks.vw_peer) when vowpalwabbit is installed; --policies filters them."""
    from core.simulator.policies import ORACLE, standard_policies

    specs = standard_policies(STRATEGIES, config.levels, config.budget)
    if args.mode == "inprocess":
        try:
            from benchmarks.vw_peer import squarecb_spec
        except ImportError as e:  # vowpalwabbit is in the bench extra
            print(f"skipping {PEER}: {e} (pip install -e '.[bench]')", flush=True)
        else:
            specs.insert(next(i for i, s in enumerate(specs) if s.name == ORACLE), squarecb_spec(name=PEER))
    return [s for s in specs if not args.policies or s.name in args.policies]


_WORKER: dict[str, Any] = {}  # per process: the catalog, strategies and searches its tasks share


def _worker_state(root: Path) -> tuple[Any, Any, Any]:
    """(entities, EntityTable, the shared strategies) of this process, loaded once: the plans a
    process runs share the strategies' answer caches (core.simulator.runner.shared_strategies)."""
    from core.catalog import demo_catalog_path, load_catalog
    from core.ranking import EntityTable
    from core.simulator.runner import EXPERIMENT_LEVELS, shared_strategies

    if _WORKER.get("root") != root:
        entities = load_catalog(demo_catalog_path())
        _WORKER.clear()
        _WORKER.update(root=root, entities=entities, table=EntityTable.from_entities(entities),
                       shared=shared_strategies(root, STRATEGIES, EXPERIMENT_LEVELS), searches={})
    return _WORKER["entities"], _WORKER["table"], _WORKER["shared"]


def run_plan(args: argparse.Namespace, root: Path, seed: int, name: str) -> tuple[Any, float]:
    """One plan over the searches of one seed, in process: its Records and the seconds it took.
    A task of its own, so that plans and seeds can run in parallel processes (--jobs)."""
    from core.simulator.runner import ExperimentConfig, run_policy, simulated_searches

    started = time.perf_counter()
    entities, table, shared = _worker_state(root)
    config = ExperimentConfig(searches=args.searches, seed=seed)
    if seed not in _WORKER["searches"]:
        _WORKER["searches"][seed] = simulated_searches(entities, config)
    users, searches = _WORKER["searches"][seed]
    spec = next(s for s in plans(args, config) if s.name == name)
    with tempfile.TemporaryDirectory() as work:
        rec = run_policy(spec, config, root, STRATEGIES, searches, users, table, memory_state=Path(work) / "memory",
                         shared=shared)
    return rec, time.perf_counter() - started


def _offpolicy(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    from benchmarks.experiment_ope import offpolicy_check
    from core.simulator.runner import ExperimentConfig

    entities, _, _ = _worker_state(root)
    with tempfile.TemporaryDirectory() as work:
        return offpolicy_check(entities, root, STRATEGIES, ExperimentConfig(searches=args.ope_searches, seed=0), work)


def _run_inprocess(args: argparse.Namespace, root: Path, specs: Sequence[Any]) -> tuple[dict[tuple[int, str], Any],
                                                                                        dict[str, Any] | None]:
    """Every (seed, plan) task and the off-policy check, on args.jobs processes (in this one for
    --jobs 1); the learned plans, the slowest, are started first."""
    import concurrent.futures
    import contextlib
    import functools
    import multiprocessing
    from collections.abc import Callable, Iterator

    from tqdm import tqdm

    order = sorted(specs, key=lambda s: not s.learns)
    tasks = [(seed, spec.name) for spec in order for seed in range(args.seeds)]
    offpolicy: Callable[[], dict[str, Any]] | None = None
    with contextlib.ExitStack() as stack:
        done: Iterator[tuple[tuple[int, str], tuple[Any, float]]]
        if args.jobs == 1:
            done = ((task, run_plan(args, root, *task)) for task in tasks)
            if args.ope_searches > 0:
                offpolicy = functools.partial(_offpolicy, args, root)
        else:
            pool = stack.enter_context(concurrent.futures.ProcessPoolExecutor(
                args.jobs, mp_context=multiprocessing.get_context("spawn")))
            futures = {pool.submit(run_plan, args, root, *task): task for task in tasks}
            if args.ope_searches > 0:
                offpolicy = pool.submit(_offpolicy, args, root).result
            done = ((futures[f], f.result()) for f in concurrent.futures.as_completed(futures))
        records: dict[tuple[int, str], Any] = {}
        with tqdm(total=len(tasks), desc="plans x seeds", unit="run", disable=None) as bar:
            for (seed, name), (rec, took) in done:
                records[seed, name] = rec
                bar.write(f"seed {seed} {name}: {args.searches} searches in {took:.0f} s")
                bar.update()
        return records, offpolicy() if offpolicy is not None else None


def run(args: argparse.Namespace, out: Path) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """The JSON-able result and the per-search Records of every plan, one per seed."""
    from core.catalog import demo_catalog_path, load_catalog
    from core.simulator.metrics import Records
    from core.simulator.runner import ExperimentConfig
    from core.simulator.users import Intent

    info = run_info()  # before the run: the commit whose code is loaded
    root = build_or_open(args.index, out, args.encoder)
    specs = plans(args, ExperimentConfig(searches=args.searches, seed=0))
    names = [s.name for s in specs]
    started = time.perf_counter()
    offpolicy = None
    if args.mode == "grpc":
        from benchmarks.experiment_grpc import run_grpc

        entities = load_catalog(demo_catalog_path())
        records: dict[tuple[int, str], Records] = {}
        for seed in range(args.seeds):
            config = ExperimentConfig(searches=args.searches, seed=seed)
            with tempfile.TemporaryDirectory() as work:
                for name, grpc_rec in run_grpc(entities, root, STRATEGIES, plans(args, config), config, work).items():
                    records[seed, name] = grpc_rec
    else:
        records, offpolicy = _run_inprocess(args, root, specs)
    seconds = time.perf_counter() - started
    summaries: dict[str, list[dict[str, Any]]] = {}
    runs: dict[str, list[Records]] = {}
    for name in names:
        for seed in range(args.seeds):
            rec = records[seed, name]
            summary: dict[str, Any] = rec.summary()
            per_intent = {i.name.lower(): rec.summary(rec.intent == i) for i in Intent}
            summary["by_intent"] = {i: s["candidate_recall"] for i, s in per_intent.items()}
            summary["acted_by_intent"] = {i: s["acted_recall"] for i, s in per_intent.items()}
            summaries.setdefault(name, []).append(summary)
            runs.setdefault(name, []).append(rec)
    result: dict[str, Any] = {"run": info, "searches": args.searches, "seeds": args.seeds, "encoder": args.encoder,
                              "seconds": seconds, "jobs": args.jobs, "policies": summaries, "mode": args.mode}
    result["verdict"] = verdict(summaries)
    if offpolicy is not None:
        result["offpolicy"] = offpolicy
    return result, runs


def _paired(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Mean and 95% half-width of the per-seed differences a - b (same seeds, same searches)."""
    return interval([x - y for x, y in zip(a, b, strict=True)])


def verdict(pol: Mapping[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The acceptance comparisons of issue 6, paired over seeds (every plan of a seed sees the same
    searches and click draws, so the difference per seed is what varies): the default policy's
    candidate recall against the best static plan's (best single strategy, equal quotas or RRF),
    under both recall definitions, with candidates fetched; and its cumulative regret against
    Vowpal Wabbit's. With one seed there is no interval, so the recall comparisons give no verdict
    ("met" is None)."""
    out: dict[str, Any] = {}
    if DEFAULT not in pol:
        return out
    statics = [n for n in pol if n.endswith("-only") or n in ("static-equal", "static-rrf")]
    for key in ("acted_recall", "candidate_recall"):
        if not statics:
            break
        best = max(statics, key=lambda n: float(np.mean([s[key] for s in pol[n]])))
        diff, half = _paired([s[key] for s in pol[DEFAULT]], [s[key] for s in pol[best]])
        fetched = float(np.mean([s["fetched"] for s in pol[DEFAULT]]))
        best_fetched = float(np.mean([s["fetched"] for s in pol[best]]))
        met = diff - half > 0 and fetched <= best_fetched if len(pol[DEFAULT]) > 1 else None
        out[key] = {"best_static": best, "difference": diff, "half_width": half, "fetched": fetched,
                    "best_static_fetched": best_fetched, "met": met}
    if PEER in pol:
        diff, half = _paired([s["cumulative_regret"] for s in pol[DEFAULT]],
                             [s["cumulative_regret"] for s in pol[PEER]])
        out["regret_vs_peer"] = {"difference": diff, "half_width": half, "met": diff <= 0}
    return out


def _met(met: bool | None) -> str:
    return "no verdict (one seed gives no interval)" if met is None else "MET" if met else "NOT MET"


def verdict_markdown(v: Mapping[str, Any]) -> str:
    lines = []
    for key, label in (("acted_recall", "candidate recall (acted-on entity)"),
                       ("candidate_recall", "target recall")):
        if key in v:
            c = v[key]
            lines.append(f"- {label}: {DEFAULT} - {c['best_static']} (the best static plan run) = "
                         f"{c['difference']:+.4f} ± {c['half_width']:.4f}, fetching {c['fetched']:.1f} vs "
                         f"{c['best_static_fetched']:.1f} candidates: {_met(c['met'])}")
    if "regret_vs_peer" in v:
        c = v["regret_vs_peer"]
        lines.append(f"- cumulative regret: {DEFAULT} - {PEER} = {c['difference']:+.1f} ± {c['half_width']:.1f}: "
                     f"{'MET' if c['met'] else 'NOT MET'} (no worse than Vowpal Wabbit)")
    return "Acceptance (paired over seeds, mean ± 95% CI of the per-seed difference):\n" + "\n".join(lines)


def report(result: dict[str, Any]) -> str:
    from core.simulator.users import Intent

    pol = result["policies"]
    main = markdown([[name, *(fmt([s[k] for s in runs]) for k, _ in COLUMNS)] for name, runs in pol.items()],
                    ["policy", *(label for _, label in COLUMNS)])
    intents = [i.name.lower() for i in Intent]
    by_intent = markdown([[name, *(fmt([s["acted_by_intent"][i] for s in runs]) for i in intents),
                           *(fmt([s["by_intent"][i] for s in runs]) for i in intents)] for name, runs in pol.items()],
                         ["policy", *(f"{i} (acted)" for i in intents), *(f"{i} (target)" for i in intents)])
    n_runs = sum(len(r) for r in pol.values())
    r = result["run"]
    mode = result.get("mode", "inprocess")
    timing = ""
    if mode == "grpc":
        from benchmarks.experiment_grpc import timing_table

        timing = timing_table(pol) + "\n\n"
    extra = ""
    if result.get("verdict"):
        extra += verdict_markdown(result["verdict"]) + "\n\n"
    if "offpolicy" in result:
        from benchmarks.experiment_ope import offpolicy_markdown

        extra += offpolicy_markdown(result["offpolicy"]) + "\n\n"
    return (f"{result['searches']:,} searches x {result['seeds']} seeds per policy, budget 200 candidates, "
            f"{result['encoder']} encoder, {mode}; mean ± 95% CI over seeds\n\n{main}\n\n"
            f"Candidate recall per intent:\n\n{by_intent}\n\n{timing}{extra}"
            f"{n_runs * result['searches'] / result['seconds']:,.0f} searches/s {mode}, start-up included, "
            f"{result.get('jobs', 1)} process(es) of {r['threads']} thread (commit {r['commit']}, {r['machine']})")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("inprocess", "grpc"), default="inprocess",
                        help="in process on the core objects, or through a real cluster over gRPC")
    parser.add_argument("--searches", type=int, default=None,
                        help="searches per policy and seed (default 20000; grpc: 300)")
    parser.add_argument("--seeds", type=int, default=None, help="default 3; grpc: 1")
    parser.add_argument("--out", type=Path, default=Path("experiment-results"),
                        help="where results.json, results.md and the plots go (default: %(default)s)")
    parser.add_argument("--ope-searches", type=int, default=None,
                        help="searches of the off-policy check (default 20000; 0 skips it; grpc: 0)")
    add_index_options(parser)
    parser.add_argument("--policies", type=lambda s: [p for p in s.split(",") if p], default=[])
    parser.add_argument("--jobs", type=int, default=None,
                        help="processes running plans and seeds in parallel, in process (default: the CPUs; grpc: 1)")
    args = parser.parse_args(argv)
    grpc = args.mode == "grpc"
    args.searches = (300 if grpc else 20_000) if args.searches is None else args.searches
    args.seeds = (1 if grpc else 3) if args.seeds is None else args.seeds
    args.policies = args.policies or (["thompson", "static-equal"] if grpc else [])
    args.ope_searches = (0 if grpc else 20_000) if args.ope_searches is None else args.ope_searches
    args.jobs = (1 if grpc else os.cpu_count() or 1) if args.jobs is None else args.jobs
    if args.searches < 1 or args.seeds < 1 or args.jobs < 1:
        parser.error("--searches, --seeds and --jobs must be >= 1")
    if grpc and args.jobs != 1:
        parser.error("--mode grpc runs one cluster at a time: --jobs must be 1")
    if args.ope_searches not in range(2, 10**9) and args.ope_searches != 0:
        parser.error("--ope-searches must be 0 (skip) or >= 2")
    pin_threads()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    result, runs = run(args, out)
    if args.mode == "inprocess" and DEFAULT in runs:
        from benchmarks.experiment_plots import write_plots

        result["plots"] = [str(p.relative_to(out)) for p in write_plots(runs, out)]
    text = report(result)
    if result.get("plots"):
        text += "\n\nPlots: " + ", ".join(f"[{p}]({p})" for p in result["plots"])
    print(text)
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "results.md").write_text(text + "\n")
    plots = f" and {len(result['plots'])} plots" if result.get("plots") else ""
    print(f"wrote {out / 'results.json'}, {out / 'results.md'}{plots} to {out}")


if __name__ == "__main__":
    main()
