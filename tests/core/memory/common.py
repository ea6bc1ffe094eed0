"""Helpers of the memory tests: open the strategy on a settable clock, make events, read its state."""

from __future__ import annotations

from pathlib import Path

from core.collection import Collection
from core.memory.index import MemoryStrategy
from core.types import EventType, FeedbackEvent

DAY = 86400.0
EVENT_TIME = 1000.0  # the timestamp of `click`'s events and the default clock of `open_memory`


class Clock:
    """A clock the test moves: `now` in seconds since the Unix epoch."""

    def __init__(self, now: float = EVENT_TIME) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def open_memory(index: Path, state: Path, clock: Clock | None = None, **options: object) -> MemoryStrategy:
    """The memory strategy of `index` with its state in `state`, recovered at `clock` (default: a
    clock standing at EVENT_TIME, so that the events' evidence has not decayed)."""
    return MemoryStrategy.load(index, Collection.load(index), {"state_dir": str(state), **options},
                               clock=clock or Clock())


def click(n: int, query: str, entity: str, kind: EventType = EventType.CLICK, prefix: str = "e") -> FeedbackEvent:
    return FeedbackEvent(event_id=f"{prefix}{n}", query_text=query, entity_id=entity, type=kind,
                         timestamp=EVENT_TIME)


def state_of(s: MemoryStrategy) -> dict[str, dict[int, list[float]]]:
    """The observed pairs: query key -> entity ordinal -> PairStats.to_list()."""
    return {k: {o: st.to_list() for o, st in v.items()} for k, v in s.observed.items()}
