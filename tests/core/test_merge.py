from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.merge import StrategyList, merge

NAMES = ("lexical", "semantic", "memory")


def lst(name: str, ids: list[str]) -> StrategyList:
    return StrategyList(name, ids, np.linspace(10, 1, num=len(ids), dtype=np.float32))


def test_union_keeps_provenance() -> None:
    m = merge([lst("lexical", ["a", "b", "c"]), lst("memory", ["c", "d"])], NAMES)
    assert m.entity_ids == ["a", "c", "b", "d"]  # best rank first; ties by column
    c = m.entity_ids.index("c")
    assert m.ranks[c].tolist() == [3, 0, 1]
    assert np.isnan(m.scores[c, 1]) and m.scores[c, 2] == 10.0
    assert m.found_by(c) == ["lexical", "memory"]


def test_no_lists_is_empty() -> None:
    m = merge([], NAMES)
    assert len(m) == 0 and m.ranks.shape == (0, 3)


@pytest.mark.parametrize(("lists", "match"), [
    ([lst("magic", ["a"])], "not one of"),
    ([lst("lexical", ["a"]), lst("lexical", ["b"])], "appears twice"),
])
def test_bad_lists(lists: list[StrategyList], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        merge(lists, NAMES)


@given(st.lists(st.lists(st.sampled_from("abcdefghij"), unique=True, max_size=10), min_size=3, max_size=3))
def test_merge_is_the_union_and_ranks_round_trip(id_lists: list[list[str]]) -> None:
    lists = [lst(n, ids) for n, ids in zip(NAMES, id_lists, strict=True)]
    m = merge(lists, NAMES)
    assert set(m.entity_ids) == set().union(*id_lists) and len(set(m.entity_ids)) == len(m)
    for j, ids in enumerate(id_lists):
        for rank, eid in enumerate(ids, start=1):
            assert m.ranks[m.entity_ids.index(eid), j] == rank
        assert (m.ranks[:, j] > 0).sum() == len(ids)
    best = [int(r[r > 0].min()) for r in m.ranks]
    assert best == sorted(best)
