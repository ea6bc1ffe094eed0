"""The experiment learns through change (issue 15): new releases during a simulated run.

    python -m benchmarks.releases [--searches N] [--releases R] [--first-at T] [--every E]
                                  [--share P] [--seeds K] [--first-seed S] [--policies a,b,...]
                                  [--encoder hashing|minilm] [--out DIR] [--json FILE]

core.simulator.releases holds back R real tracks of the bundled demo catalog (seeded by
--release-seed, default 0), builds the four-strategy index without them (once, under
DIR/index-releases-<encoder>-<R>-<release seed>; MiniLM by default, its embeddings come from the
cache ~/.cache/ltrr/embeddings; the index is built from the true metadata, no metadata noise),
and writes them into every strategy through the live core path during each run: release i at
search T + i * E. From its release on a track is a target of the ordinary user model and, as
release-day demand, a share P of the searches are known-item searches for the releases, the newest
weighted most (exp(-age / 300 searches)). Every plan of a seed (core.simulator.policies: the four
single-strategy plans, static-equal, static-rrf, the learned policies, the oracle) replays the same
searches and the same releases at the same search counts, in this process, one plan after the
other (a tqdm bar counts searches); answers are shared between plans per catalog version.

Defaults: 3,000 searches, 20 releases from search 400 every 100 (the last at 2,300), share 0.2,
one seed. Printed (core.simulator.release_metrics), per plan, mean over seeds: the
release-targeting searches (and all searches) after a release until the first that retrieves it,
mean and median over releases, and how many were never retrieved; the hit rate (target recall) on
release-targeting searches per age window and on the other known-item searches (the comparable
baseline), and the same for the target in the final top 10 (what the user sees); per window, each strategy's
mean quota on release-targeting searches (the bandit's allocation) and the share each strategy
alone would retrieve at 200 (memory's column shows it learning the new ids); the memory
strategy's learned pairs on released ids over time. --json FILE writes all of it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import pin_threads, run_info, write_json
from benchmarks.experiment import markdown

STRATEGIES = ("lexical", "semantic", "attribute", "memory")
DEFAULT_SEARCHES = 3000
DEFAULT_ENCODER = "minilm"
LEARNED = ("epsilon-greedy", "linucb", "thompson")


def build_base(releases: Any, out: Path, encoder: str, release_seed: int) -> Path:
    """The index of releases.base under `out` (built unless there)."""
    from core.indexing import build_index
    from core.semantic.cache import DEFAULT_CACHE_DIR

    root = out / f"index-releases-{encoder}-{len(releases.released)}-{release_seed}"
    if not (root / "memory").exists():
        print(f"building {root} ({encoder} encoder, embeddings cached in {DEFAULT_CACHE_DIR})...", flush=True)
        started = time.perf_counter()
        build_index(list(releases.base), root, STRATEGIES,
                    {"lexical": {"fields": "title^2,artist^1.5,album^0.5", "progress": False},
                     "semantic": {"encoder": encoder, "progress": False, "cache": str(DEFAULT_CACHE_DIR)}})
        print(f"built {root} in {time.perf_counter() - started:.0f} s", flush=True)
    return root


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every plan over every seed; the JSON-able result."""
    from tqdm import tqdm

    from core.catalog import demo_catalog_path, load_catalog
    from core.simulator.policies import standard_policies
    from core.simulator.release_metrics import ReleaseTracker, release_measures
    from core.simulator.releases import AnswerCaches, ReleaseConfig, hold_back, release_searches, run_with_releases
    from core.simulator.runner import ExperimentConfig
    from core.simulator.users import SimulatorConfig

    info = run_info()
    rconfig = ReleaseConfig(releases=args.releases, first_at=args.first_at, every=args.every, share=args.share,
                            seed=args.release_seed)
    releases = hold_back(load_catalog(demo_catalog_path()), rconfig)
    root = build_base(releases, args.out, args.encoder, args.release_seed)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    specs = [s for s in standard_policies(STRATEGIES, ExperimentConfig().levels, ExperimentConfig().budget)
             if not args.policies or s.name in args.policies]
    measures: dict[str, list[Any]] = {s.name: [] for s in specs}
    started = time.perf_counter()
    with tqdm(total=len(seeds) * len(specs) * args.searches, desc="searches", unit="search", disable=None,
              mininterval=2.0) as bar:
        for seed in seeds:
            config = ExperimentConfig(searches=args.searches, seed=seed)
            caches = AnswerCaches()
            users, searches = release_searches(releases, rconfig, SimulatorConfig(seed=seed), args.searches)
            for spec in specs:
                tracker = ReleaseTracker(releases, args.searches, len(STRATEGIES))

                def on_step(t: int, live: Any, tracker: Any = tracker) -> None:
                    tracker.step(t, live)
                    bar.update()

                with tempfile.TemporaryDirectory() as work:
                    rec = run_with_releases(spec, config, root, STRATEGIES, releases, searches, users,
                                            memory_state=Path(work) / "memory", caches=caches,
                                            observer=tracker.observe, on_step=on_step)
                measures[spec.name].append(release_measures(rec, searches, releases, tracker))
    seconds = time.perf_counter() - started
    return {"run": info, "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "schedule": list(releases.at), "released": [e.id for e in releases.released], "seconds": seconds,
            "policies": {name: [to_json(m) for m in ms] for name, ms in measures.items()}}


