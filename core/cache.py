"""A least-recently-used map bounded by the bytes of what it holds, not by a count.

The broker keeps recent decisions in memory so that Feedback does not read SQLite; a decision's
size varies a hundredfold (a memory-only search holds a few candidates, an equal split 200 ids
with scores), so a count bound either wastes memory or overshoots it. Sizes are estimates given
by the caller (core.pipeline.decision_bytes estimates a decision record's).
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class ByteLRU(Generic[K, V]):
    """At most `max_bytes` of values (by `size(value)`); the least recently used go first. A value
    larger than the whole bound is not kept. Not thread-safe (the broker's event loop owns it)."""

    def __init__(self, max_bytes: int, size: Callable[[V], int]) -> None:
        if max_bytes < 0:
            raise ValueError(f"`max_bytes` must be >= 0, but got {max_bytes}")
        self.max_bytes, self.size = max_bytes, size
        self.bytes = 0
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def clear(self) -> None:
        self._items.clear()
        self.bytes = 0

    def get(self, key: K) -> V | None:
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: K, value: V) -> None:
        n = self.size(value)
        old = self._items.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        if n > self.max_bytes:
            return
        self._items[key] = (value, n)
        self.bytes += n
        while self.bytes > self.max_bytes:
            _, (_, m) = self._items.popitem(last=False)
            self.bytes -= m


class SharedLRU(Generic[K, V]):
    """A ByteLRU that several threads may use (a shard's worker and its event loop), counting
    look-ups in `hits` and `misses` for metrics (services.metrics_shard reads them)."""

    def __init__(self, max_bytes: int, size: Callable[[V], int]) -> None:
        self._lru: ByteLRU[K, V] = ByteLRU(max_bytes, size)
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._lru)

    def __contains__(self, key: object) -> bool:
        return key in self._lru

    @property
    def bytes(self) -> int:
        return self._lru.bytes

    def get(self, key: K, usable: Callable[[V], bool] | None = None) -> V | None:
        """The value of `key` (now most recently used), or None: absent, or not `usable` for this
        look-up (a miss either way)."""
        with self._lock:
            value = self._lru.get(key)
            if value is None or (usable is not None and not usable(value)):
                self.misses += 1
                return None
            self.hits += 1
            return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._lru.put(key, value)


_STR = sys.getsizeof("")  # a str's header; ASCII text adds one byte per character


def text_bytes(texts: Sequence[str]) -> int:
    """Estimated bytes of short ASCII strings and the list holding them."""
    return sys.getsizeof(texts) + sum(_STR + len(t) for t in texts)
