"""Encoders: determinism, normalisation, configuration errors (hashing encoder; MiniLM has its own file)."""

from __future__ import annotations

import numpy as np
import pytest

from core.semantic.encoders import HashingConfig, HashingEncoder, l2_normalize
from core.semantic.registry import make_encoder

TEXTS = ["Love Story — Taylor Swift", "love stories", "Bohemian Rhapsody", "Beyoncé", "", "!!"]


@pytest.fixture(scope="module")
def encoder() -> HashingEncoder:
    return HashingEncoder()


def test_shape_dtype_and_unit_norm(encoder: HashingEncoder) -> None:
    vectors = encoder.encode(TEXTS)
    assert vectors.shape == (len(TEXTS), encoder.dim) and vectors.dtype == np.float32
    norms = np.linalg.norm(vectors, axis=1)
    assert norms[:4] == pytest.approx(1.0, abs=1e-6)
    assert norms[4] == 0.0  # no content, no direction


def test_deterministic_across_instances_and_batches(encoder: HashingEncoder) -> None:
    once = encoder.encode(TEXTS)
    again = HashingEncoder().encode(TEXTS[::-1])[::-1]
    one_by_one = np.vstack([encoder.encode([t]) for t in TEXTS])
    np.testing.assert_array_equal(once, again)
    np.testing.assert_array_equal(once, one_by_one)


def test_fixed_values_do_not_drift(encoder: HashingEncoder) -> None:
    """Cached embeddings are keyed by the fingerprint: any change to the hashing must come with a
    new fingerprint, or caches would serve stale vectors. " love " has 7 n-grams of 3 and 4 chars."""
    v = encoder.encode(["love"])[0]
    assert encoder.fingerprint == "hashing-crc32-v1:dim=256:n=3-4"
    buckets = np.flatnonzero(v)
    assert buckets.tolist() == [7, 29, 55, 129, 144, 168, 218]
    assert np.sign(v[buckets]).tolist() == [-1, 1, -1, 1, -1, -1, -1]
    assert v[buckets] == pytest.approx(np.sign(v[buckets]) / np.sqrt(7))


def test_spelling_not_meaning(encoder: HashingEncoder) -> None:
    v = encoder.encode(["love story", "love stories", "romantic ballad", "LOVE STORY"])
    assert v[0] @ v[1] > 0.5 > v[0] @ v[2]
    assert v[0] @ v[3] == pytest.approx(1.0)  # case-folded


def test_accents_fold(encoder: HashingEncoder) -> None:
    v = encoder.encode(["Beyoncé", "beyonce"])
    assert v[0] @ v[1] == pytest.approx(1.0)


def test_l2_normalize_keeps_zero_rows() -> None:
    out = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"dim": 4}, "`dim` must be in"),
    ({"dim": 1 << 20}, "`dim` must be in"),
    ({"ngram_min": 0}, "`ngram_min` and `ngram_max`"),
    ({"ngram_min": 5, "ngram_max": 3}, "`ngram_min` and `ngram_max`"),
])
def test_hashing_config_rejects(kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        HashingConfig(**kwargs)


def test_make_encoder() -> None:
    enc = make_encoder("hashing", {"hashing_dim": 64})
    assert enc.dim == 64 and enc.encode(["x"]).shape == (1, 64)
    kinds = "minilm, hashing, minilm-onnx, minilm-int8, minilm-int8-tensor"
    with pytest.raises(ValueError, match=f"`encoder` must be one of {kinds}, but got 'bert'"):
        make_encoder("bert")
