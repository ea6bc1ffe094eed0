"""Cold start (issue 13, deliverable 6): the learned policy with and without a warm start from the
decision log of the static plan it replaces.

    python -m benchmarks.experiment_warmstart [--searches N] [--log-searches M] [--seeds 0,1,2]
                                              [--window W] [--out DIR] [--encoder hashing|minilm] [--index DIR]

Per seed s:
1. The incumbent, the static equal split (every strategy at 50, the broker's blend ranker:
   core.simulator.policies' `static-equal`), serves M searches of another stream: the users and
   searches of seed s + LOG_SEED_OFFSET, so no search of the evaluation is in the log. It runs
   through core.pipeline like every plan, and every decision and feedback event goes into a real
   core.eventlog.EventLog, as the broker stores them (the decision before its events, the event
   with the reward judged for it).
2. The learned default (thompson) is warm-started from that file by core.warmstart, exactly as
   `ltrr broker --warm-start FILE` does: its hit and fill models and its query history.
3. The static plan, the cold policy (from its prior) and the warm one serve the same N searches of
   seed s with the same click draws (core.simulator.runner.run_policy's streams).
Each evaluation run starts with an empty memory strategy: the memory shard's state is not what is
compared, and the log run's clock would run backwards in the evaluation's.

Printed: target recall (the target among the candidates) per window of W searches for each plan,
mean and 95% Student-t interval over seeds, and the paired difference warm - cold. Written to DIR:
warmstart.json (per seed and window) and warmstart_curves.png (the curves with their bands).
Develop on seeds 5, 6, 7; seeds 0-2 are the reported ones.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import pin_threads, run_info
from core.eventlog import EventLog, EventRecord
from core.pipeline import Judged, SearchPipeline, Served
from core.types import EventType

STRATEGIES = ("lexical", "semantic", "attribute", "memory")
LOG_SEED_OFFSET = 1000  # the log stream's seed: seed + this, far from any seed an experiment uses
INCUMBENT = "static-equal"
LEARNED = "thompson"
PLANS = (INCUMBENT, "cold", "warm")
DEFAULT_SEARCHES = 20_000
DEFAULT_LOG_SEARCHES = 6_000  # NOTES.md session 4: the cold policy trails for about this many
DEFAULT_WINDOW = 2_000
LOG_BATCH = 256  # decisions and events are written to the log in transactions of this many


class LoggingPipeline(SearchPipeline):
    """A SearchPipeline that stores what it serves and judges in an EventLog, in batches: every
    decision, and every judged event with the reward judged for it (what the broker stores)."""

    def __init__(self, inner: SearchPipeline, log: EventLog) -> None:
        super().__init__(inner.allocator, inner.ranker, history=inner.history, policy_name=inner.policy_name)
        self.log = log
        self.decisions: list[Any] = []
        self.events: list[EventRecord] = []
        self.n_events = 0

    def serve(self, plan: Any, answers: Sequence[Any], *, decision_id: str, ts: float, k: int) -> Served:
        served = super().serve(plan, answers, decision_id=decision_id, ts=ts, k=k)
        self.decisions.append(served.record)
        if len(self.decisions) >= LOG_BATCH:
            self.flush()
        return served

    def judge(self, record: Any, entity_id: str, event_type: EventType, value: float = 0.0, *,
              earlier: Sequence[EventRecord] = ()) -> Judged:
        judged = super().judge(record, entity_id, event_type, value, earlier=earlier)
        self.n_events += 1
        self.events.append(EventRecord(event_id=f"{record.decision_id}:{self.n_events}", decision_id=record.decision_id,
                                       entity_id=entity_id, type=event_type, value=value, ts=record.ts,
                                       reward=judged.reward))
        return judged

    def flush(self) -> None:
        """Store the pending decisions, then their events (an event needs its decision stored)."""
        self.log.record_decisions(self.decisions)
        self.log.record_events(self.events)
        self.decisions, self.events = [], []


@dataclass
class World:
    """What every run of one process shares: the catalog, its EntityTable, the index root and the
    strategies whose answers never change (their caches fill once)."""

    entities: list[Any]
    table: Any
    root: Path
    shared: Any


def open_world(root: Path, entities: Sequence[Any] | None = None) -> World:
    """The World of the index at `root`, built from `entities` (default: the bundled catalog)."""
    from core.catalog import demo_catalog_path, load_catalog
    from core.ranking import EntityTable
    from core.simulator.runner import EXPERIMENT_LEVELS, shared_strategies

    entities = list(entities) if entities is not None else load_catalog(demo_catalog_path())
    return World(entities, EntityTable.from_entities(entities), root,
                 shared_strategies(root, STRATEGIES, EXPERIMENT_LEVELS))


def specs() -> dict[str, Any]:
    from core.simulator.policies import standard_policies
    from core.simulator.runner import EXPERIMENT_BUDGET, EXPERIMENT_LEVELS

    return {s.name: s for s in standard_policies(STRATEGIES, EXPERIMENT_LEVELS, EXPERIMENT_BUDGET)}


def run(world: World, spec: Any, config: Any, searches: Sequence[Any], users: Any, work: Path, *,
        log: EventLog | None = None, warm_from: Path | None = None) -> Any:
    """One plan over `searches` (core.simulator.runner.run_policy's loop): its pipeline logging to
    `log`, or warm-started from the log file `warm_from` before its first search. Records."""
    from core.simulator.metrics import Records
    from core.simulator.retrieval import InProcessStrategies
    from core.simulator.runner import SIM_EPOCH, PolicyRun
    from core.warmstart import warm_start_from_log

    box: list[PolicyRun] = []
    loaded = InProcessStrategies(world.root, STRATEGIES, max(config.levels), memory_state=work / "memory",
                                 clock=lambda: box[0].now if box else SIM_EPOCH, shared=world.shared)
    try:
        policy_run = PolicyRun(spec, config, loaded, users, world.table)
        box.append(policy_run)
        if log is not None:
            policy_run.pipeline = LoggingPipeline(policy_run.pipeline, log)
        if warm_from is not None:
            report = warm_start_from_log(policy_run.pipeline, warm_from)
            print(f"  warm start: {report.searches} logged searches, {report.clipped} weights clipped", flush=True)
        rec = Records.empty(spec.name, loaded.names, len(searches))
        for t, sim in enumerate(searches):
            policy_run.step(t, sim, rec)
        policy_run.flush()
        if isinstance(policy_run.pipeline, LoggingPipeline):
            policy_run.pipeline.flush()
        return rec
    finally:
        loaded.close()


def run_seed(world: World, seed: int, n: int, n_log: int, work: Path) -> dict[str, np.ndarray]:
    """Steps 1-3 of the module docstring for one seed: per plan, target_found, bool (n,)."""
    from core.simulator.runner import ExperimentConfig, simulated_searches

    plans = specs()
    log_config = ExperimentConfig(searches=n_log, seed=seed + LOG_SEED_OFFSET)
    log_users, log_searches = simulated_searches(world.entities, log_config)
    work.mkdir(parents=True, exist_ok=True)
    log_path = work / f"incumbent-{seed}.sqlite"
    started = time.perf_counter()
    with EventLog(log_path) as log:
        run(world, plans[INCUMBENT], log_config, log_searches, log_users, work / "log", log=log)
        decisions, events = log.counts()
    print(f"seed {seed}: {INCUMBENT} logged {decisions} decisions, {events} events "
          f"({time.perf_counter() - started:.0f} s)", flush=True)
    config = ExperimentConfig(searches=n, seed=seed)
    users, searches = simulated_searches(world.entities, config)
    out = {}
    for name, spec, warm in ((INCUMBENT, plans[INCUMBENT], None), ("cold", plans[LEARNED], None),
                             ("warm", plans[LEARNED], log_path)):
        started = time.perf_counter()
        rec = run(world, spec, config, searches, users, work / name, warm_from=warm)
        out[name] = rec.target_found.copy()
        print(f"seed {seed}: {name} target recall {out[name].mean():.4f} ({time.perf_counter() - started:.0f} s)",
              flush=True)
    return out


def windows(found: np.ndarray, window: int) -> np.ndarray:
    """float64 (ceil(n / window),): the share of each consecutive window's searches (the last may
    be shorter) whose target was a candidate."""
    return np.array([found[i:i + window].mean() for i in range(0, found.size, window)])


def interval(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% Student-t interval over seeds (0 for a single value)."""
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        return float(x.mean()), 0.0
    return float(x.mean()), float(stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size))


