"""Embedding cache: rebuilds do not re-encode unchanged text; keys separate models."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from core.semantic.cache import EmbeddingCache, encode_cached, text_digest
from core.semantic.encoders import EncoderKind, HashingConfig, HashingEncoder


class CountingEncoder(HashingEncoder):
    """A hashing encoder that remembers every text it was asked to encode."""

    def __init__(self, dim: int = 256) -> None:
        super().__init__(HashingConfig(dim=dim))
        self.seen: list[str] = []

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        self.seen.extend(texts)
        return super().encode(texts, batch_size=batch_size)


def test_second_run_encodes_only_new_text(tmp_path: Path) -> None:
    texts = ["love story", "blue river", "love story", "night fire"]
    enc = CountingEncoder()
    with EmbeddingCache(tmp_path) as cache:
        first, n_first = encode_cached(enc, texts, cache, progress=False)
        assert n_first == 3 and sorted(enc.seen) == ["blue river", "love story", "night fire"]
    enc.seen.clear()
    with EmbeddingCache(tmp_path) as cache:  # a new process: the cache is on disk
        second, n_second = encode_cached(enc, [*texts, "gold city"], cache, progress=False)
        assert cache.count(enc.fingerprint) == 4
    assert n_second == 1 and enc.seen == ["gold city"]
    np.testing.assert_array_equal(second[:4], first)
    np.testing.assert_array_equal(second, enc.encode([*texts, "gold city"]))


def test_fingerprints_do_not_mix(tmp_path: Path) -> None:
    small, big = CountingEncoder(dim=64), CountingEncoder(dim=128)
    assert small.kind == EncoderKind.HASHING and small.fingerprint != big.fingerprint
    with EmbeddingCache(tmp_path) as cache:
        encode_cached(small, ["love"], cache, progress=False)
        vectors, encoded = encode_cached(big, ["love"], cache, progress=False)
    assert encoded == 1 and vectors.shape == (1, 128)


def test_without_cache_and_in_small_blocks() -> None:
    enc = CountingEncoder()
    texts = [f"text {i}" for i in range(10)]
    vectors, encoded = encode_cached(enc, texts, None, block=3, progress=False)
    assert encoded == 10
    np.testing.assert_array_equal(vectors, enc.encode(texts))


def test_digest_is_stable() -> None:
    assert text_digest("love").hex() == "686f746a95b6f836d7d70567c302c3f9"
