"""services.server.freeze_loaded: what a server loaded is out of the garbage collector's reach."""

from __future__ import annotations

import gc

import pytest

from services.server import PIN_MIN_ITEMS, Refreezer, freeze_loaded, pin_large_dicts


def test_freeze_loaded_moves_loaded_objects_out_of_collection() -> None:
    loaded = [{"value": i} for i in range(10_000)]  # an index's Python structures, say
    try:
        freeze_loaded()
        frozen = gc.get_freeze_count()
        assert frozen >= len(loaded)
        assert not any(o is loaded for o in gc.get_objects())  # the frozen are not tracked for collection
        later = [[i] for i in range(100)]
        assert any(o is later for o in gc.get_objects())  # what comes later is collected as usual
    finally:
        gc.unfreeze()


def test_a_large_untracked_dict_is_pinned_and_stays_out_of_collection_after_inserts() -> None:
    """A dict of tuples of numbers, which a full collection untracks: without the pin a later insert
    of a new tuple tracks it again, in the youngest generation; pinned, it is frozen with the rest
    and stays out of every collection, its contents unchanged."""
    by_value: dict[str, tuple[int, ...]] = {f"v{i}": (i, i + 1) for i in range(PIN_MIN_ITEMS)}
    by_key: dict[tuple[str, ...], int] = {("field", f"name {i}"): i for i in range(PIN_MIN_ITEMS)}
    small = {f"s{i}": (i,) for i in range(10)}
    holder = [by_value, by_key, small]
    before = (dict(by_value), dict(by_key))
    try:
        gc.collect()
        assert not any(gc.is_tracked(d) for d in holder)
        assert pin_large_dicts() >= 2
        assert gc.is_tracked(by_value) and gc.is_tracked(by_key) and not gc.is_tracked(small)
        assert (by_value, by_key) == before
        gc.freeze()
        by_value["new"] = tuple([1, 2])  # made at run time, so tracked (a literal is a constant)
        by_key[tuple(["field", "new"])] = 3
        young = {id(o) for o in gc.get_objects()}
        assert id(by_value) not in young and id(by_key) not in young
    finally:
        gc.unfreeze()


def test_without_the_pin_an_insert_puts_the_whole_dict_back_in_collection() -> None:
    """What the pin prevents (CPython's dict tracking), so that the test above can fail."""
    by_value: dict[str, tuple[int, ...]] = {f"v{i}": (i, i + 1) for i in range(PIN_MIN_ITEMS)}
    try:
        gc.collect()
        gc.freeze()
        assert not gc.is_tracked(by_value)
        by_value["new"] = tuple([1, 2])
        assert any(o is by_value for o in gc.get_objects(generation=0))
    finally:
        gc.unfreeze()


def test_a_refreezer_freezes_once_enough_events_happened_and_the_process_is_idle() -> None:
    idle = [False]
    refreezer = Refreezer(3, idle=lambda: idle[0])
    built = [[i] for i in range(100)]  # what served requests built, say
    try:
        assert not refreezer.note(2) and not refreezer.freeze_if_idle()  # not due
        assert refreezer.note() and not refreezer.freeze_if_idle()  # due, but busy
        assert any(o is built for o in gc.get_objects())
        idle[0] = True
        assert refreezer.freeze_if_idle() and refreezer.freezes == 1 and refreezer.pending == 0
        assert not any(o is built for o in gc.get_objects())
        later = [[1]]
        assert not refreezer.freeze_if_idle()  # nothing counted since
        assert any(o is later for o in gc.get_objects())
    finally:
        gc.unfreeze()


def test_a_refreezer_needs_a_positive_period() -> None:
    with pytest.raises(ValueError, match="`every` must be >= 1"):
        Refreezer(0)
