"""The off-policy check of issue 6: estimate policies from a uniform logger's decision log (IPS,
SNIPS, DR) and compare with their values measured by running them on the same searches.

    python -m benchmarks.experiment_ope [--searches N] [--seed S] [--train-searches M]
                                        [--levels 0,50,100,200] [--index DIR] [--encoder hashing|minilm]
                                        [--out DIR]

core.simulator.offpolicy.run_check does the work (its docstring explains the design): Thompson
sampling learns on M searches of seed S + 1000 and is frozen; the uniform logger, two static plans
and the frozen Thompson policy then run over the N searches of seed S; each target is estimated
from the logger's run alone. The table gives, per target, its measured value (mean reward per
search, 0 without feedback, with a 95% interval) and each estimate with its 95% interval, marked
✓ when the interval holds the measured value. With --out, ope.json and ope.md are written to DIR.

From benchmarks/experiment.py: `offpolicy_check(entities, root, strategies, config, workdir)`
returns the JSON-able result, `offpolicy_markdown(result)` its report.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.common import pin_threads, run_info
from benchmarks.experiment import STRATEGIES, add_index_options, build_or_open, markdown, metadata_noise

if TYPE_CHECKING:
    from core.catalog import Entity
    from core.simulator.runner import ExperimentConfig

ESTIMATORS = ("ips", "snips", "dr")


def _interval(value: float, lower: float, upper: float) -> dict[str, float]:
    return {"value": value, "lower": lower, "upper": upper}


def offpolicy_check(entities: Sequence[Entity], root: str | Path, strategies: Sequence[str],
                    config: ExperimentConfig, workdir: str | Path, *, levels: Sequence[int] | None = None,
                    train_searches: int | None = None) -> dict[str, Any]:
    """Run the check over config.searches searches of config.seed (core.simulator.offpolicy.run_check)
    and return a JSON-able dict. levels: the allocation space of the check, OPE_LEVELS (the
    experiment's) by default; the offpolicy module docstring explains why it must stay coarse."""
    from core.ope import Estimator
    from core.simulator.offpolicy import LOGGER, OPE_LEVELS, mean_interval, ope_rewards, run_check

    levels = tuple(levels or OPE_LEVELS)
    started = time.perf_counter()
    result = run_check(entities, root, strategies, replace(config, levels=levels), workdir,
                       train_searches=train_searches)
    targets = {}
    for check in result.targets:
        estimates = {}
        for e in Estimator:
            est = check.estimates[e]
            estimates[e.value] = {**_interval(est.value, est.lower, est.upper), "covers": check.covers(e)}
        targets[check.name] = {"measured": _interval(check.measured, check.measured_lower, check.measured_upper),
                               "estimates": estimates, "ess": check.ess, "matched": check.matched,
                               "agreement": check.agreement}
    log = result.log
    return {"searches": len(log), "seed": config.seed, "levels": list(levels), "budget": config.budget,
            "n_allocations": result.n_allocations, "train_searches": result.train_searches,
            "train_seed": result.train_seed, "strategies": list(log.strategies),
            "logger": {"name": LOGGER, "measured": _interval(*mean_interval(ope_rewards(log))),
                       "feedback_rate": float(log.feedback.mean())},
            "reward_model_r2": result.reward_model_r2, "targets": targets,
            "seconds": time.perf_counter() - started}


def _cell(v: dict[str, Any]) -> str:
    mark = "" if "covers" not in v else " ✓" if v["covers"] else " ✗"
    return f"{v['value']:.3f} [{v['lower']:.3f}, {v['upper']:.3f}]{mark}"


def offpolicy_markdown(result: dict[str, Any]) -> str:
    """The check as a markdown table with a short explanation."""
    rows = [[name, _cell(t["measured"]), *(_cell(t["estimates"][e]) for e in ESTIMATORS), f"{t['ess']:,.0f}",
             f"{t['matched']:,}", f"{t['agreement']:.3f}"] for name, t in result["targets"].items()]
    table = markdown(rows, ["target", "measured", "IPS", "SNIPS", "DR", "ESS", "matched", "agreement"])
    covered = sum(e["covers"] for t in result["targets"].values() for e in t["estimates"].values())
    total = sum(len(t["estimates"]) for t in result["targets"].values())
    lg = result["logger"]
    return (f"Off-policy check: {result['searches']:,} searches (seed {result['seed']}) logged by a uniform "
            f"policy over {result['n_allocations']} allocations (levels {tuple(result['levels'])}, budget "
            f"{result['budget']}); thompson-frozen learned on {result['train_searches']:,} searches of seed "
            f"{result['train_seed']}. Value = mean reward per search (0 without feedback); 95% intervals; "
            f"✓ = the interval holds the measured value.\n\n{table}\n\n"
            f"{covered} of {total} intervals hold the measured value. Logger: value {_cell(lg['measured'])}, "
            f"feedback on {lg['feedback_rate']:.1%} of searches. DR's reward model (ridge, 2-fold cross-fitted "
            f"on the log): R² {result['reward_model_r2']:.3f}. ESS: effective sample size of the importance "
            f"weights; matched: logged searches where the target chose the logged allocation; agreement: "
            f"share of those with the same reward in both runs (below 1 only through the memory strategy, "
            f"which learns from each run's own feedback).")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--searches", type=int, default=20_000, help="logged searches (and per target run)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-searches", type=int, default=None,
                        help="searches the Thompson target learns on (default: --searches)")
    parser.add_argument("--levels", type=lambda s: tuple(int(v) for v in s.split(",")), default=None,
                        help="quota levels of the check, e.g. 0,50,100,200 (the default)")
    parser.add_argument("--out", type=Path, default=None, help="write ope.json and ope.md here")
    add_index_options(parser)
    args = parser.parse_args(argv)
    if args.searches < 2 or (args.train_searches is not None and args.train_searches < 1):
        parser.error("--searches must be >= 2 and --train-searches >= 1")
    pin_threads()
    from core.catalog import demo_catalog_path, load_catalog
    from core.simulator.runner import ExperimentConfig

    info = run_info()  # before the run: the commit whose code is loaded
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        root = build_or_open(args.index, out, args.encoder, metadata_noise(args))
        result = offpolicy_check(load_catalog(demo_catalog_path()), root, STRATEGIES,
                                 ExperimentConfig(searches=args.searches, seed=args.seed), Path(tmp) / "work",
                                 levels=args.levels, train_searches=args.train_searches)
        result["run"], result["encoder"] = info, args.encoder
        text = (offpolicy_markdown(result) + f"\n\n{result['seconds']:.0f} s (commit {info['commit']}, "
                f"{info['machine']}, {info['threads']} thread)")
        print(text)
        if args.out is not None:
            (out / "ope.json").write_text(json.dumps(result, indent=2) + "\n")
            (out / "ope.md").write_text(text + "\n")
            print(f"wrote {out / 'ope.json'} and {out / 'ope.md'}")


if __name__ == "__main__":
    main()
