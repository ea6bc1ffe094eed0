"""The experiment's acceptance (issue 13) and oracle gap, from the per-seed records of results.json.

    verdict(policies, default)     the acceptance comparisons, paired over seeds
    oracle_gap(policies)           per plan, the share of the best static plan's gap to the oracle it closes

policies: plan name -> one record per seed (Records.summary plus "seed"), every plan of a seed on
the same searches and click draws, so a per-seed difference between two plans is paired and only
it varies over seeds. Intervals are 95% Student-t intervals over seeds.

Static plans are the single strategies ("<strategy>-only"), equal quotas ("static-equal") and
reciprocal rank fusion over equal quotas ("static-rrf"); the best is the one of highest mean target
recall.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from core.simulator.policies import ORACLE

PEER = "vw-squarecb"
PRIMARY = "target_recall"
RECALLS = (("target_recall", "target recall"), ("candidate_recall", "candidate recall (satisfying entity)"))
Policies = Mapping[str, Sequence[Mapping[str, Any]]]


def interval(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% Student-t interval (0 for a single value)."""
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        return float(x.mean()), 0.0
    half = stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return float(x.mean()), float(half)


def paired(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Mean and 95% half-width of the per-seed differences a - b (same seeds, same searches)."""
    return interval([x - y for x, y in zip(a, b, strict=True)])


def seed_gap_shares(plan: Sequence[Mapping[str, Any]], base: Sequence[Mapping[str, Any]],
                    oracle: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    """Per seed, (plan - base) / (oracle - base) on `key`: the share of the gap between a baseline
    plan and the oracle that `plan` closes (NaN for a seed without a gap)."""
    out = []
    for r, b, o in zip(plan, base, oracle, strict=True):
        gap = o[key] - b[key]
        out.append((r[key] - b[key]) / gap if gap > 0 else float("nan"))
    return out


def static_plans(names: Sequence[str]) -> list[str]:
    return [n for n in names if n.endswith("-only") or n in ("static-equal", "static-rrf")]


def _mean(pol: Policies, name: str, key: str) -> float:
    return float(np.mean([s[key] for s in pol[name]]))


def best_static(pol: Policies, key: str = PRIMARY) -> str | None:
    """The static plan of highest mean `key`, None when none was run."""
    statics = static_plans(list(pol))
    return max(statics, key=lambda n: _mean(pol, n, key)) if statics else None


def _recall_check(pol: Policies, default: str, key: str) -> dict[str, Any] | None:
    best = best_static(pol, key)
    if best is None:
        return None
    diff, half = paired([s[key] for s in pol[default]], [s[key] for s in pol[best]])
    fetched, best_fetched = _mean(pol, default, "fetched"), _mean(pol, best, "fetched")
    met = diff - half > 0 and fetched <= best_fetched if len(pol[default]) > 1 else None
    return {"best_static": best, "difference": diff, "half_width": half, "fetched": fetched,
            "best_static_fetched": best_fetched, "met": met}


def verdict(pol: Policies, default: str) -> dict[str, Any]:
    """The acceptance comparisons, paired over seeds: the default policy's target recall (and,
    for reference, candidate recall) against the best static plan's by that measure: met when the
    paired difference exceeds its 95% half-width while the default fetches no more candidates on
    average; its cumulative regret against Vowpal Wabbit's (met when not larger on average). With
    one seed there is no interval, so the recall comparisons give no verdict ("met" is None).
    "met" at the top: the acceptance as a whole (target recall and regret), None when undecided."""
    out: dict[str, Any] = {}
    if default not in pol:
        return out
    for key, _ in RECALLS:
        check = _recall_check(pol, default, key)
        if check is not None:
            out[key] = check
    if PEER in pol:
        diff, half = paired([s["cumulative_regret"] for s in pol[default]],
                            [s["cumulative_regret"] for s in pol[PEER]])
        out["regret_vs_peer"] = {"peer": PEER, "difference": diff, "half_width": half, "met": diff <= 0}
    parts = [out[k]["met"] for k in (PRIMARY, "regret_vs_peer") if k in out]
    out["met"] = None if not parts or None in parts else all(parts)
    return out


def oracle_gap(pol: Policies, key: str = PRIMARY) -> dict[str, Any]:
    """Per plan (the oracle left out), the share of the gap between the best static plan and the
    oracle that it closes on `key`: "share" = (plan - best static) / (oracle - best static) on
    the means over seeds (1 = the oracle's, 0 = the best static plan's, negative = below it);
    "per_seed", the same per seed (NaN where that seed has no gap), and "half_width", the 95%
    interval of their mean over the seeds that have one. Empty when the oracle or every static
    plan is missing, or there is no gap (the best static plan is as good as the oracle)."""
    best = best_static(pol, key)
    if best is None or ORACLE not in pol:
        return {}
    gap = _mean(pol, ORACLE, key) - _mean(pol, best, key)
    if gap <= 0:
        return {}
    shares: dict[str, Any] = {}
    for name, runs in pol.items():
        if name == ORACLE:
            continue
        per_seed = seed_gap_shares(runs, pol[best], pol[ORACLE], key)
        finite = [x for x in per_seed if np.isfinite(x)]
        shares[name] = {"share": (_mean(pol, name, key) - _mean(pol, best, key)) / gap, "per_seed": per_seed,
                        "half_width": interval(finite)[1] if finite else float("nan")}
    return {"measure": key, "best_static": best, "plans": shares}


def _met(met: bool | None) -> str:
    return "no verdict (one seed gives no interval)" if met is None else "MET" if met else "NOT MET"


def verdict_markdown(v: Mapping[str, Any], default: str) -> str:
    lines = []
    for key, label in RECALLS:
        if key in v:
            c = v[key]
            lines.append(f"- {label}: {default} - {c['best_static']} (the best static plan run) = "
                         f"{c['difference']:+.4f} ± {c['half_width']:.4f}, fetching {c['fetched']:.1f} vs "
                         f"{c['best_static_fetched']:.1f} candidates: {_met(c['met'])}"
                         + ("" if key == PRIMARY else " (for reference)"))
    if "regret_vs_peer" in v:
        c = v["regret_vs_peer"]
        lines.append(f"- cumulative regret: {default} - {c['peer']} = {c['difference']:+.1f} ± "
                     f"{c['half_width']:.1f}: {_met(c['met'])} (no worse than Vowpal Wabbit)")
    if "met" in v:
        lines.append(f"- acceptance (target recall and regret): {_met(v['met'])}")
    return "Acceptance (paired over seeds, mean ± 95% CI of the per-seed difference):\n" + "\n".join(lines)


def oracle_gap_markdown(gap: Mapping[str, Any]) -> str:
    if not gap:
        return ""
    rows = ", ".join(f"{name} {g['share']:+.2f} ± {g['half_width']:.2f}"
                     for name, g in sorted(gap["plans"].items(), key=lambda kv: -kv[1]["share"]))
    return (f"Share of the target-recall gap between the best static plan ({gap['best_static']}) and the "
            f"oracle closed (1 = oracle, 0 = best static; on the means over seeds ± 95% CI of the per-seed "
            f"shares): {rows}")
