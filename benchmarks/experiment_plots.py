"""PNG plots of the LTR&R experiment (issues 6, 13): target recall over time, cumulative regret,
the oracle-gap bar, quota mix.

    write_plots(runs, out, default)  ->  [out/recall_over_time.png, out/cumulative_regret.png,
                                          out/oracle_gap.png (with an oracle and a static plan),
                                          out/quota_mix_<default>.png]

runs: per policy name, one core.simulator.metrics.Records per seed (the same searches for every
policy of a seed). Curves are means over seeds.

1. Target recall over time, the primary measure: the share of the last `window` searches whose
   target was among the candidates (a trailing moving average; the first window - 1 searches are
   not drawn). The band spans the seeds: from the lowest to the highest seed's curve, so it holds
   both the sampling error of a window and how a learning policy's path varies between seeds (a
   Student-t interval over the usual three seeds is mostly its quantile, 4.3, and hides every
   difference). With one seed, the band is the 95% normal interval of a proportion over the window.
2. Cumulative regret against the oracle (core.simulator.runner) by search number; the band is
   1.96 sqrt(t s_t^2 / k), s_t^2 the variance of the per-search regret up to t over the k seeds
   (pooled per-search sampling error).
3. The oracle gap: per plan, the share of the target-recall gap between the best static plan and
   the oracle that it closes (benchmarks.experiment_verdict.oracle_gap): bars at the mean over
   seeds, a dot per seed.
4. The default policy's mean quota per strategy for each intent (core.simulator.users.Intent),
   stacked, over the first and the last `share` of the searches: what it learned to ask for.

Static plans (the same quotas on every search) are drawn dashed, the oracle dotted black.
Drawn with matplotlib's object-oriented API on the Agg canvas (no pyplot state, no display).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from benchmarks.experiment_verdict import PRIMARY, oracle_gap
from core.policy.policies import DEFAULT_KIND
from core.simulator.metrics import Records
from core.simulator.policies import ORACLE
from core.simulator.users import Intent

DPI = 150
MIN_WINDOW = 100
Z95 = 1.959963984540054


def _check(runs: Mapping[str, Sequence[Records]]) -> int:
    """The common number of searches; ValueError for an empty or ragged `runs`."""
    lengths = {len(r) for recs in runs.values() for r in recs}
    if not runs or any(not recs for recs in runs.values()):
        raise ValueError(f"`runs` must hold at least one Records per policy, but got "
                         f"{ {k: len(v) for k, v in runs.items()} }")
    if len(lengths) != 1:
        raise ValueError(f"every run must have the same number of searches, but got {sorted(lengths)}")
    return lengths.pop()


def _style(name: str, recs: Sequence[Records], color: tuple[float, ...]) -> dict[str, Any]:
    if name == ORACLE:
        return {"color": "black", "ls": ":", "lw": 1.6}
    static = all(bool((r.quotas == r.quotas[:1]).all()) for r in recs)
    return {"color": color, "ls": "--" if static else "-", "lw": 1.3 if static else 1.7}


def _moving(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over `window` values, float64 (len(x) - window + 1,)."""
    c = np.concatenate([[0.0], np.cumsum(x, dtype=np.float64)])
    return (c[window:] - c[:-window]) / window


def _figure(width: float = 9.0, height: float = 5.0) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _colors(names: Sequence[str]) -> dict[str, tuple[float, ...]]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {n: tuple(cmap(i % cmap.N)) for i, n in enumerate(names)}


