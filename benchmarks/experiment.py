"""The LTR&R experiment (issue 6): every retrieval plan over the same simulated searches, in process or over gRPC.

    python -m benchmarks.experiment [--mode inprocess|grpc] [--searches N] [--seeds K] [--out DIR]
                                    [--encoder hashing|minilm] [--index DIR] [--policies a,b,...]

For each seed, core.simulator.runner.run_experiment replays one stream of N simulated searches
(core.simulator.users: spearfishing, topical, attribute and context intents over the bundled
catalog) through every plan of core.simulator.policies at one budget of 200 candidates, and the
position-based click model (core.simulator.clicks) acts on each ranked list. The table gives, per
plan, the mean over seeds with a 95% Student-t confidence interval over seeds:

- recall: candidate recall, the share of searches whose target is among the candidates;
- MRR@10, nDCG@10: of the target (grade 2) and the rest of the relevant set (grade 1) after ranking;
- fetched: candidates the strategies returned, per search; strategies: strategies called;
- regret: cumulative regret against the oracle over the N searches (core.simulator.runner).

A second table gives candidate recall per intent. The index is built once with the chosen encoder
(hashing by default: no model needed; MiniLM embeddings are cached in ~/.cache/ltrr/embeddings)
under DIR/index-<encoder>, or taken from --index. With --out, results.json and results.md are
written to DIR. Plots, Vowpal Wabbit and the off-policy check are not here yet.

--mode grpc runs the same searches, clicks and measures through a real cluster (shard and broker
processes on loopback; benchmarks/experiment_grpc.py), by default a short run: 300 searches, one
seed, thompson and static-equal. Latency there is measured, not simulated (regret still uses the
simulated latency model, so it means the same in both modes); a third table gives the Search round
trip and searches/s.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import pin_threads, run_info

STRATEGIES = ("lexical", "semantic", "attribute", "memory")
COLUMNS = (("candidate_recall", "recall"), ("mrr@10", "MRR@10"), ("ndcg@10", "nDCG@10"), ("fetched", "fetched"),
           ("strategies_called", "strategies"), ("cumulative_regret", "regret"))


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


def run(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from core.catalog import demo_catalog_path, load_catalog
    from core.simulator.metrics import Records
    from core.simulator.policies import standard_policies
    from core.simulator.runner import ExperimentConfig, run_experiment
    from core.simulator.users import Intent

    info = run_info()  # before the run: the commit whose code is loaded
    root = build_or_open(args.index, out, args.encoder)
    entities = load_catalog(demo_catalog_path())
    summaries: dict[str, list[dict[str, Any]]] = {}
    seconds = 0.0
    for seed in range(args.seeds):
        config = ExperimentConfig(searches=args.searches, seed=seed)
        specs = [s for s in standard_policies(STRATEGIES, config.levels, config.budget)
                 if not args.policies or s.name in args.policies]
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as work:
            if args.mode == "grpc":
                from benchmarks.experiment_grpc import run_grpc

                records: Mapping[str, Records] = run_grpc(entities, root, STRATEGIES, specs, config, work)
            else:
                records = run_experiment(entities, root, STRATEGIES, specs, config, work)
        seconds += time.perf_counter() - started
        print(f"seed {seed}: {len(specs)} plans x {args.searches} searches in {time.perf_counter() - started:.0f} s",
              flush=True)
        for name, rec in records.items():
            summary: dict[str, Any] = rec.summary()
            summary["by_intent"] = {i.name.lower(): rec.summary(rec.intent == i)["candidate_recall"] for i in Intent}
            summaries.setdefault(name, []).append(summary)
    return {"run": info, "searches": args.searches, "seeds": args.seeds, "encoder": args.encoder,
            "seconds": seconds, "policies": summaries, "mode": args.mode}


def report(result: dict[str, Any]) -> str:
    from core.simulator.users import Intent

    pol = result["policies"]
    main = markdown([[name, *(fmt([s[k] for s in runs]) for k, _ in COLUMNS)] for name, runs in pol.items()],
                    ["policy", *(label for _, label in COLUMNS)])
    intents = [i.name.lower() for i in Intent]
    by_intent = markdown([[name, *(fmt([s["by_intent"][i] for s in runs]) for i in intents)]
                          for name, runs in pol.items()], ["candidate recall", *intents])
    n_runs = sum(len(r) for r in pol.values())
    r = result["run"]
    mode = result.get("mode", "inprocess")
    timing = ""
    if mode == "grpc":
        from benchmarks.experiment_grpc import timing_table

        timing = timing_table(pol) + "\n\n"
    return (f"{result['searches']:,} searches x {result['seeds']} seeds per policy, budget 200 candidates, "
            f"{result['encoder']} encoder, {mode}; mean ± 95% CI over seeds\n\n{main}\n\n{by_intent}\n\n{timing}"
            f"{n_runs * result['searches'] / result['seconds']:,.0f} searches/s {mode}, start-up included "
            f"(commit {r['commit']}, {r['machine']}, {r['threads']} thread)")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("inprocess", "grpc"), default="inprocess",
                        help="in process on the core objects, or through a real cluster over gRPC")
    parser.add_argument("--searches", type=int, default=None,
                        help="searches per policy and seed (default 20000; grpc: 300)")
    parser.add_argument("--seeds", type=int, default=None, help="default 3; grpc: 1")
    parser.add_argument("--out", type=Path, default=None, help="write results.json and results.md here")
    parser.add_argument("--index", type=Path, default=None, help="an index directory with the four strategies")
    parser.add_argument("--encoder", choices=("hashing", "minilm"), default="hashing")
    parser.add_argument("--policies", type=lambda s: [p for p in s.split(",") if p], default=[])
    args = parser.parse_args(argv)
    grpc = args.mode == "grpc"
    args.searches = (300 if grpc else 20_000) if args.searches is None else args.searches
    args.seeds = (1 if grpc else 3) if args.seeds is None else args.seeds
    args.policies = args.policies or (["thompson", "static-equal"] if grpc else [])
    if args.searches < 1 or args.seeds < 1:
        parser.error("--searches and --seeds must be >= 1")
    pin_threads()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        result = run(args, out)
        text = report(result)
        print(text)
        if args.out is not None:
            (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
            (out / "results.md").write_text(text + "\n")
            print(f"wrote {out / 'results.json'} and {out / 'results.md'}")


if __name__ == "__main__":
    main()
