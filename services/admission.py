"""Admission control and deadlines: what a server does when offered more than it can serve.

A `Limiter` bounds the requests a server holds at once (the broker's searches in flight; a shard's
requests queued on or running on its worker thread). A request that finds it full is refused with
OverloadedError (RESOURCE_EXHAUSTED) at once, or (the broker's searches) after a short bounded wait
for a place, so the caller learns within milliseconds and the accepted requests keep their latency.
A `Deadline` travels with an admitted request; the worker checks it when it actually picks the
request up and drops the request (DeadlineExceededError, DEADLINE_EXCEEDED) when its deadline passed
while it queued, or when less time is left than the work is expected to take (the limiter's moving
average of service times) and others wait behind it, so a late request never costs the requests
behind it anything.

The broker's searches do their CPU work on its one event loop, and a search arriving at a busy
broker waits for that loop before any handler sees it, where no count of searches in flight can
see it. So the broker also sheds on queue time, as CoDel does (Nichols and Jacobson, "Controlling
Queue Delay", 2012): `LoopLag` measures how late the loop runs a callback due now; while that delay
has stayed above a target (5 ms) for a whole interval (100 ms), new searches are refused. A
fixed bound alone must be tuned to the capacity (Little's law: searches in flight = rate x
latency), which moves with the machine, the encoder and the load beside it; the delay does not.
The same rule (`StandingDelay`) watches the broker's waits for a place: a Poisson burst waits up to
max_wait_ms for one, but while every wait has stood above the target for an interval, a search
that finds all places taken is refused at once. benchmarks.load and benchmarks/overload.py measure
these rules (README, "Deadlines and overload"; NOTES.md, session 16).

The counters (admitted, shed, expired, in_flight) are plain ints, read by metrics; a Limiter
belongs to one event loop (try_acquire/release on the loop thread), while `observe` and
`check` may run on the worker thread (a lost update of the average is harmless).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from core.errors import DeadlineExceededError, OverloadedError

# The broker: searches in flight at once (0 = unbounded). Little's law: the bound caps throughput
# at bound / search latency, and should be about capacity x latency; a larger one only makes the
# searches in flight share the broker's one core. The demo cluster on 2 cores serves 160 to 280
# searches/s at 13 to 35 ms (p50): 3 to 10. Measured (benchmarks.load, 20 s steps,
# 2026-12-05): 6 with a 10 ms wait refused 2.4 to 3.9% of searches at 240/s (p99 54 to 64 ms),
# 10 or 16 let the p99 reach 145 to 181 ms at 200 to 240/s; 8 with a 40 ms wait and the standing-wait
# rule below refused 0.1 to 0.6% at 240/s (p99 63 to 108 ms, the machine's noise). Raise it with
# the cores the broker has.
DEFAULT_BROKER_MAX_IN_FLIGHT = 8
# The broker: how long a search may wait for a place when all are taken (Poisson bursts at
# moderate load), before RESOURCE_EXHAUSTED; the wait is part of its budget. A wait that stands
# (every one above the lag target for an interval: a queue, not a burst) refuses at once instead.
DEFAULT_BROKER_MAX_WAIT_MS = 40.0
# A shard with one worker thread: requests running or queued on it (0 = unbounded). One running,
# three waiting: at the semantic shard's 7 to 25 ms per query that is a wait of at most ~75 ms,
# within the default 100 ms budget; more would queue work the broker has given up on.
DEFAULT_SHARD_MAX_QUEUE = 4
EWMA_WEIGHT = 0.1  # weight of the newest service time in the moving average
# CoDel's constants (RFC 8289): a standing delay above the target for a whole interval is a queue.
DEFAULT_LAG_TARGET_MS = 5.0
DEFAULT_LAG_INTERVAL_MS = 100.0
LAG_PROBE_S = 0.005  # how often LoopLag asks the loop for a callback


class StandingDelay:
    """CoDel's signal (RFC 8289) over delays measured one at a time: every delay above `target_ms`
    for `interval_ms` is a standing queue, a burst is not. `record` and `overloaded` are pure
    (clock passed in)."""

    def __init__(self, target_ms: float = DEFAULT_LAG_TARGET_MS, interval_ms: float = DEFAULT_LAG_INTERVAL_MS
                 ) -> None:
        if target_ms <= 0 or interval_ms <= 0:
            raise ValueError(f"`target_ms` and `interval_ms` must be > 0, but got {target_ms} and {interval_ms}")
        self.target_s, self.interval_s = target_ms / 1000, interval_ms / 1000
        self.lag_ms = 0.0  # the latest delay measured
        self.above_since: float | None = None  # the first of the current run of late measurements

    def record(self, lag_s: float, now: float) -> None:
        """One measurement: something due at now - lag_s happened at `now` (seconds, one clock)."""
        self.lag_ms = lag_s * 1000
        if lag_s <= self.target_s:
            self.above_since = None
        elif self.above_since is None:
            self.above_since = now

    def overloaded(self, now: float) -> bool:
        """Every measurement since one at least an interval ago was late. One long stall (a pause,
        a blocking call) is a burst, not a queue: the measurement after it decides."""
        return self.above_since is not None and now - self.above_since >= self.interval_s


class LoopLag(StandingDelay):
    """How late an asyncio loop runs a callback that is due: a standing delay above `target_ms`
    for `interval_ms` means work is queueing for the loop. `run` is the probe task on the loop."""

    async def run(self) -> None:
        """Probe the running loop until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + LAG_PROBE_S
            await asyncio.sleep(LAG_PROBE_S)
            now = loop.time()
            self.record(max(now - due, 0.0), now)


