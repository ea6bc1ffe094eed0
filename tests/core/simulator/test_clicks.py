from __future__ import annotations

import numpy as np
import pytest

from core.simulator.clicks import NO_ACTION, ClickConfig, ClickModel

SHOWN = np.arange(100, 110, dtype=np.int64)


def _stream(seed: int, n: int = 200) -> list[tuple[int, int, bool]]:
    model = ClickModel()
    rng = np.random.default_rng(seed)
    relevant = np.array([101, 103, 105], dtype=np.int64)
    return [(a.entity, a.rank, a.follow_up) for a in (model.act(SHOWN, relevant, 103, rng) for _ in range(n))]


def test_same_seed_same_actions_different_seed_different() -> None:
    assert _stream(1) == _stream(1)
    assert _stream(1) != _stream(2)


@pytest.mark.parametrize("decay", [0.0, 0.5, 1.0, 2.0])
def test_examination_curve_is_one_over_rank_to_the_decay(decay: float) -> None:
    model = ClickModel(ClickConfig(examination_decay=decay))
    np.testing.assert_allclose(model.examination, 1.0 / np.arange(1, 11) ** decay)
    assert model.examination[0] == 1.0
    assert np.all(np.diff(model.examination) <= 0)


@pytest.mark.parametrize("rank", [1, 2, 4, 8])
def test_click_rate_of_a_lone_attractive_target_follows_examination(rank: int) -> None:
    """Only the target attracts (P(A) = 1): it is clicked exactly when its rank is examined."""
    model = ClickModel(ClickConfig(target_attraction=1.0, relevant_attraction=0.0, irrelevant_attraction=0.0,
                                   follow_up=0.0))
    rng = np.random.default_rng(3)
    target = int(SHOWN[rank - 1])
    n = 4000
    clicks = sum(model.act(SHOWN, np.array([target]), target, rng).rank == rank for _ in range(n))
    assert clicks / n == pytest.approx(1.0 / rank, abs=4 * np.sqrt(0.25 / n))


def test_first_clicked_rank_wins_and_follow_up_reaches_the_target() -> None:
    always = ClickModel(ClickConfig(examination_decay=0.0, irrelevant_attraction=1.0))
    assert always.act(SHOWN, np.array([105]), 105, np.random.default_rng(0)).rank == 1
    never = ClickModel(ClickConfig(target_attraction=0.0, relevant_attraction=0.0, irrelevant_attraction=0.0,
                                   follow_up=1.0))
    action = never.act(SHOWN, np.array([999]), 999, np.random.default_rng(0))
    assert (action.entity, action.rank, action.follow_up) == (999, 0, True)
    silent = ClickModel(ClickConfig(target_attraction=0.0, relevant_attraction=0.0, irrelevant_attraction=0.0,
                                    follow_up=0.0))
    assert silent.act(SHOWN, np.array([999]), 999, np.random.default_rng(0)) == NO_ACTION


def test_affinity_scales_relevant_attraction_but_not_the_target() -> None:
    model = ClickModel()
    relevant = np.array([100, 101], dtype=np.int64)
    got = model.attraction(SHOWN[:3], relevant, 100, np.array([3.0, 2.0, 5.0]))
    np.testing.assert_allclose(got, [0.9, 0.6, 0.01])


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"shown": 0}, "`shown` must be >= 1"),
    ({"examination_decay": -1.0}, "`examination_decay` must be finite and >= 0"),
    ({"target_attraction": 1.5}, "`target_attraction` must be in"),
    ({"follow_up": -0.1}, "`follow_up` must be in"),
])
def test_invalid_config(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ClickConfig(**kwargs)  # type: ignore[arg-type]
