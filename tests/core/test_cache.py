"""core.cache.ByteLRU: a map bounded by the bytes of its values."""

from __future__ import annotations

import numpy as np
import pytest

from core.cache import ByteLRU, SharedLRU, text_bytes


def test_stays_under_its_bound_over_a_long_stream_and_keeps_the_newest() -> None:
    cache: ByteLRU[int, bytes] = ByteLRU(10_000, len)
    rng = np.random.default_rng(0)
    for i in range(20_000):
        cache.put(i, b"x" * int(rng.integers(1, 2_000)))
        assert cache.bytes <= 10_000
        assert cache.bytes == sum(len(cache.get(k) or b"") for k in list(cache._items))
    assert 19_999 in cache and 0 not in cache


def test_least_recently_used_go_first_and_oversized_values_are_not_kept() -> None:
    cache: ByteLRU[str, bytes] = ByteLRU(30, len)
    for key in "abc":
        cache.put(key, b"x" * 10)
    assert cache.get("a") == b"x" * 10  # a is now the most recent
    cache.put("d", b"y" * 10)
    assert "b" not in cache and {"a", "c", "d"} <= {k for k in "abcd" if k in cache}
    cache.put("e", b"z" * 31)
    assert "e" not in cache and cache.bytes == 30
    cache.put("a", b"w" * 5)  # replacing a value re-counts it
    assert cache.bytes == 25 and len(cache) == 3


def test_bad_bound() -> None:
    with pytest.raises(ValueError, match="`max_bytes` must be >= 0"):
        ByteLRU(-1, len)


def test_text_bytes_counts_characters() -> None:
    assert text_bytes(["a" * 100]) - text_bytes(["a"]) == 99


def test_shared_lru_counts_hits_and_misses() -> None:
    cache: SharedLRU[str, int] = SharedLRU(100, lambda v: 10)
    assert cache.get("a") is None
    cache.put("a", 1)
    assert cache.get("a") == 1
    assert cache.get("a", usable=lambda v: v > 1) is None  # there, but not good enough: a miss
    assert (cache.hits, cache.misses, len(cache), cache.bytes) == (1, 2, 1, 10)
