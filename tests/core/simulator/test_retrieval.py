from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.catalog import Entity
from core.query import Query
from core.simulator.retrieval import InProcessStrategies
from core.types import EventType, FeedbackEvent
from tests.core.simulator.conftest import STRATEGIES

QUERIES = ("love", "dance pop", "ed sheeran", "tayler swift", "pop remix", "happy edm", "2010s", "zzzz")


@pytest.fixture(scope="module")
def loaded(music_index: Path, tmp_path_factory: pytest.TempPathFactory) -> InProcessStrategies:
    return InProcessStrategies(music_index, STRATEGIES, 200, memory_state=tmp_path_factory.mktemp("memory"))


@pytest.mark.parametrize("name", ["lexical", "semantic", "attribute"])
def test_cached_lists_equal_a_direct_call(loaded: InProcessStrategies, name: str) -> None:
    """The cache slices one top-200 list per (strategy, text) for lexical and attribute (and keeps
    one list per quota for approximate semantic search): what a direct call returns."""
    for text in QUERIES:
        for quota in (10, 25, 50):
            direct = loaded.loaded[name].retrieve(Query(text=text), quota, None)
            ordinals, scores = loaded.top(name, text, quota)
            np.testing.assert_array_equal(ordinals, direct.ordinals, err_msg=f"{name} {text!r} {quota}")
            np.testing.assert_allclose(scores, direct.scores, rtol=1e-6)


def test_lists_and_target_hits(loaded: InProcessStrategies, music_slice: list[Entity]) -> None:
    lists = loaded.lists("ed sheeran", (10, 0, 25, 5))
    assert [lst.strategy for lst in lists] == ["lexical", "attribute", "memory"]
    assert len(lists[0].entity_ids) <= 10 and len(lists[1].entity_ids) <= 25
    first = loaded.ordinal[lists[0].entity_ids[0]]
    hits, returned = loaded.level_tables("ed sheeran", frozenset((first,)), (0, 10, 25))
    assert hits.shape == returned.shape == (4, 3) and hits[0].tolist() == [False, True, True]
    for s, name in enumerate(loaded.names):  # list sizes as the strategies return them, 0 at level 0
        assert returned[s].tolist() == [0] + [len(loaded.top(name, "ed sheeran", q)[0]) for q in (10, 25)]
    assert loaded.understand("ed sheeran") is loaded.understand("ed sheeran")


def test_a_recording_is_hit_by_any_of_its_copies(loaded: InProcessStrategies) -> None:
    """The target is a recording: a level holds it when it holds any copy. The semantic strategy's
    11th result, given as a copy of an entity no strategy returns, is found at level 25, not 10."""
    text = "ed sheeran"
    top25 = loaded.top("semantic", text, 25)[0].tolist()
    assert len(top25) > 10
    returned_anywhere = {o for name in loaded.names for o in loaded.top(name, text, 25)[0].tolist()}
    absent = next(o for o in range(len(loaded.ids)) if o not in returned_anywhere)
    hits, _ = loaded.level_tables(text, frozenset((absent, top25[10])), (0, 10, 25))
    assert hits[loaded.names.index("semantic")].tolist() == [False, False, True]
    assert not loaded.level_tables(text, frozenset((absent,)), (0, 10, 25))[0].any()


def test_memory_needs_a_state_directory(music_index: Path) -> None:
    with pytest.raises(ValueError, match="`memory_state` is required"):
        InProcessStrategies(music_index, STRATEGIES, 200)
    with pytest.raises(ValueError, match="`max_quota` must be >= 1"):
        InProcessStrategies(music_index, ("lexical",), 0)


def test_the_memory_strategy_is_asked_with_the_search_context(music_index: Path, tmp_path: Path) -> None:
    """Regression: the simulation asked the memory strategy with the text alone, so what it learned
    per context (core.memory.context) never reached a list. Jazz lovers played the first entity
    three times, one rock lover the second: a rock lover's top 1 is the second, anyone else's the first."""
    loaded = InProcessStrategies(music_index, ("memory",), 200, memory_state=tmp_path, clock=lambda: 1000.0)
    first, second = loaded.ids[0], loaded.ids[1]
    jazz, rock = {"affinity.jazz": "0.7"}, {"affinity.rock": "0.6", "hour": "23"}
    learner = loaded.learner()
    assert learner is not None
    learner.learn([FeedbackEvent(event_id=str(i), query_text="late night music", entity_id=entity,
                                 type=EventType.PLAY, value=1.0, timestamp=1000.0, context=context)
                   for i, (entity, context) in enumerate([(first, jazz)] * 3 + [(second, rock)])])
    assert loaded.lists("late night music", (1,), rock)[0].entity_ids == [second]
    assert loaded.lists("late night music", (1,))[0].entity_ids == [first]
    assert loaded.lists("late night music", (1,), {"affinity.pop": "0.9"})[0].entity_ids == [first]
    hits, _ = loaded.level_tables("late night music", frozenset((1,)), (1, 2), rock)
    assert hits.tolist() == [[True, True]]
    assert loaded.level_tables("late night music", frozenset((1,)), (1, 2))[0].tolist() == [[False, True]]
    loaded.close()
