"""The routing benchmark's figures: per-seed records (the --json layout), tables with 95% intervals
over seeds, the share of the oracle gap the learned policy closes, and the PNG.

JSON layout (issue 13): {"default_policy": NAME, "plans": {NAME: [one record per seed]}}, a record
holding the pooled `target_recall` (the wanted document is among the candidates), `ndcg@10` and
`recall@100` (of the final ranking against the qrels, ir-measures), `fetched` (candidates the
strategies returned, per search), `candidate_recall` (the acted-on document is a candidate, over
searches with feedback) and `by_collection` (collection -> the same measures over its searches).
The benchmark adds top-level keys beside these (settings, gap, run information).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.experiment import fmt, markdown
from benchmarks.experiment_verdict import interval, seed_gap_shares
from benchmarks.routing_run import BEST_FIXED, DEFAULT, RoutingRun
from core.simulator.policies import ORACLE

MEASURES = ("target_recall", "ndcg@10", "recall@100", "fetched", "candidate_recall")
LABELS = {"target_recall": "target recall", "ndcg@10": "nDCG@10", "recall@100": "Recall@100",
          "fetched": "fetched", "candidate_recall": "candidate recall"}


def measures(run: RoutingRun, mask: np.ndarray) -> dict[str, float]:
    """MEASURES over the searches where `mask` (bool (N,)) holds (NaN where none qualifies)."""
    rec = run.records
    fb = mask & rec.feedback
    if not mask.any():
        return dict.fromkeys(MEASURES, float("nan"))
    return {"target_recall": float(rec.target_found[mask].mean()), "ndcg@10": float(run.ndcg[mask].mean()),
            "recall@100": float(run.recall[mask].mean()), "fetched": float(rec.fetched[mask].mean()),
            "candidate_recall": float(rec.acted_found[fb].mean()) if fb.any() else float("nan")}


def seed_record(run: RoutingRun, collections: Sequence[str]) -> dict[str, Any]:
    """One --json record: the pooled MEASURES and `by_collection`."""
    out: dict[str, Any] = measures(run, np.ones(len(run.records), dtype=bool))
    out["by_collection"] = {name: measures(run, run.records.intent == c) for c, name in enumerate(collections)}
    return out


def gap_closed(plans: Mapping[str, Sequence[Mapping[str, Any]]], key: str = "target_recall") -> list[float]:
    """Per seed, (default - best fixed) / (oracle - best fixed) on the pooled `key`: the share of
    the gap between the best static plan with hindsight and the per-query oracle that the learned
    policy closes (NaN for a seed without a gap)."""
    return seed_gap_shares(plans[DEFAULT], plans[BEST_FIXED], plans[ORACLE], key)


def paired(plans: Mapping[str, Sequence[Mapping[str, Any]]], key: str) -> str:
    """One line per plan: the default policy minus that plan on the pooled `key`, mean ± 95% CI of
    the per-seed differences (every plan of a seed replays the same searches, so the difference per
    seed is what varies; the popular queries change with the seed, which makes the unpaired
    intervals wide)."""
    lines = []
    for name, runs in plans.items():
        if name != DEFAULT:
            diff = [d[key] - o[key] for d, o in zip(plans[DEFAULT], runs, strict=True)]
            lines.append(f"- {DEFAULT} - {name}: {fmt(diff)}")
    return f"{LABELS[key]}, paired over seeds:\n" + "\n".join(lines)


def tables(result: Mapping[str, Any]) -> str:
    """The pooled table (every measure) and the per-collection tables (target recall, nDCG@10)."""
    plans: Mapping[str, list[dict[str, Any]]] = result["plans"]
    pooled = markdown([[name, *(fmt([s[k] for s in runs]) for k in MEASURES)] for name, runs in plans.items()],
                      ["plan", *(LABELS[k] for k in MEASURES)])
    names = list(result["collections"])
    parts = [f"Pooled ({result['settings']['searches']:,} searches x {result['settings']['seeds']} seeds, "
             f"mean ± 95% CI over seeds):\n\n{pooled}"]
    for key in ("target_recall", "ndcg@10"):
        rows = [[name, *(fmt([s["by_collection"][c][key] for s in runs]) for c in names)]
                for name, runs in plans.items()]
        parts.append(f"{LABELS[key]} per collection:\n\n" + markdown(rows, ["plan", *names]))
    parts += [paired(plans, "target_recall"), paired(plans, "ndcg@10")]
    return "\n\n".join(parts)


def write_plot(runs: Mapping[str, Sequence[RoutingRun]], plans: Mapping[str, Sequence[Mapping[str, Any]]],
               collections: Sequence[str], out: Path, share: float = 0.5) -> Path:
    """out/routing.png: (left) the default policy's mean quota per strategy in each collection over
    the last `share` of the searches (what it learned), stacked; (right) pooled target recall of the
    plans with 95% intervals over seeds, the best fixed split and the oracle marking the gap."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.5))
    FigureCanvasAgg(fig)
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    recs = [r.records for r in runs[DEFAULT]]
    start = int(len(recs[0]) * (1 - share))
    quotas = np.concatenate([r.quotas[start:] for r in recs]).astype(np.float64)
    label = np.concatenate([r.intent[start:] for r in recs])
    mix = np.array([quotas[label == c].mean(axis=0) if (label == c).any() else np.zeros(quotas.shape[1])
                    for c in range(len(collections))])
    bottom = np.zeros(len(collections))
    for s, name in enumerate(recs[0].strategies):
        left.bar(collections, mix[:, s], bottom=bottom, label=name)
        bottom += mix[:, s]
    left.set_title(f"{DEFAULT}: mean quota per collection (last {share:.0%} of searches)", fontsize=10)
    left.set_ylabel("candidates asked")
    left.legend(fontsize=8)
    names = list(plans)
    means = [interval([s["target_recall"] for s in plans[n]]) for n in names]
    colors = ["black" if n == ORACLE else "tab:red" if n == DEFAULT else "tab:green" if n == BEST_FIXED
              else "tab:gray" for n in names]
    right.barh(names, [m for m, _ in means], xerr=[h for _, h in means], color=colors)
    right.invert_yaxis()
    right.set_xlabel("pooled target recall (95% CI over seeds)")
    if BEST_FIXED in plans and ORACLE in plans:
        closed = interval(gap_closed(plans))
        right.set_title(f"{DEFAULT} closes {closed[0]:.0%} ± {closed[1]:.0%} of the best-fixed -> oracle gap",
                        fontsize=10)
    fig.tight_layout()
    path = out / "routing.png"
    fig.savefig(path, dpi=150)
    return path