def recall_band(recs: Sequence[Records], window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 (n - window + 1,) each: the trailing target recall averaged over the seeds, and the
    band's low and high (module docstring, plot 1)."""
    curves = np.stack([_moving(r.target_found.astype(np.float64), window) for r in recs])
    mean = curves.mean(axis=0)
    if len(recs) > 1:
        return mean, curves.min(axis=0), curves.max(axis=0)
    half = Z95 * np.sqrt(mean * (1 - mean) / window)
    return mean, np.clip(mean - half, 0, 1), np.clip(mean + half, 0, 1)


def plot_recall(runs: Mapping[str, Sequence[Records]], path: Path, window: int | None = None) -> Path:
    n = _check(runs)
    w = min(n, window or max(MIN_WINDOW, n // 20))
    fig = _figure()
    ax = fig.add_subplot()
    x = np.arange(w, n + 1)
    colors = _colors(list(runs))
    finals = {name: float(np.mean([r.target_found.mean() for r in recs])) for name, recs in runs.items()}
    for name in sorted(runs, key=lambda k: -finals[k]):  # legend from the highest overall recall down
        recs = runs[name]
        mean, low, high = recall_band(recs, w)
        style = _style(name, recs, colors[name])
        ax.plot(x, mean, label=f"{name} ({finals[name]:.3f})", **style)
        ax.fill_between(x, low, high, color=style["color"], alpha=0.12, lw=0)
    seeds = max(len(r) for r in runs.values())
    band = "band: lowest to highest seed" if seeds > 1 else "95% band"
    ax.set(xlabel="search number", ylabel=f"target recall (trailing {w:,} searches)", xlim=(0, n),
           title=f"Target recall over time (mean of {seeds} seed{'s' * (seeds > 1)}; {band})")
    ax.grid(alpha=0.3)
    ax.legend(title="plan (overall target recall)", loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.savefig(path, dpi=DPI)
    return path


def plot_regret(runs: Mapping[str, Sequence[Records]], path: Path) -> Path:
    n = _check(runs)
    fig = _figure()
    ax = fig.add_subplot()
    t = np.arange(1, n + 1)
    colors = _colors(list(runs))
    finals = {name: float(np.mean([r.regret.sum(dtype=np.float64) for r in recs])) for name, recs in runs.items()}
    for name in sorted(runs, key=lambda k: -finals[k]):  # legend in the order of the curves' ends
        recs = runs[name]
        regret = np.stack([r.regret.astype(np.float64) for r in recs])  # (k, n)
        mean = np.cumsum(regret.mean(axis=0))
        total, squares = np.cumsum(regret.sum(axis=0)), np.cumsum((regret ** 2).sum(axis=0))
        m = t * len(recs)  # searches pooled up to t
        var = np.maximum(squares - total ** 2 / m, 0.0) / np.maximum(m - 1, 1)
        half = Z95 * np.sqrt(t * var / len(recs))
        style = _style(name, recs, colors[name])
        ax.plot(t, mean, label=f"{name} ({finals[name]:,.0f})", **style)
        ax.fill_between(t, np.maximum(mean - half, 0), mean + half, color=style["color"], alpha=0.12, lw=0)
    ax.set(xlabel="search number", ylabel="cumulative regret vs the oracle", xlim=(0, n), ylim=(0, None),
           title="Cumulative regret (mean over seeds, 95% band; final value in the legend)")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.savefig(path, dpi=DPI)
    return path


def quota_mix(recs: Sequence[Records], part: slice) -> np.ndarray:
    """float64 (len(Intent), S): mean quota per strategy for each intent over the searches `part`
    of every run (pooled over seeds); NaN for an intent with no search there."""
    intent = np.concatenate([r.intent[part] for r in recs])
    quotas = np.concatenate([r.quotas[part] for r in recs]).astype(np.float64)
    out = np.full((len(Intent), quotas.shape[1]), np.nan)
    for i in Intent:
        if (intent == i).any():
            out[i] = quotas[intent == i].mean(axis=0)
    return out


def plot_quota_mix(recs: Sequence[Records], path: Path, name: str, share: float = 0.1) -> Path:
    n = _check({name: recs})
    k = max(1, round(n * share))
    parts = {f"first {k:,}": slice(0, k), f"last {k:,}": slice(n - k, n)}
    mixes = {label: quota_mix(recs, part) for label, part in parts.items()}
    strategies = recs[0].strategies
    colors = _colors(list(strategies))
    fig = _figure(9.0, 5.0)
    ax = fig.add_subplot()
    width, centers = 0.38, np.arange(len(Intent))
    for j, (label, mix) in enumerate(mixes.items()):
        pos = centers + (j - 0.5) * (width + 0.04)
        bottom = np.zeros(len(Intent))
        for s, strategy in enumerate(strategies):
            values = np.nan_to_num(mix[:, s])
            ax.bar(pos, values, width, bottom=bottom, color=colors[strategy], label=strategy if j == 0 else None,
                   hatch="" if j == 0 else "//", edgecolor="white", lw=0.5)
            bottom += values
        for p, total in zip(pos, bottom, strict=True):
            ax.text(p, total + 2, label.split()[0], ha="center", va="bottom", fontsize=8)
    ax.set_xticks(centers, [i.name.lower() for i in Intent])
    ax.set(ylabel="mean quota per search (candidates)", ylim=(0, None),
           title=f"Quota mix per intent, {name}: first vs last {k:,} searches (plain vs hatched)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(title="strategy", loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.savefig(path, dpi=DPI)
    return path


def plot_oracle_gap(runs: Mapping[str, Sequence[Records]], path: Path, default: str) -> Path | None:
    """Plot 3 of the module docstring; None (nothing written) without an oracle, a static plan or
    a gap to close."""
    _check(runs)
    gap = oracle_gap({name: [{PRIMARY: float(r.target_found.mean())} for r in recs] for name, recs in runs.items()})
    if not gap:
        return None
    shares = sorted(gap["plans"].items(), key=lambda kv: kv[1]["share"])
    fig = _figure(9.0, max(3.0, 0.9 + 0.42 * len(shares)))  # a bar per plan, readable with two
    ax = fig.add_subplot()
    y = np.arange(len(shares))
    colors = ["tab:blue" if name == default else "tab:gray" for name, _ in shares]
    ax.barh(y, [g["share"] for _, g in shares], color=colors, height=0.6)
    for i, (_, g) in enumerate(shares):
        seeds = np.asarray(g["per_seed"])
        seeds = seeds[np.isfinite(seeds)]
        ax.scatter(seeds, np.full(seeds.size, i), s=12, color="black", zorder=3)
        ax.text(max(g["share"], *seeds, 0) + 0.03, i, f"{g['share']:+.2f}", va="center", fontsize=8)
    ax.axvline(0, color="black", lw=0.8)
    ax.axvline(1, color="black", lw=0.8, ls=":")
    ax.set_yticks(y, [name for name, _ in shares])
    ax.set(xlabel=f"share of the target-recall gap from {gap['best_static']} (0) to the oracle (1) closed",
           title="Oracle gap closed per plan (bar: on the means over seeds; dots: seeds)")
    ax.grid(axis="x", alpha=0.3)
    fig.savefig(path, dpi=DPI)
    return path


def write_plots(runs: dict[str, list[Records]], out: Path, default: str = DEFAULT_KIND.value) -> list[Path]:
    """The plots of the module docstring as PNGs in `out` (created); returns their paths (the
    oracle-gap bar only when it can be drawn). ValueError when `default` is not among the policies
    or the runs differ in length."""
    if default not in runs:
        raise ValueError(f"`default` must be one of the policies {sorted(runs)}, but got {default!r}")
    _check(runs)
    out.mkdir(parents=True, exist_ok=True)
    gap = plot_oracle_gap(runs, out / "oracle_gap.png", default)
    return [plot_recall(runs, out / "recall_over_time.png"),
            plot_regret(runs, out / "cumulative_regret.png"),
            *([gap] if gap is not None else []),
            plot_quota_mix(runs[default], out / f"quota_mix_{default}.png", default)]
