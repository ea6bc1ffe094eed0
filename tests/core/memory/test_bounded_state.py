"""Issue 12: the memory strategy's state is bounded. Event ids are remembered for dedup only for
`dedup_window_s` after they were first learned, and observed pairs whose decayed evidence has become
negligible are dropped at snapshots, changing no kept pair's score. Both survive snapshots and crashes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.catalog import Entity
from core.memory.index import MemoryConfig
from core.memory.store import PairStats, ScoringConfig, prune_pairs
from core.memory.wal import SNAPSHOT_NAME, WriteAheadLog, write_snapshot
from core.types import EventType, FeedbackEvent
from tests.core.memory.common import DAY, EVENT_TIME, Clock, click, open_memory, state_of

HOUR = 3600.0


# -- dedup by age -------------------------------------------------------------------------------------


def test_a_long_stream_keeps_one_window_of_event_ids(memory_index: Path, catalog: list[Entity],
                                                     tmp_path: Path) -> None:
    """Regression: `seen` kept every event id ever learned (and wrote them all into every snapshot).
    200k events over a simulated week, 1-hour window: after each batch `seen` holds exactly the ids
    learned in the last hour, never more than one window of events plus a batch."""
    n, batch = 200_000, 100
    times = EVENT_TIME + np.arange(n // batch) * (7 * DAY / (n // batch))  # one batch every 302.4 s
    clock = Clock()
    s = open_memory(memory_index, tmp_path, clock, dedup_window_s=HOUR)
    entity_ids = [e.id for e in catalog]
    largest = 0
    for b, t in enumerate(times):
        clock.now = float(t)
        events = [FeedbackEvent(event_id=f"b{b}-{i}", query_text=f"q{i % 50}",
                                entity_id=entity_ids[(b + i) % len(entity_ids)], type=EventType.CLICK,
                                timestamp=float(t)) for i in range(batch)]
        assert s.learn(events) == (batch, 0)
        assert len(s.seen) == batch * int(np.count_nonzero(times[:b + 1] >= t - HOUR))
        largest = max(largest, len(s.seen))
    assert largest <= n / (7 * DAY) * HOUR + batch
    assert set(s.seen) == {f"b{b}-{i}" for b in range(len(times) - 12, len(times)) for i in range(batch)}


def test_a_repeat_counts_once_inside_the_window_and_again_after_it(memory_index: Path, catalog: list[Entity],
                                                                   tmp_path: Path) -> None:
    clock = Clock()
    s = open_memory(memory_index, tmp_path, clock, dedup_window_s=600)
    e = catalog[0].id
    assert s.learn([click(1, "q", e)]) == (1, 0)
    clock.now += 599
    assert s.learn([click(1, "q", e), click(2, "q", e)]) == (1, 1)
    clock.now = EVENT_TIME + 600  # exactly one window after it was first learned: still a repeat
    assert s.learn([click(1, "q", e)]) == (0, 1)
    clock.now = EVENT_TIME + 600.5  # the repeats did not refresh its stamp: forgotten, accepted again
    assert s.learn([click(1, "q", e), click(2, "q", e)]) == (1, 1)
    assert s.observed["q"][s.collection.ordinal[e]].impressions == 3


def test_a_clock_going_backwards_keeps_ids_longer_never_shorter(memory_index: Path, catalog: list[Entity],
                                                                tmp_path: Path) -> None:
    clock = Clock(10_000.0)
    s = open_memory(memory_index, tmp_path, clock, dedup_window_s=HOUR)
    e = catalog[0].id
    s.learn([click(1, "q", e)])
    clock.now = 5_000.0
    assert s.learn([click(1, "q", e), click(2, "q", e)]) == (1, 1)
    assert s.seen.to_rows() == [["e1", 10_000.0], ["e2", 10_000.0]]  # e2 is stamped with the newest time
    clock.now = 10_000.0 + HOUR
    assert s.learn([click(1, "q", e), click(2, "q", e)]) == (0, 2)
    clock.now = 10_001.0 + HOUR
    assert s.learn([click(1, "q", e), click(2, "q", e)]) == (2, 0)


@pytest.mark.parametrize(("options", "match"), [({"dedup_window_s": 0.0}, "`dedup_window_s` must be finite and > 0"),
                                                ({"dedup_window_s": math.inf}, "`dedup_window_s` must be finite"),
                                                ({"min_evidence": -1e-3}, "`min_evidence` must be finite and >= 0"),
                                                ({"min_evidence": math.nan}, "`min_evidence` must be finite")])
def test_bound_setting_errors(options: dict[str, float], match: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=match):
        MemoryConfig.from_options(options, tmp_path)


def test_bound_settings_are_options_and_described(memory_index: Path, tmp_path: Path) -> None:
    s = open_memory(memory_index, tmp_path, dedup_window_s="7200", min_evidence="0.01")
    assert (s.config.dedup_window_s, s.config.min_evidence) == (7200.0, 0.01)
    d = s.describe()
    assert (d["dedup_window_s"], d["min_evidence"]) == ("7200.0", "0.01")
    default = MemoryConfig(state_dir=tmp_path)
    assert HOUR <= default.dedup_window_s <= 6 * HOUR


# -- snapshots and recovery ---------------------------------------------------------------------------


def read_state(state: Path) -> dict[str, object]:
    """The snapshot's JSON, read without the code under test (format: core.memory.wal)."""
    _, _, data = (state / SNAPSHOT_NAME).read_bytes().partition(b"\n")
    loaded: dict[str, object] = json.loads(data)
    return loaded


