"""The memory strategy: Q2E scoring, cold start replaced by feedback, durable learning and replay."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from core.catalog import Entity
from core.errors import IndexFormatError, NotFoundError
from core.indexing import open_strategy
from core.memory.index import MemoryStrategy
from core.memory.store import PairStats, ScoringConfig, reward
from core.memory.wal import SNAPSHOT_NAME, WAL_NAME
from core.query import make_query
from core.types import EventType
from tests.core.memory.common import DAY, click, open_memory, state_of
from tests.core.strategy_contract import StrategyContract


def genres(e: Entity) -> tuple[str, ...]:
    g = e.attributes.get("genre", ())
    return g if isinstance(g, tuple) else ()


def ranking(s: MemoryStrategy, text: str, k: int = 10) -> list[str]:
    return [s.collection.ids[o] for o in s.retrieve(make_query(text), k, None).ordinals]


# -- scoring ----------------------------------------------------------------------------------------


def test_posterior_mean_and_decay() -> None:
    config = ScoringConfig(prior_strength=2.0, prior_mean=0.05, half_life_days=10.0)
    stats = PairStats()
    for _ in range(3):
        stats.add(1.0, 1.0, 0.0, config)
    stats.add(0.0, 1.0, 0.0, config)
    assert stats.score(None, 0.0, config) == pytest.approx((2 * 0.05 + 3) / (2 + 4))
    assert stats.score(0.5, 0.0, config) == pytest.approx((2 * 0.5 + 3) / (2 + 4))
    # After one half-life the evidence counts half.
    assert stats.score(None, 10 * DAY, config) == pytest.approx((0.1 + 1.5) / (2 + 2))
    assert (stats.impressions, stats.positives, stats.reward_sum) == (4, 3, 3.0)


def test_play_value_is_its_reward_and_skips_are_failures() -> None:
    assert reward(EventType.PLAY, 0.25) == (0.25, 1.0)
    assert reward(EventType.PLAY, 0.0) == (1.0, 1.0)
    assert reward(EventType.SKIP, 0.7) == (0.0, 1.0)
    assert reward(EventType.FAVORITE, 0.0) == (1.0, 3.0)


@pytest.mark.parametrize(("kwargs", "match"), [({"prior_strength": 0.0}, "`prior_strength` must be finite and > 0"),
                                               ({"prior_mean": 1.0}, "`prior_mean` must be in \\(0, 1\\)"),
                                               ({"half_life_days": -1.0}, "`half_life_days` must be finite")])
def test_scoring_config_errors(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ScoringConfig(**kwargs)


# -- cold start and feedback ------------------------------------------------------------------------


def test_cold_start_finds_entities_by_their_metadata(memory_index: Path, catalog: list[Entity],
                                                     tmp_path: Path) -> None:
    s = open_memory(memory_index, tmp_path)
    e = catalog[0]
    assert e.id in ranking(s, e.fields["title"], 50)
    assert e.id in ranking(s, f"{e.fields['artist']} {e.fields['title']}", 50)
    rock = set(ranking(s, "rock", 1000))
    assert rock == {x.id for x in catalog if "rock" in genres(x)}


def test_observed_statistics_replace_predictions(memory_index: Path, catalog: list[Entity], tmp_path: Path) -> None:
    s = open_memory(memory_index, tmp_path)
    s.clock = lambda: 1000.0
    before = ranking(s, "rock")
    outsider = next(x.id for x in catalog if "rock" not in genres(x))
    assert outsider not in before
    s.learn([click(i, "Rock", outsider) for i in range(5)])
    s.learn([click(i, "rock", before[0], EventType.SKIP, prefix="s") for i in range(5)])
    after = ranking(s, "rock")
    assert after[0] == outsider
    assert ranking(s, "rock", 1000).index(before[0]) > 0
    new = s.retrieve(make_query("a query never predicted"), 5, None)
    assert len(new) == 0
    s.learn([click(99, "a query never predicted", outsider)])
    assert ranking(s, "A query, never predicted!") == [outsider]


def test_duplicates_count_once(memory_index: Path, catalog: list[Entity], tmp_path: Path) -> None:
    s = open_memory(memory_index, tmp_path)
    e = catalog[3].id
    assert s.learn([click(1, "q", e), click(1, "q", e), click(2, "q", e)]) == (2, 1)
    assert s.learn([click(1, "q", e), click(3, "q", e)]) == (1, 1)
    assert s.observed["q"][s.collection.ordinal[e]].impressions == 3


def test_unknown_entity_records_nothing_of_the_batch(memory_index: Path, catalog: list[Entity],
                                                     tmp_path: Path) -> None:
    s = open_memory(memory_index, tmp_path)
    with pytest.raises(NotFoundError, match=r"events\[1\]\.entity_id: entity 'nope' is not in the index"):
        s.learn([click(1, "q", catalog[0].id), click(2, "q", "nope")])
    assert not s.observed and not s.seen and s.wal.size() == 0


# -- durability -------------------------------------------------------------------------------------


def test_replay_after_a_crash(memory_index: Path, catalog: list[Entity], tmp_path: Path) -> None:
    """No close(): the process died; everything acknowledged is in the log."""
    s = open_memory(memory_index, tmp_path)
    rng = np.random.default_rng(5)
    for b in range(10):
        s.learn([click(b * 10 + i, f"q{int(rng.integers(0, 5))}", catalog[int(rng.integers(0, 50))].id)
                 for i in range(10)])
    expected = state_of(s)
    s.wal.close()
    again = open_memory(memory_index, tmp_path)
    assert state_of(again) == expected and len(again.seen) == 100


def test_torn_tail_is_cut_and_appends_stay_readable(memory_index: Path, catalog: list[Entity],
                                                    tmp_path: Path) -> None:
    s = open_memory(memory_index, tmp_path)
    s.learn([click(1, "q", catalog[0].id)])
    s.wal.close()
    with (tmp_path / WAL_NAME).open("ab") as f:
        f.write(b"\x40\x00\x00\x00garbage")  # a record cut short by the crash
    s = open_memory(memory_index, tmp_path)
    s.learn([click(2, "q", catalog[1].id)])
    s.wal.close()
    again = open_memory(memory_index, tmp_path)
    assert set(again.seen) == {"e1", "e2"}


def test_snapshot_truncates_the_log_and_restores(memory_index: Path, catalog: list[Entity], tmp_path: Path) -> None:
    s = open_memory(memory_index, tmp_path, snapshot_every=3)
    for i in range(5):
        s.learn([click(i, "q", catalog[i].id)])
    assert (tmp_path / SNAPSHOT_NAME).exists()
    assert len(s.wal.replay()) == 2
    expected = state_of(s)
    s.wal.close()
    again = open_memory(memory_index, tmp_path)
    assert state_of(again) == expected and len(again.seen) == 5
    again.close()
    assert (tmp_path / WAL_NAME).stat().st_size == 0
    assert state_of(open_memory(memory_index, tmp_path)) == expected


def test_crash_between_snapshot_and_log_reset_counts_once(memory_index: Path, catalog: list[Entity],
                                                          tmp_path: Path) -> None:
    s = open_memory(memory_index, tmp_path)
    s.learn([click(i, "q", catalog[0].id) for i in range(4)])
    log = (tmp_path / WAL_NAME).read_bytes()
    s.close()
    (tmp_path / WAL_NAME).write_bytes(log)  # the snapshot landed, the reset did not
    again = open_memory(memory_index, tmp_path)
    assert again.observed["q"][0].impressions == 4


def test_damaged_snapshot_is_refused(memory_index: Path, catalog: list[Entity], tmp_path: Path) -> None:
    s = open_memory(memory_index, tmp_path)
    s.learn([click(1, "q", catalog[0].id)])
    s.close()
    path = tmp_path / SNAPSHOT_NAME
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(IndexFormatError, match="snapshot checksum mismatch"):
        open_memory(memory_index, tmp_path)


def test_default_state_dir_is_inside_the_index(memory_index: Path, tmp_path: Path) -> None:
    copy = tmp_path / "index"
    shutil.copytree(memory_index, copy)
    s = open_strategy(copy, "memory")
    assert s.describe()["state_dir"] == str(copy / "memory-state")


class TestMemoryContract(StrategyContract):
    strategy_name = "memory"
    matching_query = "rock"

    @pytest.fixture(scope="class")
    @classmethod
    def index_dir(cls, memory_index: Path) -> Path:
        return memory_index
