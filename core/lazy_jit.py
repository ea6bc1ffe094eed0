"""Numba kernels compiled on first use, for modules that most commands import without needing them.

numba is imported when a kernel is first asked for, not when its module is imported, so that
commands that never rank or decide do not load it, and services.cli can set NUMBA_NUM_THREADS
before it does. `cache=True` keeps the machine code on disk between processes; `nogil=True` lets
threads run a kernel at once. (core.lexical.jit compiles the lexical kernels eagerly, in one place.)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any


def lazy_njit(fn: Callable[..., Any]) -> Callable[[], Callable[..., Any]]:
    """A getter of `fn` compiled by Numba; it compiles (or loads from Numba's cache) once, on its first call."""

    @functools.cache
    def compiled() -> Callable[..., Any]:
        import numba

        kernel: Callable[..., Any] = numba.njit(cache=True, nogil=True)(fn)
        return kernel

    return compiled