def to_json(m: Any) -> dict[str, Any]:
    """A ReleaseMeasures as JSON values."""
    def window(w: Any) -> dict[str, Any]:
        return {"lo": w.lo, "hi": w.hi, "searches": w.searches, "hit_rate": w.hit_rate, "top10": w.top10,
                "quota": dict(zip(STRATEGIES, w.quota.tolist(), strict=True)),
                "alone": dict(zip(STRATEGIES, w.alone.tolist(), strict=True))}

    return {"first_hit": m.first_hit(), "tries": m.tries.tolist(), "elapsed": m.elapsed.tolist(),
            "targeted": m.targeted.tolist(), "windows": [window(w) for w in m.windows], "other": window(m.other),
            "memory": [list(x) for x in m.memory]}


def mean(values: Sequence[float]) -> float:
    finite = [v for v in values if v == v]
    return float(np.mean(finite)) if finite else float("nan")


def span(w: dict[str, Any]) -> str:
    return f"{w['lo']}+" if w["hi"] is None else f"{w['lo']}-{w['hi'] - 1}"


def report(result: dict[str, Any]) -> str:
    pol = result["policies"]
    first = pol[next(iter(pol))][0]
    spans = [span(w) for w in first["windows"]]
    rows, shown = [], []
    for name, runs in pol.items():
        fh = [r["first_hit"] for r in runs]
        rows.append([name, *(f"{mean([f[k] for f in fh]):.1f}" for k in ("tries_mean", "tries_median",
                                                                            "elapsed_mean", "elapsed_median")),
                     f"{mean([f['never'] for f in fh]):.1f}/{len(runs[0]['tries'])}",
                     *(f"{mean([r['windows'][i]['hit_rate'] for r in runs]):.3f}" for i in range(len(spans))),
                     f"{mean([r['other']['hit_rate'] for r in runs]):.3f}"])
        shown.append([name, *(f"{mean([r['windows'][i]['top10'] for r in runs]):.3f}" for i in range(len(spans))),
                      f"{mean([r['other']['top10'] for r in runs]):.3f}"])
    main = markdown(rows, ["policy", "tries to 1st hit (mean)", "(median)", "searches to 1st hit (mean)",
                           "(median)", "never", *(f"hit age {s}" for s in spans), "hit other known-item"])
    main += "\n\nTarget in the final top 10:\n\n" + markdown(
        shown, ["policy", *(f"top10 age {s}" for s in spans), "top10 other known-item"])
    alloc = []
    for name, runs in pol.items():
        if name not in LEARNED and name != "static-equal":
            continue
        for i, s in enumerate([*spans, "other"]):
            ws = [r["windows"][i] if i < len(spans) else r["other"] for r in runs]
            alloc.append([name, s, f"{mean([w['searches'] for w in ws]):.0f}",
                          *(f"{mean([w['quota'][k] for w in ws]):.0f}" for k in STRATEGIES),
                          *(f"{mean([w['alone'][k] for w in ws]):.3f}" for k in STRATEGIES)])
    bandit = markdown(alloc, ["policy", "age (searches since release)", "searches", *(f"quota {k}" for k in STRATEGIES),
                              *(f"{k} alone" for k in STRATEGIES)])
    mem = []
    for name, runs in pol.items():
        samples = runs[0]["memory"]
        picks = [samples[i] for i in np.linspace(0, len(samples) - 1, min(6, len(samples))).astype(int)]
        mem.append([name, ", ".join(f"{t}: {pairs} pairs / {n} releases" for t, pairs, n in picks)])
    memory = markdown(mem, ["policy", "memory's learned pairs on released ids (search: pairs / releases), first seed"])
    s = result["settings"]
    r = result["run"]
    return (f"{s['searches']:,} searches x {s['seeds']} seed(s) per plan, {s['releases']} releases from search "
            f"{s['first_at']} every {s['every']}, release-day share {s['share']}, {s['encoder']} encoder; "
            f"mean over seeds\n\n{main}\n\nAllocation on release-targeting searches by age (and on the other "
            f"known-item searches), mean quota per strategy, and the share each strategy alone retrieves "
            f"at 200:\n\n{bandit}"
            f"\n\n{memory}\n\n{result['seconds']:.0f} s (commit {r['commit']}, {r['machine']}, {r['threads']} thread)")


def main(argv: Sequence[str] | None = None) -> None:
    from core.simulator.releases import DEFAULT_EVERY, DEFAULT_FIRST_AT, DEFAULT_RELEASES, DEFAULT_SHARE

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--searches", type=int, default=DEFAULT_SEARCHES, help="per plan and seed (%(default)s)")
    parser.add_argument("--releases", type=int, default=DEFAULT_RELEASES, help="held-back tracks (%(default)s)")
    parser.add_argument("--first-at", type=int, default=DEFAULT_FIRST_AT, help="search of the first release")
    parser.add_argument("--every", type=int, default=DEFAULT_EVERY, help="searches between releases")
    parser.add_argument("--share", type=float, default=DEFAULT_SHARE, help="release-day share of the searches")
    parser.add_argument("--release-seed", type=int, default=0, help="which tracks are held back")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--policies", type=lambda v: [p for p in v.split(",") if p], default=[])
    parser.add_argument("--encoder", choices=("hashing", "minilm"), default=DEFAULT_ENCODER)
    parser.add_argument("--out", type=Path, default=Path("experiment-results"), help="where the index goes")
    parser.add_argument("--json", type=Path, default=None, help="write the result here")
    args = parser.parse_args(argv)
    if args.searches < 1 or args.seeds < 1 or args.first_seed < 0:
        parser.error("--searches and --seeds must be >= 1, --first-seed >= 0")
    pin_threads()
    args.out.mkdir(parents=True, exist_ok=True)
    result = run(args)
    print(report(result))
    write_json(args.json, result)


if __name__ == "__main__":
    main()
