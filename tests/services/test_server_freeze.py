"""services.server.freeze_loaded: what a server loaded is out of the garbage collector's reach."""

from __future__ import annotations

import gc

from services.server import freeze_loaded


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
