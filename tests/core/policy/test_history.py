from __future__ import annotations

import json

import numpy as np
import pytest

from core.policy.features import FEATURE_NAMES, featurize
from core.policy.history import HISTORY_FEATURES, VOLUME_SATURATION, QueryHistory


def test_a_query_never_seen_has_no_history() -> None:
    assert QueryHistory().features("late night music").tolist() == [0.0, 0.0, 0.0]


def test_volume_miss_rate_and_diversity_per_query() -> None:
    history = QueryHistory()
    for entity, retrieved in [("a", True), ("b", False), ("b", True), ("c", False)]:
        history.observe("Late Night  Music", entity, retrieved=retrieved)
    history.observe("tayler love", "t1", retrieved=True)
    volume, miss, diversity = history.features("late night music")  # keyed like the memory strategy
    assert volume == pytest.approx(np.log1p(4) / np.log1p(VOLUME_SATURATION))
    assert miss == pytest.approx(0.5) and diversity == pytest.approx(3 / 4)
    assert history.features("tayler love").tolist()[1:] == [0.0, 1.0]


def test_volume_saturates_and_diversity_counts_kept_entities() -> None:
    history = QueryHistory(max_entities=4)
    for i in range(2 * VOLUME_SATURATION):
        history.observe("q", f"e{i}", retrieved=True)
    volume, _, diversity = history.features("q")
    assert volume == 1.0 and diversity == 1.0


def test_least_recently_updated_queries_are_dropped_first() -> None:
    history = QueryHistory(max_queries=2)
    history.observe("a", "x", retrieved=True)
    history.observe("b", "x", retrieved=True)
    history.observe("a", "y", retrieved=True)
    history.observe("c", "x", retrieved=True)
    assert len(history) == 2 and history.features("b").sum() == 0 and history.features("a")[0] > 0


def test_json_round_trip_and_malformed_data() -> None:
    history = QueryHistory(max_queries=10)
    history.observe("q", "x", retrieved=False)
    history.observe("r", "y", retrieved=True)
    restored = QueryHistory.from_json(json.loads(json.dumps(history.to_json())))
    for q in ("q", "r", "s"):
        assert restored.features(q).tolist() == history.features(q).tolist()
    with pytest.raises(ValueError, match="malformed query history"):
        QueryHistory.from_json({"max_queries": 1, "queries": []})
    with pytest.raises(ValueError, match="max_queries"):
        QueryHistory(max_queries=0)


def test_featurize_appends_the_history() -> None:
    history = QueryHistory()
    history.observe("morning music", "x", retrieved=False)
    x = featurize("morning music", {}, (), history)
    cols = [FEATURE_NAMES.index(n) for n in HISTORY_FEATURES]
    assert x[cols].tolist() == history.features("morning music").tolist()
    assert featurize("morning music", {})[cols].sum() == 0


def test_a_frozen_snapshot_does_not_change_while_learning_goes_on() -> None:
    """The broker serialises the history on another thread: what it froze must stay as it was,
    and what arrived meanwhile must count once thawed, as if observed directly."""
    live, reference = QueryHistory(max_queries=3), QueryHistory(max_queries=3)
    for h in (live, reference):
        h.observe("a", "x", retrieved=True)
        h.observe("b", "y", retrieved=False)
    frozen = live.freeze()
    before = live.to_json(frozen)
    for h in (live, reference):
        h.observe("a", "z", retrieved=False)
        h.observe("c", "x", retrieved=True)
        h.observe("d", "x", retrieved=True)
    assert live.to_json(frozen) == before
    np.testing.assert_array_equal(live.features("a"), reference.features("a"))  # reads see the new events
    with pytest.raises(RuntimeError, match="already in progress"):
        live.freeze()
    live.thaw()
    assert live.to_json() == reference.to_json() and len(live) == len(reference) == 3