@dataclass(frozen=True, slots=True)
class Deadline:
    """When a request's caller stops waiting, on time.monotonic()'s clock; at=None: never."""

    at: float | None

    @classmethod
    def after(cls, remaining_s: float | None) -> Deadline:
        """The deadline `remaining_s` seconds from now (gRPC's context.time_remaining(); None: none)."""
        return cls(None if remaining_s is None else time.monotonic() + remaining_s)

    def remaining_s(self) -> float | None:
        return None if self.at is None else self.at - time.monotonic()


class Limiter:
    """At most `limit` requests held at once (0 = no bound), with the counters metrics read.
    name: what the limiter guards, for messages ("searches in flight", "shard queue")."""

    def __init__(self, limit: int, *, name: str, lag: LoopLag | None = None, waits: StandingDelay | None = None
                 ) -> None:
        if limit < 0:
            raise ValueError(f"`limit` must be >= 0 (0 = unbounded), but got {limit}")
        self.limit = limit
        self.name = name
        self.in_flight = 0
        self.admitted = 0
        self.shed = 0
        self.lagged = 0  # of `shed`, refused while places were free because the loop lagged
        self.queueing = 0  # of `shed`, refused at once while the waits for a place stood above target
        self.expired = 0
        self.service_ms = 0.0  # moving average of observe()d service times; 0 until the first
        self.lag = lag
        self.waits = waits  # acquire_within's waits for a place (0 when one was free at once)
        self.waiters: deque[asyncio.Future[None]] = deque()  # acquire_within's, oldest first

    def _full(self) -> bool:
        return bool(self.limit) and self.in_flight >= self.limit

    def _lagging(self) -> bool:
        return self.lag is not None and self.lag.overloaded(asyncio.get_running_loop().time())

    def try_acquire(self) -> bool:
        """Take a place if there is one and the loop is not queueing work (`lag`; counted
        admitted), or count the request shed."""
        full = self._full()
        if full or self._lagging():
            self.shed += 1
            self.lagged += not full
            return False
        self.in_flight += 1
        self.admitted += 1
        return True

    async def acquire_within(self, wait_s: float) -> None:
        """A place, waiting up to `wait_s` (first come, first served) for one to be released when
        all are taken, so that a burst queues briefly instead of being refused; OverloadedError
        when none frees in time, at once while the loop is queueing work (`lag`), and at once when
        all are taken while the waits for a place have stood above target (`waits`): a queue that
        does not drain only delays the searches in it."""
        if self._lagging() or (self._full() and wait_s <= 0):
            self.acquire()  # refuses, counted
        loop = asyncio.get_running_loop()
        started = loop.time()
        if not self._full():
            self.in_flight += 1
            self.admitted += 1
            self._waited(started)
            return
        if self.waits is not None and self.waits.overloaded(started):
            self.shed += 1
            self.queueing += 1
            raise OverloadedError(f"overloaded: {self.name} is full ({self.limit} requests) and searches have "
                                  f"waited over {self.waits.target_s * 1000:.0f} ms for a place for "
                                  f"{self.waits.interval_s * 1000:.0f} ms; retry later")
        waiter: asyncio.Future[None] = loop.create_future()
        self.waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, wait_s)
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a place just as the wait ended: pass it on
            self._waited(started)  # a wait cut short (time up, or the caller left) was a wait too
            if not isinstance(exc, TimeoutError):
                raise
            self.shed += 1
            raise OverloadedError(f"overloaded: {self.name} is full ({self.limit} requests) and none finished "
                                  f"within {wait_s * 1000:.0f} ms; retry later") from None
        self.admitted += 1
        self._waited(started)

    def _waited(self, since: float) -> None:
        """Record one wait for a place, from `since` until now (the loop's clock), with `waits`."""
        if self.waits is not None:
            now = asyncio.get_running_loop().time()
            self.waits.record(now - since, now)

    def release(self) -> None:
        """Free a place, or hand it to the longest waiter of acquire_within."""
        if self.in_flight <= 0:
            raise RuntimeError(f"{self.name}: release() without a matching try_acquire()")
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the place passes on: in_flight stays
                return
        self.in_flight -= 1

    def acquire(self) -> None:
        """try_acquire, or OverloadedError (RESOURCE_EXHAUSTED) at once when there is no place."""
        if not self.try_acquire():
            what = (f"is full ({self.limit} requests)" if self._full() else
                    f"waits {self.lag.lag_ms if self.lag else 0:.0f} ms for its event loop")
            raise OverloadedError(f"overloaded: {self.name} {what}; retry later")

    @contextmanager
    def admit(self) -> Iterator[None]:
        """Hold a place for the block; OverloadedError at once when there is none."""
        self.acquire()
        try:
            yield
        finally:
            self.release()

    def check(self, deadline: Deadline) -> None:
        """At pick-up: DeadlineExceededError (counted expired) when `deadline` passed, or when less
        time is left than the average service time while other requests wait behind this one (it
        would finish too late, and delay them). A request alone still runs, so a spike of the
        average cannot make the server drop everything: its next lone request measures again."""
        remaining = deadline.remaining_s()
        if remaining is None:
            return
        if remaining <= 0 or (remaining * 1000 < self.service_ms and self.in_flight > 1):
            self.expired += 1
            raise DeadlineExceededError(f"dropped unrun: {max(remaining, 0) * 1000:.1f} ms left of the deadline, "
                                        f"and the work takes {self.service_ms:.1f} ms on average")

    def observe(self, service_ms: float) -> None:
        """Add one request's service time (the worker's, queueing excluded) to the moving average."""
        self.service_ms = service_ms if not self.service_ms else (
            (1 - EWMA_WEIGHT) * self.service_ms + EWMA_WEIGHT * service_ms)
