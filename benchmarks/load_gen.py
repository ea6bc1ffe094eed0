"""The open-loop generator of benchmarks.load: every request is sent at its scheduled time, whatever
happened to the earlier ones, and its latency runs from that scheduled time (no coordinated
omission: a request the generator itself sends late is charged the wait, as wrk2 does).

    record = await open_loop(call, offsets, deadline_s=2.0)

`call(i, remaining_s)` sends request i with `remaining_s` seconds of client deadline left (the
deadline counts from the scheduled time) and returns (status name, degraded). A call still
running `grace_s` after its deadline is cancelled and recorded as a HANG: the server never
answered, not even with DEADLINE_EXCEEDED. The clock and sleep are parameters so tests can run
the loop on a virtual clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import numpy as np

from benchmarks.load_stats import HANG, StepRecord

DEFAULT_DEADLINE_S = 2.0
DEFAULT_GRACE_S = 1.0
LATE = "DEADLINE_EXCEEDED"  # what the client reports for a request due longer ago than its deadline

Call = Callable[[int, float], Awaitable[tuple[str, bool]]]


async def open_loop(call: Call, offsets: np.ndarray, *, deadline_s: float = DEFAULT_DEADLINE_S,
                    grace_s: float = DEFAULT_GRACE_S, clock: Callable[[], float] = time.perf_counter,
                    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> StepRecord:
    """Run request i at `offsets[i]` seconds (float64, ascending) after the start, each in its own
    task, many in flight; wait for all of them. See the module docstring."""
    n = len(offsets)
    latency, lag = np.zeros(n), np.zeros(n)
    codes = [HANG] * n
    degraded = np.zeros(n, dtype=bool)

    async def one(i: int, due: float) -> None:
        lag[i] = (clock() - due) * 1000
        remaining = deadline_s - (clock() - due)
        if remaining <= 0:  # the generator itself was later than the whole deadline: never sent
            codes[i] = LATE
        else:
            try:  # asyncio.timeout, not wait_for: the call runs in this task, at once, not in one more task
                async with asyncio.timeout(remaining + grace_s):
                    codes[i], degraded[i] = await call(i, remaining)
            except TimeoutError:
                codes[i] = HANG
        latency[i] = (clock() - due) * 1000

    start = clock()
    tasks = []
    for i, at in enumerate(offsets.tolist()):
        delay = start + at - clock()
        if delay > 0:
            await sleep(delay)
        tasks.append(asyncio.create_task(one(i, start + at)))
    await asyncio.gather(*tasks)
    return StepRecord(scheduled_s=np.asarray(offsets, dtype=np.float64), latency_ms=latency, lag_ms=lag,
                      codes=tuple(codes), degraded=degraded)
