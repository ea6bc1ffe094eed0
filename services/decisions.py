"""The broker's one writer to its event store: decisions by group commit, events one by one.

The store is core.eventstore's (a SQLite file or a PostgreSQL database shared by several brokers).
Every call runs on one thread that owns the store's connection, in submission order, so a decision
is always stored before any feedback on it. `store(record)` returns once the record is durable:
records arriving while a commit runs wait for the next one and share its fsync (group commit), so
the cost per search falls as load rises. A failed commit (disk full, database busy past its
timeout, an I/O error, the PostgreSQL server unreachable) is retried `retries` times with
exponential backoff, counted in metrics and logged; if it still fails, every search in the batch
fails with UNAVAILABLE rather than answering with a decision id nobody could join.

Retention (core.eventlog.RetentionConfig) runs on the same thread every `compact_every` commits,
a bounded amount of work each time.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import UnavailableError
from core.eventlog import DecisionRecord, EventRecord, RetentionConfig
from core.eventlog_retention import DEFAULT_COMPACT_ROWS
from core.eventstore import EventStore, open_store
from services import metrics
from services.outbox import CURSOR as OUTBOX_CURSOR

log = logging.getLogger("ltrr.decisions")
DEFAULT_RETRIES = 3
DEFAULT_BACKOFF_S = 0.05
DEFAULT_COMPACT_EVERY = 1000
MAX_PASSES = 5


@dataclass(frozen=True, kw_only=True)
class WriterConfig:
    """retries: extra attempts of a failed commit; backoff_s: the wait before the first retry
    (doubling); with the defaults a search waits at most ~0.35 s for a failing disk before
    UNAVAILABLE. compact_every: retention runs after this many commits; compact_rows: the most
    decision rows each retention rule touches per pass (core.eventlog_retention: a few ms of work),
    up to MAX_PASSES passes while there is more to do."""

    retries: int = DEFAULT_RETRIES
    backoff_s: float = DEFAULT_BACKOFF_S
    compact_every: int = DEFAULT_COMPACT_EVERY
    compact_rows: int = DEFAULT_COMPACT_ROWS

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff_s < 0:
            raise ValueError(f"`retries` and `backoff_s` must be >= 0, but got {self.retries}, {self.backoff_s}")
        if self.compact_every < 1 or self.compact_rows < 1:
            raise ValueError(f"`compact_every` and `compact_rows` must be >= 1, but got {self.compact_every}, "
                             f"{self.compact_rows}")


Pending = tuple[DecisionRecord, asyncio.Future[None]]


class DecisionWriter:
    """The event store at `url` (core.eventstore: a SQLite path or a PostgreSQL URL) and its one
    writer thread (module docstring)."""

    def __init__(self, url: str | Path, config: WriterConfig, retention: RetentionConfig) -> None:
        self.config, self.retention = config, retention
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ltrr-eventlog")
        try:
            self.log: EventStore = self.executor.submit(open_store, url).result()
        except BaseException:  # a damaged log (StateError), an unreachable server: no thread left behind
            self.executor.shutdown(wait=True)
            raise
        self.pending: list[Pending] = []
        self.lock = threading.Lock()
        self.commits = 0

    async def store(self, record: DecisionRecord) -> None:
        """Return once `record` is durable; UnavailableError if it cannot be stored."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        with self.lock:
            self.pending.append((record, done))
            first = len(self.pending) == 1
        if first:
            self.executor.submit(self._commit, loop)
        await done

    def _commit(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the writer thread: store every pending record in one transaction, with retries."""
        with self.lock:
            batch, self.pending = self.pending, []
        error: Exception | None = None
        for attempt in range(self.config.retries + 1):
            try:
                self.log.record_decisions([record for record, _ in batch])
                error = None
                break
            except (sqlite3.Error, OSError, UnavailableError) as e:
                error = e
                if attempt < self.config.retries:
                    metrics.DECISION_WRITE_RETRIES.inc()
                    log.warning("storing %d decisions failed (%s); retry %d of %d", len(batch), e, attempt + 1,
                                self.config.retries)
                    time.sleep(self.config.backoff_s * 2 ** attempt)
            except Exception as e:  # not worth retrying (a bug, a rejected row): still settle every search
                log.exception("storing %d decisions failed", len(batch))
                error = e
                break
        if error is not None:
            metrics.DECISION_WRITE_FAILURES.inc(len(batch))
            log.error("storing %d decisions failed after %d retries (%s); their searches fail with UNAVAILABLE",
                      len(batch), self.config.retries, error)
        for _, done in batch:
            loop.call_soon_threadsafe(_settle, done, error)
        self.commits += 1
        if error is None and self.commits % self.config.compact_every == 0:
            self._compact()

    def _compact(self) -> None:
        """Retention passes until nothing is left to do (each bounded by compact_rows), at most
        MAX_PASSES per call; the rest waits for the next call."""
        for _ in range(MAX_PASSES):
            try:
                report = self.log.compact(time.time(), self.retention, max_rows=self.config.compact_rows)
            except (sqlite3.Error, OSError, UnavailableError) as e:
                log.warning("event log retention failed (%s); retried after the next %d commits", e,
                            self.config.compact_every)
                return
            metrics.LOG_COMPACTED.inc(report.compacted + report.deleted_decisions)
            if report.last_deleted_event > self.log.cursor(OUTBOX_CURSOR):
                log.warning("retention deleted feedback the memory shard had not acknowledged (up to position %d): "
                            "the shard has been unreachable for longer than the log keeps events",
                            report.last_deleted_event)
            if not report.more:
                return

    def record_event(self, event: EventRecord) -> int:
        """On the writer thread: store the event; its log position, 0 for a duplicate."""
        return self.log.record_events([event])[0]

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run fn(*args) on the writer thread, after everything submitted before it."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def close(self) -> None:
        """Finish what was submitted, then close the log."""
        self.executor.submit(lambda: None).result()
        self.executor.shutdown(wait=True)
        self.log.close()


def _settle(done: asyncio.Future[None], error: Exception | None) -> None:
    if done.cancelled():
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(UnavailableError(f"the decision could not be stored ({error}); retry the search"))
