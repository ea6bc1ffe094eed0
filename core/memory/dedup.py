"""The memory strategy's dedup state: the event ids learned recently, each with the time it was
first learned, forgotten once older than a window (see MemoryConfig.dedup_window_s for why a window
is enough).

Stamps never decrease: an id is stamped with the newest time passed to `advance` so far, so the ids
are kept oldest first and expiring them pops from the front only (amortised O(1) per id, never a
scan of the whole set). A clock that goes backwards is treated as standing still until it passes
the newest stamp again: ids are then kept longer than the window, never forgotten early.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Iterator


class SeenEvents:
    """Event ids learned in the last `window_s` seconds (as of the newest stamp), oldest first.

    ids: event id -> stamp (seconds, the strategy's clock); `latest`: the newest stamp (-inf before
    the first one)."""

    def __init__(self, window_s: float) -> None:
        if not (math.isfinite(window_s) and window_s > 0):
            raise ValueError(f"`window_s` must be finite and > 0, but got {window_s}")
        self.window_s = window_s
        # OrderedDict rather than dict: popping a plain dict's first item repeatedly rescans the
        # deleted slots at its front (quadratic between resizes); OrderedDict pops it in O(1).
        self.ids: OrderedDict[str, float] = OrderedDict()
        self.latest = -math.inf

    def __contains__(self, event_id: object) -> bool:
        return event_id in self.ids

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def advance(self, now: float) -> float:
        """Move the stamp to `now` (or keep it, if `now` is older) and forget the ids stamped
        before stamp - window; returns the stamp that `add` now gives."""
        self.latest = max(self.latest, now)
        cutoff = self.latest - self.window_s
        ids = self.ids
        while ids:
            oldest = next(iter(ids.values()))
            if oldest >= cutoff:
                break
            ids.popitem(last=False)
        return self.latest

    def add(self, event_id: str) -> None:
        """Remember `event_id` with the current stamp; an id already remembered keeps its first stamp."""
        if event_id not in self.ids:
            self.ids[event_id] = self.latest

    def restore(self, rows: Iterable[tuple[str, float]]) -> None:
        """Add (event id, stamp) rows as `to_rows` wrote them, without forgetting any."""
        for event_id, at in rows:
            self.latest = max(self.latest, float(at))
            self.add(str(event_id))

    def to_rows(self) -> list[list[str | float]]:
        """[[event id, stamp], ...], oldest first (the order `restore` needs)."""
        return [[event_id, at] for event_id, at in self.ids.items()]
