"""Background tasks that follow the event store: a catch-up every interval, and a task's cancel."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from core.errors import UnavailableError

LOG_EVERY = 100  # an unreachable store is logged on the first failure and every LOG_EVERY-th after


async def cancelled(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` (None: nothing to do) and wait until it has ended."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def tail(catch_up: Callable[[], Awaitable[object]], interval_s: float, what: str, log: logging.Logger) -> None:
    """`catch_up()` every `interval_s` until cancelled; an UnavailableError (the store cannot be
    reached) is logged, on the first failure and every LOG_EVERY-th after, and retried."""
    failures = 0
    while True:
        await asyncio.sleep(interval_s)
        try:
            await catch_up()
        except UnavailableError as e:
            failures += 1
            if failures == 1 or failures % LOG_EVERY == 0:
                log.warning("cannot read %s (%s); retrying every %.2fs", what, e, interval_s)
            continue
        failures = 0
