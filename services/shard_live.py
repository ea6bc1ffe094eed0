"""A shard's live catalog: tails the catalog log of the event store and applies it (core.live_shard).

`ltrr shard --store URL` (the broker's store URL) makes a shard live: at start-up, before it
reports SERVING, it opens its base (core.live_shard.open_live_shard) and applies every record of
the log after the base's position; then a tail task reads `catalog_after(applied, 1000)` every
DEFAULT_CATALOG_POLL_S (at once again while records keep coming) and applies each read as one
batch. Reading and applying run on the tail's own thread (the store's SQLite connection belongs
to it), never on the event loop nor on the search worker, so searches keep running; a batch
becomes visible to searches at once, entirely (core.live_shard.LiveShard.reading). A lexical
merge (when the delta exceeds the shard's merge threshold, or request_merge()) runs on a third
thread. The semantic shard's encoding of a batch (before the lock) and the merges run on threads
of lower CPU priority, so that on a busy host the searches get the CPU first and a write's
visibility waits instead of a search: the merge thread `background_nice` (DEFAULT_BACKGROUND_NICE)
nicer, the encoding thread under Linux's SCHED_IDLE policy (it runs only when no other thread of
the host wants the CPU; a woken search thread takes the CPU from it at once, where a nice value
only shrinks its share). SCHED_IDLE suits the encoding because ONNX Runtime and usearch release the
GIL while they work: a starved thread holding the GIL would stall its process's searches, which is
why the merge (Python, holding the GIL for tens of ms at a time) is only niced. background_nice 0
leaves both at the searches' priority. A read that fails (the store
unreachable) is logged and retried after RETRY_S; a batch that fails to apply stops the shard
applying for good (it may be half-applied: core.live_base), logged every RETRY_S until the shard
is restarted. Either way the shard keeps serving what it applied, and CatalogPosition shows it
stalling.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import cast

from core.catalog_log import CatalogLog, CatalogRecord
from core.eventstore import open_store
from core.live_base import DEFAULT_BACKGROUND_NICE
from core.live_shard import DEFAULT_CATALOG_BATCH, LiveShard, LiveShardConfig, catch_up, open_live_shard
from services import metrics_shard
from services.metrics import gauge_value
from services.server import Refreezer, freeze_loaded
from services.tailing import cancelled

log = logging.getLogger("ltrr.shard.catalog")
DEFAULT_CATALOG_POLL_S = 0.05
RETRY_S = 1.0
# A live shard freezes what its writes built every this many applied writes (CatalogTail). The
# objects writes create (the attribute vocabulary's values and lists, the lexical delta's entities)
# live on, so unfrozen they made every full collection longer: in the demo cluster the attribute
# shard's reached 31.9-49.7 ms during writes and merges, stalling its searches. In process, 4,000
# writes in batches of 10 (the attribute shard; NOTES.md, session 14): 51k tracked objects left
# unfrozen, a full collection 17.3 ms, without; with a freeze every 500 writes, each freeze's
# collection at most 4.4 ms (mean 1.9), 7k objects left, a full collection 2.6 ms. Frozen objects
# are still freed when their last reference goes; repeated changes of the same 1,000 entities
# left the same number of objects alive with and without the freezes (lexical, attribute, memory).
FREEZE_WRITES = 500


def lower_priority(nice: int, *, idle: bool = False) -> Callable[[], None]:
    """A thread initializer that lowers its thread's CPU priority: `nice` added to its nice value,
    or with idle=True the SCHED_IDLE policy instead (module docstring); nice 0: neither. Linux sets
    both per thread; elsewhere they would apply to the whole process, so it logs and does nothing."""

    def initializer() -> None:
        if nice == 0:
            return
        if not hasattr(os, "setpriority") or os.uname().sysname != "Linux":
            log.warning("background_nice %d ignored: thread priorities are Linux-only", nice)
            return
        if idle:
            try:
                os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # 0: the calling thread
                return
            except OSError as err:  # a sandbox may forbid it: a nice value instead
                log.warning("SCHED_IDLE refused (%s); adding %d to the nice value instead", err, nice)
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))

    return initializer


def store_log(url: str) -> Callable[[], CatalogLog]:
    """Opens the catalog log of the event store at `url` (core.eventstore.open_store)."""
    return lambda: cast(CatalogLog, open_store(url))


class CatalogTail:
    """Owns the live shard, its log reader, the tail task, the encoding thread and the merge thread.
    open_log is called once, on the tail's thread (the only thread that uses the log); background_nice:
    added to the merge thread's nice value; not 0: the encoding thread runs under SCHED_IDLE
    (module docstring); freeze: freeze what start-up loaded, its large dicts pinned
    (services.server.pin_large_dicts), before the tail starts writing to them, and again (a full
    collection, then a freeze) once FREEZE_WRITES more writes were applied, at the first read of
    the log after that with no rpc of the shard in flight, so that what the writes built leaves the
    collector's reach too (a server process does: services.shard.serve; it freezes the whole
    process)."""

    def __init__(self, config: LiveShardConfig, open_log: Callable[[], CatalogLog],
                 poll_s: float = DEFAULT_CATALOG_POLL_S, background_nice: int = DEFAULT_BACKGROUND_NICE, *,
                 freeze: bool = False) -> None:
        if poll_s <= 0:
            raise ValueError(f"`poll_s` must be > 0, but got {poll_s}")
        if not 0 <= background_nice <= 19:
            raise ValueError(f"`background_nice` must be in [0, 19], but got {background_nice}")
        self.config = config
        self.poll_s = poll_s
        self._open_log = open_log
        self._log: CatalogLog | None = None
        self.live: LiveShard | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ltrr-catalog")
        self.preparer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ltrr-encode",
                                           initializer=lower_priority(background_nice, idle=True))
        self.merger = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ltrr-merge",
                                         initializer=lower_priority(background_nice))
        self._merging: Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self.failures = 0
        strategy = config.strategy
        self.refreezer = (Refreezer(FREEZE_WRITES,
                                    idle=lambda: gauge_value(metrics_shard.INFLIGHT, strategy=strategy) == 0)
                          if freeze else None)

    def _read(self, position: int, limit: int) -> list[CatalogRecord]:
        if self._log is None:
            self._log = self._open_log()
        return list(self._log.catalog_after(position, limit))

    def _start_up(self) -> LiveShard:
        started = time.perf_counter()
        live = open_live_shard(self.config)
        replayed = catch_up(live, self._read)
        live.strategy.warm_up()
        if self.refreezer is not None:
            freeze_loaded(pin_dicts=True)  # here: the tail, the only writer, has not started
        log.info("live %s shard at catalog position %d (base %d, %d records replayed) in %.2fs",
                 self.config.strategy, live.applied_position, live.base_position, replayed,
                 time.perf_counter() - started)
        return live

    async def load(self) -> LiveShard:
        """Open the base and replay the log (blocking work on the tail's thread), then start tailing."""
        live = await asyncio.get_running_loop().run_in_executor(self.executor, self._start_up)
        self.live = live
        self._task = asyncio.create_task(self._run(), name=f"catalog tail of the {self.config.strategy} shard")
        return live

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                applied = await loop.run_in_executor(self.executor, self._once)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.failures += 1
                log.exception("applying the catalog log failed; retrying in %.1fs", RETRY_S)
                await asyncio.sleep(RETRY_S)
                continue
            if not applied:
                await asyncio.sleep(self.poll_s)

    def _once(self) -> int:
        """One read and apply (on the tail's thread); starts a merge when the shard wants one."""
        live = self.live
        if live is None:
            return 0
        records = self._read(live.applied_position, DEFAULT_CATALOG_BATCH)
        applied = live.apply(records, self._background)
        if applied:
            metrics_shard.CATALOG_APPLY_LATENCY.labels(self.config.strategy).observe(live.last_apply_s * 1000)
        if self.refreezer is not None:
            self.refreezer.note(applied)
            self.refreezer.freeze_if_idle()  # once due, tried after every read until no rpc is in flight
        if live.merge_wanted():
            self.request_merge()
        return applied

    def _background(self, work: Callable[[], None]) -> None:
        self.preparer.submit(work).result()

    def request_merge(self) -> bool:
        """Start a merge on the merge thread unless one is running; False when one is."""
        if self.live is None or (self._merging is not None and not self._merging.done()):
            return False
        self._merging = self.merger.submit(self._merge)
        return True

    def _merge(self) -> None:
        live = self.live
        if live is None:
            return
        started = time.perf_counter()
        try:
            if live.merge():
                freeze_loaded()  # the new base's structures, like the first one's (services.server)
                log.info("merged the %s shard's base at catalog position %d in %.2fs", self.config.strategy,
                         live.base_position, time.perf_counter() - started)
        except Exception:
            self.failures += 1
            log.exception("the merge failed; the current base keeps serving")

    def _close_log(self) -> None:
        """On the tail's thread, which opened it (SQLite connections belong to their thread)."""
        close = getattr(self._log, "close", None)
        if callable(close):
            close()

    async def close(self) -> None:
        await cancelled(self._task)
        await asyncio.get_running_loop().run_in_executor(self.executor, self._close_log)
        self.executor.shutdown(wait=True)
        self.preparer.shutdown(wait=True)
        self.merger.shutdown(wait=True)
        if self.live is not None:
            self.live.close()