def summarise(per_seed: Mapping[int, Mapping[str, np.ndarray]], window: int) -> dict[str, Any]:
    """Per plan (and warm - cold, paired by seed): per window the mean and 95% half-width over seeds."""
    curves = {p: np.array([windows(per_seed[s][p], window) for s in per_seed]) for p in PLANS}
    curves["warm - cold"] = curves["warm"] - curves["cold"]
    curves["warm - static"] = curves["warm"] - curves[INCUMBENT]
    out: dict[str, Any] = {}
    for name, c in curves.items():
        stats = [interval(c[:, w].tolist()) for w in range(c.shape[1])]
        overall = interval(c.mean(axis=1).tolist())
        out[name] = {"mean": [m for m, _ in stats], "half_width": [h for _, h in stats],
                     "per_seed": c.tolist(), "overall": list(overall)}
    return out


def report(summary: Mapping[str, Any], window: int) -> str:
    names = list(summary)
    n_windows = len(summary[PLANS[0]]["mean"])
    lines = [f"target recall per window of {window} searches (mean ± 95% interval over seeds)",
             "searches        " + "".join(f"{n:>20s}" for n in names)]
    for w in range(n_windows):
        cells = "".join(f"{summary[n]['mean'][w]:>12.4f} ± {summary[n]['half_width'][w]:.3f}" for n in names)
        lines.append(f"{w * window + 1:>6d}-{(w + 1) * window:<8d} {cells}")
    lines.append("all             " + "".join(f"{summary[n]['overall'][0]:>12.4f} ± {summary[n]['overall'][1]:.3f}"
                                              for n in names))
    return "\n".join(lines)


