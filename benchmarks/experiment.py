"""The LTR&R experiment (issue 6): every retrieval plan over the same simulated searches, in process or over gRPC.

    python -m benchmarks.experiment [--mode inprocess|grpc] [--searches N] [--seeds K] [--out DIR]
                                    [--encoder hashing|minilm] [--index DIR] [--policies a,b,...]
                                    [--ope-searches M] [--jobs J] [--playlist-noise P] [--genre-noise G]
                                    [--budget N]

For each seed, core.simulator.runner replays one stream of N simulated searches
(core.simulator.users: spearfishing, topical, attribute and context intents over the bundled
catalog) through every plan of core.simulator.policies, plus Vowpal Wabbit SquareCB
(benchmarks.vw_peer), at one budget (--budget, default 200 candidates; quota levels 0, N/4, N/2, N:
core.simulator.runner.experiment_levels), and the simulated listener
(core.simulator.listening) plays, skips or searches again on each ranked list. The table gives,
per plan, the mean over seeds with a 95% Student-t confidence interval over seeds:

- target recall, the primary measure: the share of searches whose target (the track the user
  wanted) is among the candidates;
- candidate recall: the share of searches with a satisfying event (core.reward) whose satisfying
  entity is among the candidates (a user may settle for another relevant track);
- MRR@10, nDCG@10: through ir-measures, of the target (grade 2) and the rest of the relevant set
  (grade 1) after ranking (core.simulator.metrics);
- fetched: candidates the strategies returned, per search; strategies: strategies called;
- regret: cumulative regret against the oracle over the N searches (core.simulator.runner).

Then: both recalls per intent; the acceptance comparisons, paired over seeds (every plan of a
seed sees the same searches and click draws; benchmarks.experiment_verdict); the share of the gap
between the best static plan and the oracle each plan closes; the headroom any plan has, from the
equal split's level tables (benchmarks.headroom: the best fixed split and the best split per
intent with hindsight, each query routed by its other searches, the oracle; `headroom` in
results.json, one record per seed); and the off-policy check (benchmarks.experiment_ope,
--ope-searches, 0 skips it). The index is built once with the chosen
encoder (MiniLM by default, the semantic strategy that serves; its embeddings are cached in
~/.cache/ltrr/embeddings, so a rebuild encodes nothing; --encoder hashing needs no model) under
DIR/index-<encoder>-<noise>, or taken from --index. It is built from imperfect metadata
(core.simulator.metadata: --playlist-noise of playlist memberships and --genre-noise of genre tags
missing or wrong, 0 disables) while the users search by the true catalog; results.json's run info
records the settings and the realized shares. results.json (below), results.md and the PNG plots
(benchmarks.experiment_plots: target recall over time, cumulative regret, the oracle-gap bar, the
default policy's quota mix per intent) go to DIR.

results.json: {"default_policy": the learned default (core.policy.policies.DEFAULT_KIND), "run":
commit, machine, threads, metadata noise, "settings": the experiment's and the simulator's configuration,
"policies": {plan: [one record per seed: "seed", "target_recall", "candidate_recall", "mrr@10",
"ndcg@10", "fetched", "strategies_called", "cumulative_regret", ..., "by_intent": {intent: the
same measures}]}, "verdict", "oracle_gap", "offpolicy", "plots"}.
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
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.common import pin_threads, run_info
from benchmarks.experiment_verdict import PEER, interval, oracle_gap, oracle_gap_markdown, verdict, verdict_markdown
from core.policy.policies import DEFAULT_KIND

if TYPE_CHECKING:
    from core.simulator.metadata import MetadataNoise

STRATEGIES = ("lexical", "semantic", "attribute", "memory")
DEFAULT = DEFAULT_KIND.value  # the broker's default policy, the one the acceptance is about
# The semantic strategy that serves; hashing is the model-free stand-in for unit tests.
DEFAULT_ENCODER = "minilm"
EQUAL = "static-equal"  # its level tables price every allocation on the same searches (`headroom`)
COLUMNS = (("target_recall", "target recall"), ("candidate_recall", "candidate recall"), ("mrr@10", "MRR@10"),
           ("ndcg@10", "nDCG@10"), ("fetched", "fetched"),
           ("strategies_called", "strategies"), ("cumulative_regret", "regret"))
INTENT_COLUMNS = (("target_recall", "target"), ("candidate_recall", "candidate"))


def add_index_options(parser: argparse.ArgumentParser) -> None:
    """--index, --encoder and the metadata noise (core.simulator.metadata), what build_or_open takes."""
    from core.simulator.metadata import DEFAULT_GENRE_NOISE, DEFAULT_PLAYLIST_NOISE

    parser.add_argument("--index", type=Path, default=None,
                        help="an index directory with the four strategies, built with the noise flags' settings")
    parser.add_argument("--encoder", choices=("hashing", "minilm"), default=DEFAULT_ENCODER,
                        help="the semantic strategy's encoder when building the index (default: %(default)s)")
    parser.add_argument("--playlist-noise", type=float, default=DEFAULT_PLAYLIST_NOISE,
                        help="share of playlist memberships the index lacks or has wrong (0 disables; "
                             "default %(default)s)")
    parser.add_argument("--genre-noise", type=float, default=DEFAULT_GENRE_NOISE,
                        help="share of genre and subgenre tags the index lacks or has wrong (0 disables; "
                             "default %(default)s)")


def metadata_noise(args: argparse.Namespace) -> MetadataNoise:
    """The MetadataNoise of --playlist-noise and --genre-noise (ValueError when out of range)."""
    from core.simulator.metadata import MetadataNoise

    return MetadataNoise(playlist=args.playlist_noise, genre=args.genre_noise)


def build_or_open(index: Path | None, out: Path, encoder: str, noise: MetadataNoise) -> Path:
    """The index the strategies serve: `index`, or DIR/index-<encoder>-<noise slug> built from the
    demo catalog with `noise` unless already there (the name encodes the noise, so an index built
    with other settings is never reused); the embeddings come from and go to the embedding cache
    (its path is printed)."""
    from core.catalog import demo_catalog_path, load_catalog
    from core.indexing import build_index
    from core.semantic.cache import DEFAULT_CACHE_DIR
    from core.simulator.metadata import noisy_catalog

    if index is not None:
        return index
    root = out / f"index-{encoder}-{noise.slug()}"
    if not (root / "memory").exists():
        print(f"building {root} ({encoder} encoder, metadata noise {noise.slug()}, embeddings cached in "
              f"{DEFAULT_CACHE_DIR})...", flush=True)
        started = time.perf_counter()
        build_index(noisy_catalog(load_catalog(demo_catalog_path()), noise), root, STRATEGIES,
                    {"lexical": {"fields": "title^2,artist^1.5,album^0.5", "progress": False},
                     "semantic": {"encoder": encoder, "progress": False, "cache": str(DEFAULT_CACHE_DIR)}})
        print(f"built {root} in {time.perf_counter() - started:.0f} s", flush=True)
    return root


def fmt(values: Sequence[float]) -> str:
    mean, half = interval(values)
    digits = 1 if abs(mean) >= 10 else 3
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


def markdown(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def plans(args: argparse.Namespace, config: Any) -> list[Any]:
    """The plans of this run: core.simulator.policies.standard_policies plus, in process, Vowpal
    Wabbit SquareCB (benchmarks.vw_peer) when vowpalwabbit is installed; --policies filters them
    (and adds a diagnostic_policies plan it names)."""
    from core.simulator.policies import ORACLE, diagnostic_policies, standard_policies

    specs = standard_policies(STRATEGIES, config.levels, config.budget)
    specs += [s for s in diagnostic_policies() if s.name in args.policies]  # only when named
    if args.mode == "inprocess":
        try:
            from benchmarks.vw_peer import squarecb_spec
        except ImportError as e:  # vowpalwabbit is in the bench extra
            print(f"skipping {PEER}: {e} (pip install -e '.[bench]')", flush=True)
        else:
            specs.insert(next(i for i, s in enumerate(specs) if s.name == ORACLE), squarecb_spec(name=PEER))
    return [s for s in specs if not args.policies or s.name in args.policies]


_WORKER: dict[str, Any] = {}  # per process: the catalog, strategies and searches its tasks share


def _worker_state(root: Path, levels: Sequence[int]) -> tuple[Any, Any, Any]:
    """(entities, EntityTable, the shared strategies) of this process, loaded once: the plans a
    process runs share the strategies' answer caches (core.simulator.runner.shared_strategies)."""
    from core.catalog import demo_catalog_path, load_catalog
    from core.ranking import EntityTable
    from core.simulator.runner import shared_strategies

    if _WORKER.get("root") != root:
        entities = load_catalog(demo_catalog_path())
        _WORKER.clear()
        _WORKER.update(root=root, entities=entities, table=EntityTable.from_entities(entities),
                       shared=shared_strategies(root, STRATEGIES, levels), searches={})
    return _WORKER["entities"], _WORKER["table"], _WORKER["shared"]


