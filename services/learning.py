"""How a broker's policy learns: every feedback event of the store, in position order, one path.

Several brokers share one event store (PostgreSQL). Each applies every event of the store, its own
and the others', in the store's position order, through one function (`catch_up`: the events after
the policy's position read on the log's thread, then SearchPipeline.replay on the event loop), so
that two brokers at the same position have applied the same events in the same order and hold the
same parameters (core.policy.digest). There is no second, "live" learning path that could drift:
a broker's own Feedback stores its event and then catches up to it before it answers (so it has
taught the policy when acknowledged, as before), and a background tail catches up every
`interval_s` with what other brokers stored. Start-up replays from the snapshot's position the same
way (`replay_all`, on the log's thread before serving). Positions increase in commit order
(core.eventstore), so reading `position > applied` never skips an event committed later.

applied_events counts the events applied since the policy was empty (warm start excluded): the
policy version a decision records (DecisionRecord.policy_version) and Describe reports.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from core.errors import NotFoundError
from core.eventlog import DecisionRecord, EventRecord
from core.eventstore import EventStore
from core.pipeline import SearchPipeline
from services.decisions import DecisionWriter
from services.tailing import cancelled, tail

log = logging.getLogger("ltrr.learning")
DEFAULT_TAIL_INTERVAL_S = 0.15  # other brokers' feedback reaches this policy within ~this
TAIL_BATCH = 500  # events read per round trip; a long catch-up yields to searches between batches

Item = tuple[int, DecisionRecord, EventRecord, list[EventRecord]]


def fetch_after(store: EventStore, position: int, limit: int | None) -> tuple[list[Item], int, int]:
    """On the log's thread: (position, decision, event, the decision's events before it) of the
    events after `position`, in position order, at most `limit` (None: all); with the last
    position read and how many events were read (an event whose decision retention deleted in
    between is read and passed over)."""
    out: list[Item] = []
    decisions: dict[str, DecisionRecord] = {}
    rows = store.events_after(position, limit)
    for at, event in rows:
        record = decisions.get(event.decision_id)
        if record is None:
            try:
                record = decisions[event.decision_id] = store.decision(event.decision_id)
            except NotFoundError:
                continue
        out.append((at, record, event, store.events(event.decision_id, before=at)))
    return out, rows[-1][0] if rows else position, len(rows)


class Learner:
    """The position and count of events a broker's policy has applied, and the task that keeps them
    current (module docstring). on_applied(position, n): called on the event loop after n events
    up to `position` were applied (the broker's outbox and snapshot schedule listen)."""

    def __init__(self, writer: DecisionWriter, *, position: int = 0, applied: int = 0,
                 interval_s: float = DEFAULT_TAIL_INTERVAL_S,
                 on_applied: Callable[[int, int], None] | None = None) -> None:
        self.writer, self.position, self.applied = writer, position, applied
        self.interval_s = interval_s
        self.on_applied = on_applied
        self.lock = asyncio.Lock()
        self.task: asyncio.Task[None] | None = None

    def replay_all(self, pipeline: SearchPipeline) -> tuple[int, int]:
        """On the log's thread, before serving: apply every event after `position`. (learned, passed over)."""
        learned = foreign = 0
        while True:  # TAIL_BATCH events in memory at a time, not the whole log after the snapshot
            items, last, read = fetch_after(self.writer.log, self.position, TAIL_BATCH)
            n, m = self._apply(pipeline, items, last, read)
            learned, foreign = learned + n, foreign + m
            if read < TAIL_BATCH:
                return learned, foreign

    def _apply(self, pipeline: SearchPipeline, items: list[Item], last: int, read: int) -> tuple[int, int]:
        learned, foreign = pipeline.replay((record, event, earlier) for _, record, event, earlier in items)
        self.position, self.applied = last, self.applied + read
        return learned, foreign

    async def catch_up(self, pipeline: SearchPipeline) -> int:
        """Apply every event stored after `position` (reads on the log's thread, learning on the
        event loop, so searches never see a half-applied event); the number applied.
        UnavailableError when the store is unreachable (nothing applied past what was read)."""
        total = 0
        async with self.lock:
            while True:
                items, last, read = await self.writer.run(fetch_after, self.writer.log, self.position, TAIL_BATCH)
                self._apply(pipeline, items, last, read)  # no await in between: position and parameters move together
                total += read
                if read and self.on_applied is not None:
                    self.on_applied(self.position, read)
                if read < TAIL_BATCH:
                    return total

    def start(self, pipeline: SearchPipeline) -> None:
        """Tail the store every interval_s (only worth it when other brokers write to it)."""
        self.task = asyncio.get_running_loop().create_task(self._tail(pipeline), name="ltrr-learning-tail")

    async def _tail(self, pipeline: SearchPipeline) -> None:
        await tail(lambda: self.catch_up(pipeline), self.interval_s, "the event store", log)

    async def stop(self) -> None:
        await cancelled(self.task)
        self.task = None