def plot(summary: Mapping[str, Any], window: int, path: Path) -> None:
    """The three plans' target recall per window, with their 95% bands over seeds."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    styles = {INCUMBENT: ("tab:gray", "--", "static equal split (the incumbent)"),
              "cold": ("tab:blue", "-", "thompson, cold start"), "warm": ("tab:orange", "-",
                                                                          "thompson, warm-started from its log")}
    for name, (color, line, label) in styles.items():
        mean, half = np.array(summary[name]["mean"]), np.array(summary[name]["half_width"])
        x = (np.arange(mean.size) + 0.5) * window
        ax.plot(x, mean, line, color=color, label=label, marker="o", markersize=3)
        ax.fill_between(x, mean - half, mean + half, color=color, alpha=0.15, linewidth=0)
    ax.set_xlabel("search (window centre)")
    ax.set_ylabel(f"target recall per {window:,} searches")
    ax.set_title("Cold start: the learned policy with and without a warm start")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=150)


def main(argv: Sequence[str] | None = None) -> None:
    pin_threads()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--searches", type=int, default=DEFAULT_SEARCHES, help="evaluation searches per plan")
    parser.add_argument("--log-searches", type=int, default=DEFAULT_LOG_SEARCHES,
                        help="searches the incumbent logs before the switch")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated; develop on 5,6,7")
    parser.add_argument("--window", type=int, default=DEFAULT_WINDOW)
    parser.add_argument("--out", type=Path, default=Path("results-warmstart"))
    parser.add_argument("--index", type=Path, default=None, help="an index directory with the four strategies")
    parser.add_argument("--encoder", choices=("hashing", "minilm"), default="hashing")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if args.searches < 1 or args.log_searches < 1 or args.window < 1 or not seeds:
        parser.error("--searches, --log-searches and --window must be >= 1, and --seeds non-empty")
    args.out.mkdir(parents=True, exist_ok=True)
    world = open_world(build_or_open(args.index, args.out, args.encoder))
    per_seed = {}
    with tempfile.TemporaryDirectory() as work:
        for seed in seeds:
            per_seed[seed] = run_seed(world, seed, args.searches, args.log_searches, Path(work) / str(seed))
    summary = summarise(per_seed, args.window)
    print(report(summary, args.window))
    result = {"run": run_info(), "seeds": seeds, "searches": args.searches, "log_searches": args.log_searches,
              "window": args.window, "encoder": args.encoder, "incumbent": INCUMBENT, "learned": LEARNED,
              "target_recall": summary}
    (args.out / "warmstart.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(summary, args.window, args.out / "warmstart_curves.png")
    print(f"wrote {args.out / 'warmstart.json'} and {args.out / 'warmstart_curves.png'}")


def build_or_open(index: Path | None, out: Path, encoder: str) -> Path:
    """`index` if given, else the demo catalog's index of the four strategies under out/index-<encoder>."""
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


if __name__ == "__main__":
    main()