def test_snapshot_v2_stores_ids_with_their_stamps(memory_index: Path, catalog: list[Entity], tmp_path: Path) -> None:
    clock = Clock()
    s = open_memory(memory_index, tmp_path, clock, snapshot_every=1, dedup_window_s=HOUR)
    s.learn([click(1, "q", catalog[0].id)])
    clock.now += 10
    s.learn([click(2, "q", catalog[1].id)])
    written = read_state(tmp_path)
    assert written["version"] == 2 and written["seq"] == 2
    assert written["events"] == [["e1", EVENT_TIME], ["e2", EVENT_TIME + 10]]
    s.wal.close()
    clock.now = EVENT_TIME + HOUR + 5  # e1 expired, e2 not yet
    again = open_memory(memory_index, tmp_path, clock, dedup_window_s=HOUR)
    assert again.seen.to_rows() == written["events"] and state_of(again) == state_of(s)
    assert again.learn([click(1, "q", catalog[0].id), click(2, "q", catalog[1].id)]) == (1, 1)


def test_version_1_state_still_loads(memory_index: Path, catalog: list[Entity], tmp_path: Path) -> None:
    """A snapshot of version 1 (ids only) and a log record without a stamp, as written before issue 12:
    their ids are stamped with the load time; the next snapshot is version 2."""
    e = catalog[0].id
    write_snapshot(tmp_path, {"version": 1, "seq": 1, "events": ["old1", "old2"],
                              "pairs": {"q": [[e, 2, 2, 2.0, 2.0, 0.0, EVENT_TIME]]}})
    wal = WriteAheadLog(tmp_path)
    wal.append({"seq": 2, "events": [["old3", "q", e, int(EventType.CLICK), 0.0, EVENT_TIME]]})
    wal.close()
    clock = Clock(5_000.0)
    s = open_memory(memory_index, tmp_path, clock, dedup_window_s=HOUR)
    assert s.seen.to_rows() == [["old1", 5_000.0], ["old2", 5_000.0], ["old3", 5_000.0]]
    assert state_of(s)["q"][s.collection.ordinal[e]] == [3, 3, 3.0, 3.0, 0.0, EVENT_TIME]
    assert s.learn([FeedbackEvent(event_id="old2", query_text="q", entity_id=e, type=EventType.CLICK)]) == (0, 1)
    s.close()
    assert read_state(tmp_path)["version"] == 2


def test_replay_after_a_crash_restores_the_dedup_state(memory_index: Path, catalog: list[Entity],
                                                       tmp_path: Path) -> None:
    """No close(): the process died after ids had expired, a snapshot and more logged batches; the
    state recovered later (another clock) is the one it had, stamps included."""
    clock = Clock()
    s = open_memory(memory_index, tmp_path, clock, dedup_window_s=1000, snapshot_every=120)
    rng = np.random.default_rng(7)
    for b in range(40):
        clock.now = EVENT_TIME + 100 * b - (150 if b == 25 else 0)  # one step backwards
        fresh = [click(b * 10 + i, f"q{int(rng.integers(0, 5))}", catalog[int(rng.integers(0, 50))].id)
                 for i in range(10)]
        repeats = [click(b * 10 - back, "q0", catalog[0].id) for back in (35, 145) if b * 10 >= back]
        s.learn(fresh + repeats)
    assert (tmp_path / SNAPSHOT_NAME).exists() and len(s.wal.replay()) > 0
    expected = (s.seen.to_rows(), state_of(s), s.seq)
    s.wal.close()
    again = open_memory(memory_index, tmp_path, Clock(EVENT_TIME + DAY), dedup_window_s=1000)
    assert (again.seen.to_rows(), state_of(again), again.seq) == expected
    assert len(again.seen) <= 11 * 11  # ids of the last 1000 s: 11 batches of at most 11 new ids