def experiment_config(args: argparse.Namespace, seed: int, searches: int | None = None) -> Any:
    """The ExperimentConfig of `seed`: --searches (or `searches`), --budget and its quota levels."""
    from core.simulator.runner import ExperimentConfig, experiment_levels

    return ExperimentConfig(searches=args.searches if searches is None else searches, seed=seed,
                            levels=experiment_levels(args.budget), budget=args.budget)


def seed_range(args: argparse.Namespace) -> range:
    """The seeds of the run: --seeds of them from --first-seed."""
    return range(args.first_seed, args.first_seed + args.seeds)


def run_plan(args: argparse.Namespace, root: Path, seed: int, name: str) -> tuple[Any, float, dict[str, Any] | None]:
    """One plan over the searches of one seed, in process: its Records, the seconds it took and,
    for the equal split, the hindsight bounds of its level tables (`headroom`; None for other
    plans). A task of its own, so that plans and seeds can run in parallel processes (--jobs)."""
    from core.simulator.runner import run_policy, simulated_searches

    started = time.perf_counter()
    config = experiment_config(args, seed)
    entities, table, shared = _worker_state(root, config.levels)
    if seed not in _WORKER["searches"]:
        _WORKER["searches"][seed] = simulated_searches(entities, config)
    users, searches = _WORKER["searches"][seed]
    spec = next(s for s in plans(args, config) if s.name == name)
    hits: list[Any] = []  # the equal split's level tables, one (S, L) array per search
    observer = (lambda t, sim, record, h, returned: hits.append(h)) if name == EQUAL else None
    with tempfile.TemporaryDirectory() as work:
        rec = run_policy(spec, config, root, STRATEGIES, searches, users, table, memory_state=Path(work) / "memory",
                         shared=shared, observer=observer)
    room = headroom(rec, hits, [s.text for s in searches], config.levels, config.budget) if hits else None
    return rec, time.perf_counter() - started, room


