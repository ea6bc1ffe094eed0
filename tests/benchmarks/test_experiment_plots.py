"""The experiment's PNG plots (benchmarks/experiment_plots.py), on synthetic records."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from benchmarks.experiment_plots import quota_mix, recall_band, write_plots
from core.simulator.metrics import Records
from core.simulator.users import Intent

STRATEGIES = ("lexical", "semantic", "attribute", "memory")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def synthetic(policy: str, seed: int, n: int = 600, recall: float = 0.6) -> Records:
    """A run whose recall climbs from `recall` - 0.2 to `recall` and whose quotas shift towards
    the attribute strategy over time."""
    rng = np.random.default_rng([seed, len(policy)])
    rec = Records.empty(policy, STRATEGIES, n)
    t = np.arange(n) / n
    rec.intent[:] = rng.integers(len(Intent), size=n)
    rec.target_found[:] = rng.random(n) < recall - 0.2 * (1 - t)
    rec.regret[:] = np.where(rec.target_found, 0.0, rng.random(n) * 0.5)
    late = t > 0.5
    rec.quotas[:] = np.where(late[:, None], [25, 25, 100, 50], [50, 50, 50, 50])
    return rec


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR", path
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_write_plots_makes_four_readable_pngs(tmp_path: Path) -> None:
    runs = {name: [synthetic(name, seed, recall=r) for seed in range(3)]
            for name, r in (("thompson", 0.6), ("static-equal", 0.5), ("oracle", 0.8))}
    paths = write_plots(runs, tmp_path / "plots", "thompson")
    assert [p.name for p in paths] == ["recall_over_time.png", "cumulative_regret.png", "oracle_gap.png",
                                       "quota_mix_thompson.png"]
    for p in paths:
        width, height = png_size(p)
        # 150 dpi; the oracle-gap bar is as tall as its plans need (here two), 3 inches at least
        assert width >= 1000 and height >= (450 if p.name == "oracle_gap.png" else 600), (p, width, height)
        assert p.stat().st_size > 20_000, p  # drawn, not blank


def test_a_single_seed_is_enough_and_no_oracle_means_no_gap_bar(tmp_path: Path) -> None:
    paths = write_plots({"thompson": [synthetic("thompson", 0)]}, tmp_path, "thompson")
    assert [p.name for p in paths] == ["recall_over_time.png", "cumulative_regret.png", "quota_mix_thompson.png"]
    assert all(p.stat().st_size > 10_000 for p in paths)


def test_the_recall_band_spans_the_seeds() -> None:
    recs = [synthetic("thompson", seed, n=300) for seed in range(3)]
    mean, low, high = recall_band(recs, 50)
    curves = [np.convolve(r.target_found, np.ones(50), "valid") / 50 for r in recs]
    np.testing.assert_allclose(mean, np.mean(curves, axis=0))
    np.testing.assert_allclose(low, np.min(curves, axis=0))
    np.testing.assert_allclose(high, np.max(curves, axis=0))
    assert (high > low).any()
    # one seed: the 95% normal band of a proportion over the window
    mean, low, high = recall_band(recs[:1], 50)
    np.testing.assert_allclose(high - mean, 1.959963984540054 * np.sqrt(mean * (1 - mean) / 50), atol=1e-12)


def test_quota_mix_is_the_mean_quota_per_intent_and_part() -> None:
    rec = synthetic("thompson", 0, n=400)
    early, late = quota_mix([rec], slice(0, 100)), quota_mix([rec], slice(300, 400))
    assert early.shape == (len(Intent), len(STRATEGIES))
    np.testing.assert_array_equal(early, np.tile([50.0, 50.0, 50.0, 50.0], (len(Intent), 1)))
    np.testing.assert_array_equal(late, np.tile([25.0, 25.0, 100.0, 50.0], (len(Intent), 1)))
    rec.intent[:] = Intent.TOPICAL
    assert np.isnan(quota_mix([rec], slice(0, 10))[Intent.SPEARFISHING]).all()


@pytest.mark.parametrize(("runs", "match"), [
    ({"oracle": [synthetic("oracle", 0)]}, "`default` must be one of the policies"),
    ({"thompson": [synthetic("thompson", 0), synthetic("thompson", 1, n=300)]}, "the same number of searches"),
    ({"thompson": []}, "at least one Records per policy"),
])
def test_bad_runs_are_refused(runs: dict[str, list[Records]], match: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=match):
        write_plots(runs, tmp_path)