# -- observed pairs bounded by their decay --------------------------------------------------------------


def aged(n_clicks: int, n_skips: int, last: float, config: ScoringConfig) -> PairStats:
    stats = PairStats()
    for _ in range(n_clicks):
        stats.add(1.0, 1.0, last, config)
    for _ in range(n_skips):
        stats.add(0.0, 1.0, last, config)
    return stats


def test_pruning_drops_only_negligible_pairs_and_keeps_scores() -> None:
    config, eps, now = ScoringConfig(), 1e-3, 1000 * DAY
    m, half_life = config.prior_strength, config.half_life_days * DAY
    just_below = half_life * math.log2(1 / (0.9 * eps))  # a click this old is 0.9 * eps pseudo-trials
    observed = {"old": {1: aged(1, 0, now - just_below, config)},
                "mixed": {1: aged(3, 0, now - 400 * DAY, config), 2: aged(2, 1, now - DAY, config),
                          3: aged(50, 50, now - 200 * DAY, config)},
                "recent": {4: aged(1, 0, now - 60.0, config)}}
    prior = {("old", 1): None, ("mixed", 1): 0.3, ("mixed", 2): 0.3, ("mixed", 3): None, ("recent", 4): None}
    before = {(k, o): (st.to_list(), st.score(prior[k, o], now, config)) for k, v in observed.items()
              for o, st in v.items()}
    assert prune_pairs(observed, now, config, eps) == 2
    assert {k: sorted(v) for k, v in observed.items()} == {"mixed": [2, 3], "recent": [4]}
    for (k, o), (stats, score) in before.items():
        if o in observed.get(k, {}):
            assert observed[k][o].to_list() == stats and observed[k][o].score(prior[k, o], now, config) == score
        else:  # dropped: its score is its prior mean again, within the bound of the threshold
            predicted = prior[k, o]
            p = config.prior_mean if predicted is None else predicted
            assert 0 < abs(score - p) < eps / (m + eps)


@settings(max_examples=60, deadline=None)
@given(clicks=st.integers(0, 30), skips=st.integers(0, 30), age_days=st.floats(0, 2000),
       predicted=st.one_of(st.none(), st.floats(0.001, 0.999)), eps=st.floats(1e-6, 0.5))
def test_a_pruned_pair_moves_less_than_the_bound(clicks: int, skips: int, age_days: float, predicted: float | None,
                                                 eps: float) -> None:
    config, now = ScoringConfig(), 5000 * DAY
    stats = aged(clicks, skips, now - age_days * DAY, config)
    before = stats.score(predicted, now, config)
    observed = {"q": {0: stats}}
    prune_pairs(observed, now, config, eps)
    n = (clicks + skips) * 2.0 ** (-age_days / config.half_life_days)
    assert ("q" in observed) == (n >= eps) or math.isclose(n, eps, rel_tol=1e-9)
    if "q" not in observed:
        p = config.prior_mean if predicted is None else predicted
        assert abs(before - p) < eps / (config.prior_strength + eps)


def test_nothing_is_pruned_without_decay_or_threshold() -> None:
    now = 10_000 * DAY
    for config, eps in ((ScoringConfig(half_life_days=0.0), 1e-3), (ScoringConfig(), 0.0)):
        observed = {"q": {0: aged(1, 0, 0.0, config)}}
        assert prune_pairs(observed, now, config, eps) == 0 and list(observed["q"]) == [0]


def test_snapshots_prune_stale_pairs_and_leave_the_rest(memory_index: Path, catalog: list[Entity],
                                                        tmp_path: Path) -> None:
    clock = Clock(400 * DAY)
    s = open_memory(memory_index, tmp_path, clock)
    old, recent = catalog[0].id, catalog[1].id
    s.learn([click(1, "stale query", old)])  # its event is from EVENT_TIME, 400 days before now
    s.learn([FeedbackEvent(event_id="r", query_text="fresh query", entity_id=recent, type=EventType.CLICK)])
    kept = s.scores_for("fresh query")
    assert s.scores_for("stale query")[0].size == 1
    s.close()
    assert s.describe()["pruned_pairs"] == "1" and "stale query" not in s.observed
    ordinals, scores = s.scores_for("fresh query")
    assert ordinals.tolist() == kept[0].tolist() and scores.tolist() == kept[1].tolist()
    again = open_memory(memory_index, tmp_path, clock)
    assert state_of(again) == state_of(s) and again.scores_for("stale query")[0].size == 0