def headroom(rec: Any, hits: Sequence[Any], texts: Sequence[str], levels: Sequence[int], budget: int
             ) -> dict[str, Any]:
    """What any plan could have found on the searches of `rec` (benchmarks.headroom, all with
    hindsight but per_query): the best fixed split, the best split per intent, routing each query
    (keyed like the memory strategy, core.analysis.text_key) by its other searches (leave-one-out)
    and the oracle, as target recall. hits: each search's level tables; texts: its query."""
    import numpy as np

    from benchmarks import headroom as hr
    from core.analysis import text_key
    from core.policy.allocation import AllocationSpace

    space = AllocationSpace(strategies=STRATEGIES, levels=tuple(levels), budget=budget)
    table = hr.allocation_table(np.array(hits), space)
    quotas, fixed = hr.best_fixed(table, space)
    return {"best_fixed_quotas": list(quotas), "best_fixed": fixed,
            "per_intent": hr.best_per_group(table, rec.intent, space),
            "per_query": hr.leave_one_out(table, [text_key(t) for t in texts], space),
            "oracle": float(table.any(axis=1).mean())}


def _offpolicy(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    from benchmarks.experiment_ope import offpolicy_check

    config = experiment_config(args, 0, args.ope_searches)
    entities, _, _ = _worker_state(root, config.levels)
    with tempfile.TemporaryDirectory() as work:
        return offpolicy_check(entities, root, STRATEGIES, config, work, levels=config.levels)


def _run_inprocess(args: argparse.Namespace, root: Path, specs: Sequence[Any]
                   ) -> tuple[dict[tuple[int, str], Any], dict[int, dict[str, Any]], dict[str, Any] | None]:
    """Every (seed, plan) task and the off-policy check, on args.jobs processes (in this one for
    --jobs 1); the learned plans, the slowest, are started first. Returns the Records per (seed,
    plan), the equal split's headroom per seed (when it ran) and the off-policy check."""
    import concurrent.futures
    import contextlib
    import functools
    import multiprocessing
    from collections.abc import Callable, Iterator

    from tqdm import tqdm

    order = sorted(specs, key=lambda s: not s.learns)
    tasks = [(seed, spec.name) for spec in order for seed in seed_range(args)]
    offpolicy: Callable[[], dict[str, Any]] | None = None
    with contextlib.ExitStack() as stack:
        done: Iterator[tuple[tuple[int, str], tuple[Any, float, dict[str, Any] | None]]]
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
        rooms: dict[int, dict[str, Any]] = {}
        with tqdm(total=len(tasks), desc="plans x seeds", unit="run", disable=None) as bar:
            for (seed, name), (rec, took, room) in done:
                records[seed, name] = rec
                if room is not None:
                    rooms[seed] = room
                bar.write(f"seed {seed} {name}: {args.searches} searches in {took:.0f} s")
                bar.update()
        return records, rooms, offpolicy() if offpolicy is not None else None


def run(args: argparse.Namespace, out: Path) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """The JSON-able result and the per-search Records of every plan, one per seed."""
    from core.catalog import demo_catalog_path, load_catalog
    from core.simulator.metadata import describe, noisy_catalog
    from core.simulator.metrics import Records

    info = run_info()  # before the run: the commit whose code is loaded
    noise = metadata_noise(args)
    root = build_or_open(args.index, out, args.encoder, noise)
    # the world is built from the true catalog (_worker_state), the index from the noisy one
    truth = load_catalog(demo_catalog_path())
    noisy = noisy_catalog(truth, noise)
    info["metadata_noise"] = {**noise.to_json(), "realized": describe(truth, noisy)}
    specs = plans(args, experiment_config(args, 0))
    names = [s.name for s in specs]
    started = time.perf_counter()
    offpolicy = None
    rooms: dict[int, dict[str, Any]] = {}
    if args.mode == "grpc":
        from benchmarks.experiment_grpc import run_grpc

        records: dict[tuple[int, str], Records] = {}
        for seed in seed_range(args):
            config = experiment_config(args, seed)
            with tempfile.TemporaryDirectory() as work:
                for name, grpc_rec in run_grpc(truth, root, STRATEGIES, plans(args, config), config, work,
                                               index_entities=noisy).items():
                    records[seed, name] = grpc_rec
    else:
        records, rooms, offpolicy = _run_inprocess(args, root, specs)
    seconds = time.perf_counter() - started
    runs = {name: [records[seed, name] for seed in seed_range(args)] for name in names}
    result: dict[str, Any] = {"default_policy": DEFAULT, "run": info, "settings": settings(args, root),
                              "searches": args.searches, "seeds": args.seeds, "first_seed": args.first_seed,
                              "budget": args.budget,
                              "encoder": args.encoder,
                              "seconds": seconds, "jobs": args.jobs, "mode": args.mode,
                              "policies": {name: [seed_record(seed, rec)
                                                  for seed, rec in zip(seed_range(args), recs, strict=True)]
                                           for name, recs in runs.items()}}
    result["verdict"] = verdict(result["policies"], DEFAULT)
    result["oracle_gap"] = oracle_gap(result["policies"])
    if rooms:
        result["headroom"] = [rooms[seed] for seed in seed_range(args)]
    if offpolicy is not None:
        result["offpolicy"] = offpolicy
    return result, runs


def seed_record(seed: int, rec: Any) -> dict[str, Any]:
    """results.json's record of one plan and seed: Records.summary, the seed, and the same
    measures per intent (core.simulator.users.Intent, lower-case names)."""
    from core.simulator.users import Intent

    return {"seed": seed, **rec.summary(),
            "by_intent": {i.name.lower(): rec.summary(rec.intent == i) for i in Intent}}


def settings(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """What the run was configured with: the command's options, the index, and every setting of
    the experiment (core.simulator.runner.ExperimentConfig, seed aside) and the simulated users
    (core.simulator.users.SimulatorConfig, seed aside), as JSON values."""
    import dataclasses

    from core.simulator.users import SimulatorConfig

    def plain(config: Any) -> dict[str, Any]:
        out = json.loads(json.dumps(dataclasses.asdict(config), default=str))
        out.pop("seed", None)
        return dict(out)

    return {"options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "index": str(root), "experiment": plain(experiment_config(args, 0)),
            "simulator": plain(SimulatorConfig())}


def report(result: dict[str, Any]) -> str:
    from core.simulator.runner import EXPERIMENT_BUDGET
    from core.simulator.users import Intent

    pol = result["policies"]
    main = markdown([[name, *(fmt([s[k] for s in runs]) for k, _ in COLUMNS)] for name, runs in pol.items()],
                    ["policy", *(label for _, label in COLUMNS)])
    intents = [i.name.lower() for i in Intent]
    by_intent = markdown([[name, *(fmt([s["by_intent"][i][k] for s in runs]) for k, _ in INTENT_COLUMNS
                                   for i in intents)] for name, runs in pol.items()],
                         ["policy", *(f"{i} ({label})" for _, label in INTENT_COLUMNS for i in intents)])
    n_runs = sum(len(r) for r in pol.values())
    r = result["run"]
    mode = result.get("mode", "inprocess")
    timing = ""
    if mode == "grpc":
        from benchmarks.experiment_grpc import timing_table

        timing = timing_table(pol) + "\n\n"
    extra = ""
    if result.get("verdict"):
        extra += verdict_markdown(result["verdict"], result.get("default_policy", DEFAULT)) + "\n\n"
    if result.get("oracle_gap"):
        extra += oracle_gap_markdown(result["oracle_gap"]) + "\n\n"
    if result.get("headroom"):
        extra += headroom_markdown(result["headroom"]) + "\n\n"
    if "offpolicy" in result:
        from benchmarks.experiment_ope import offpolicy_markdown

        extra += offpolicy_markdown(result["offpolicy"]) + "\n\n"
    budget = result.get("budget", EXPERIMENT_BUDGET)
    return (f"{result['searches']:,} searches x {result['seeds']} seeds per policy, budget {budget} candidates, "
            f"{result['encoder']} encoder, {mode}; mean ± 95% CI over seeds\n\n{main}\n\n"
            f"Target and candidate recall per intent:\n\n{by_intent}\n\n{timing}{extra}"
            f"{n_runs * result['searches'] / result['seconds']:,.0f} searches/s {mode}, start-up included, "
            f"{result.get('jobs', 1)} process(es) of {r['threads']} thread (commit {r['commit']}, {r['machine']})")


def headroom_markdown(rooms: Sequence[dict[str, Any]]) -> str:
    """results.md's paragraph on `headroom` (one record per seed)."""
    def per_seed(key: str) -> str:
        return ", ".join(f"{r[key]:.3f}" for r in rooms)

    splits = ", ".join(str(tuple(r["best_fixed_quotas"])) for r in rooms)
    return (f"Headroom on {EQUAL}'s level tables (every allocation priced on the same searches; target "
            f"recall per seed, benchmarks.headroom): the best fixed split with hindsight [{per_seed('best_fixed')}] "
            f"({splits}); the best split per intent with hindsight [{per_seed('per_intent')}]; each query routed "
            f"by its other searches (leave-one-out) [{per_seed('per_query')}]; the oracle [{per_seed('oracle')}].")


def main(argv: Sequence[str] | None = None) -> None:
    from core.simulator.runner import EXPERIMENT_BUDGET, experiment_levels

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("inprocess", "grpc"), default="inprocess",
                        help="in process on the core objects, or through a real cluster over gRPC")
    parser.add_argument("--searches", type=int, default=None,
                        help="searches per policy and seed (default 20000; grpc: 300)")
    parser.add_argument("--seeds", type=int, default=None, help="default 3; grpc: 1")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds run from this one (default 0, the reported seeds; develop on others, "
                             "e.g. 5, so that no choice is made by looking at the reported figures)")
    parser.add_argument("--out", type=Path, default=Path("experiment-results"),
                        help="where results.json, results.md and the plots go (default: %(default)s)")
    parser.add_argument("--ope-searches", type=int, default=None,
                        help="searches of the off-policy check (default 20000; 0 skips it; grpc: 0)")
    add_index_options(parser)
    parser.add_argument("--budget", type=int, default=EXPERIMENT_BUDGET,
                        help="candidates per search for all strategies together; quota levels 0, N/4, N/2, N "
                             "(default %(default)s)")
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
    if args.searches < 1 or args.seeds < 1 or args.jobs < 1 or args.first_seed < 0:
        parser.error("--searches, --seeds and --jobs must be >= 1, --first-seed >= 0")
    if grpc and args.jobs != 1:
        parser.error("--mode grpc runs one cluster at a time: --jobs must be 1")
    if args.ope_searches not in range(2, 10**9) and args.ope_searches != 0:
        parser.error("--ope-searches must be 0 (skip) or >= 2")
    try:
        metadata_noise(args)
        experiment_levels(args.budget)
    except ValueError as e:
        parser.error(f"--playlist-noise, --genre-noise, --budget: {e}")
    pin_threads()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    result, runs = run(args, out)
    if args.mode == "inprocess" and DEFAULT in runs:
        from benchmarks.experiment_plots import write_plots

        result["plots"] = [str(p.relative_to(out)) for p in write_plots(runs, out, DEFAULT)]
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
