"""benchmarks.experiment_warmstart: a tiny run of the cold-start experiment on the simulator's small index."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.experiment_warmstart import INCUMBENT, PLANS, open_world, plot, report, run_seed, summarise, windows
from core.catalog import Entity
from core.eventlog import EventLog

pytestmark = pytest.mark.slow
SEARCHES, LOG_SEARCHES, SEED = 60, 50, 5


def test_windows_are_the_share_of_each_window() -> None:
    found = np.array([1, 1, 0, 0, 1, 0, 1], dtype=bool)
    np.testing.assert_allclose(windows(found, 3), [2 / 3, 1 / 3, 1.0])


def test_a_tiny_run(music_slice: list[Entity], music_index: Path, tmp_path: Path) -> None:
    world = open_world(music_index, music_slice)
    found = run_seed(world, SEED, SEARCHES, LOG_SEARCHES, tmp_path / "work")
    assert set(found) == set(PLANS)
    assert all(f.shape == (SEARCHES,) and f.dtype == bool for f in found.values())
    # the incumbent's log is a real event log of the static equal split over its own stream
    with EventLog(tmp_path / "work" / f"incumbent-{SEED}.sqlite") as log:
        assert log.counts()[0] == LOG_SEARCHES and log.counts()[1] > LOG_SEARCHES // 3
        feedback = log.bandit_feedback()
    assert (feedback.quotas == 50).all() and (feedback.pscore == 1.0).all()
    summary = summarise({SEED: found}, window=20)
    for name in PLANS:
        np.testing.assert_allclose(summary[name]["mean"], windows(found[name], 20))
    np.testing.assert_allclose(summary["warm - cold"]["mean"], windows(found["warm"], 20) - windows(found["cold"], 20))
    text = report(summary, 20)
    assert text.splitlines()[2].startswith("     1-20") and INCUMBENT in text
    plot(summary, 20, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
