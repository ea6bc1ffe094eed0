"""New releases in the simulator (core.simulator.releases, core.simulator.release_metrics): a held-back
track is found by no strategy before its release and by each one right after; the searches and
the schedule are fixed by the seed; every plan sees the same releases at the same search counts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from core.catalog import Entity
from core.indexing import build_index
from core.simulator.metrics import Records
from core.simulator.policies import PolicySpec, standard_policies
from core.simulator.release_metrics import ReleaseTracker, release_measures
from core.simulator.releases import (
    AnswerCaches,
    LiveCatalog,
    ReleaseConfig,
    Releases,
    go_live,
    hold_back,
    release_searches,
    run_with_releases,
)
from core.simulator.retrieval import InProcessStrategies
from core.simulator.runner import EXPERIMENT_LEVELS, ExperimentConfig
from core.simulator.users import Intent, SimSearch, SimulatorConfig
from tests.core.simulator.conftest import STRATEGIES

CONFIG = ReleaseConfig(releases=4, first_at=10, every=15, share=0.3)


@pytest.fixture(scope="module")
def releases(music_slice: list[Entity]) -> Releases:
    return hold_back(music_slice, CONFIG)


@pytest.fixture(scope="module")
def base_index(tmp_path_factory: pytest.TempPathFactory, releases: Releases) -> Path:
    root = tmp_path_factory.mktemp("release-index")
    build_index(list(releases.base), root, STRATEGIES,
                {"lexical": {"fields": "title^2,artist^1.5,album^0.5", "progress": False},
                 "semantic": {"encoder": "hashing", "cache": str(tmp_path_factory.mktemp("emb")), "progress": False}})
    return root


def test_hold_back_is_seeded_and_keeps_the_rest_in_order(music_slice: list[Entity], releases: Releases) -> None:
    again = hold_back(music_slice, CONFIG)
    assert [e.id for e in again.released] == [e.id for e in releases.released]
    other = hold_back(music_slice, dataclasses.replace(CONFIG, seed=1))
    assert [e.id for e in other.released] != [e.id for e in releases.released]
    held = {e.id for e in releases.released}
    assert [e.id for e in releases.base] == [e.id for e in music_slice if e.id not in held]
    assert len(held) == 4 and releases.at == (10, 25, 40, 55)
    assert [e.id for e in releases.entities()[len(releases.base):]] == [e.id for e in releases.released]


def test_searches_are_fixed_by_the_seed(releases: Releases) -> None:
    def key(searches: list[SimSearch]) -> list[tuple[int, str, int, int, tuple[tuple[str, str], ...]]]:
        return [(s.intent, s.text, s.target, s.user, tuple(sorted(s.context.items()))) for s in searches]

    _, first = release_searches(releases, CONFIG, SimulatorConfig(seed=4), 120)
    _, again = release_searches(releases, CONFIG, SimulatorConfig(seed=4), 120)
    _, other = release_searches(releases, CONFIG, SimulatorConfig(seed=5), 120)
    assert key(first) == key(again) and key(first) != key(other)
    n_base = len(releases.base)
    for t, s in enumerate(first):
        if s.target >= n_base:  # a release is wanted only from its release on
            assert t >= releases.at[s.target - n_base]
    wanted = {s.target - n_base for s in first if s.target >= n_base}
    assert wanted == {0, 1, 2, 3}  # share 0.3 over 110 searches: every release is searched for
    assert all(s.target < n_base for s in first[:10])


def strategy_hits(live: LiveCatalog, text: str, ordinal: int) -> dict[str, bool]:
    """Which strategy's top 200 for `text` holds `ordinal` (through the run's answer caches)."""
    hits, _ = live.strategies.level_tables(text, {ordinal}, EXPERIMENT_LEVELS)
    return {name: bool(hits[s].any()) for s, name in enumerate(live.strategies.names)}


def test_a_release_is_found_by_each_strategy_only_after_it(base_index: Path, releases: Releases,
                                                           tmp_path: Path) -> None:
    """Also guards the answer caches: the same text asked before and after a release must not get
    the cached pre-release answer (InProcessStrategies.version)."""
    strategies = InProcessStrategies(base_index, STRATEGIES, max(EXPERIMENT_LEVELS), memory_state=tmp_path / "m")
    try:
        live = go_live(strategies, list(releases.base))
        for i, e in enumerate(releases.released):
            o = releases.ordinal(i)
            queries = {"lexical": e.fields["title"], "attribute": e.fields["artist"],
                       "semantic": f"{e.fields['title']} {e.fields['artist']}", "memory": e.fields["title"]}
            before = {name: strategy_hits(live, text, o)[name] for name, text in queries.items()}
            assert not any(before.values()) and e.id not in strategies.ordinal
            live.release([e])
            after = {name: strategy_hits(live, text, o)[name] for name, text in queries.items()}
            assert all(after.values()), (e.fields, after)
            assert strategies.ids[o] == e.id and strategies.version == i + 1
        with pytest.raises(ValueError, match="must be new ids"):
            live.release([releases.released[0]])
    finally:
        strategies.close()


def test_every_plan_sees_the_same_releases_at_the_same_searches(base_index: Path, releases: Releases,
                                                                tmp_path: Path) -> None:
    config = ExperimentConfig(searches=70, seed=3)
    users, searches = release_searches(releases, CONFIG, SimulatorConfig(seed=3), config.searches)
    specs = {s.name: s for s in standard_policies(STRATEGIES, config.levels, config.budget)}
    caches = AnswerCaches()
    seen: dict[str, list[tuple[int, int, int, str]]] = {}
    for name in ("static-equal", "thompson", "oracle"):
        spec: PolicySpec = specs[name]
        steps: list[tuple[int, int, int, str]] = []
        seen[name] = steps

        def on_step(t: int, live: LiveCatalog, steps: list[tuple[int, int, int, str]] = steps) -> None:
            steps.append((t, len(live.collection), live.strategies.version, live.collection.ids[-1]))

        run_with_releases(spec, config, base_index, STRATEGIES, releases, searches, users,
                          memory_state=tmp_path / name, caches=caches, on_step=on_step)
    assert seen["static-equal"] == seen["thompson"] == seen["oracle"]
    n_base = len(releases.base)
    for t, size, version, last in seen["thompson"]:
        out = sum(a <= t for a in releases.at)
        assert size == n_base + out and version == out
        assert last == (releases.released[out - 1].id if out else releases.base[-1].id)


def search(target: int) -> SimSearch:
    return SimSearch(intent=Intent.SPEARFISHING, user=0, text="x", context={},
                     relevant=np.array([target], dtype=np.int64), target=target)


def test_measures_count_searches_to_the_first_hit() -> None:
    base = tuple(Entity(id=f"b{i}", fields={"title": f"t{i}"}) for i in range(3))
    new = tuple(Entity(id=f"n{i}", fields={"title": f"n{i}"}) for i in range(2))
    releases = Releases(base=base, released=new, at=(2, 4))
    # searches 0..9; release 0 (ordinal 3) out at 2, release 1 (ordinal 4) at 4
    targets = [0, 1, 3, 2, 3, 3, 4, 0, 0, 3]
    found = [1, 0, 0, 1, 0, 1, 0, 0, 1, 1]
    rec = Records.empty("p", ("a", "b"), len(targets))
    rec.target_found[:] = np.array(found, dtype=bool)
    rec.quotas[:] = np.array([[t, 10 * t] for t in range(len(targets))], dtype=np.int16)
    rec.shown[4, 3] = rec.shown[6, 0] = rec.shown[5, 1] = 3  # release 0 shown at 4 and 5 (not 6: another target)
    tracker = ReleaseTracker(releases, len(targets), 2)
    m = release_measures(rec, [search(t) for t in targets], releases, tracker, windows=(0, 3))
    # release 0 is wanted at 2 (miss), 4 (miss), 5 (hit), 9: 3 tries, search 5 is the 4th since its
    # release; release 1 is wanted at 6 only, missed
    assert m.tries.tolist() == [3, 0] and m.elapsed.tolist() == [4, 0] and m.targeted.tolist() == [4, 1]
    assert m.first_hit()["never"] == 1 and m.first_hit()["tries_mean"] == 3.0
    young, old = m.windows  # ages 0-2: searches 2, 4, 6; ages 3+: 5, 9
    assert young.searches == 3 and young.hit_rate == 0.0 and young.quota.tolist() == [4.0, 40.0]
    assert young.top10 == pytest.approx(1 / 3)
    assert old.searches == 2 and old.hit_rate == 1.0 and old.hi is None and old.top10 == 0.5
    assert m.other.searches == 3 and m.other.hit_rate == pytest.approx(2 / 3)  # 3 and 8 hit, 7 missed
