"""The encoder registry: an EncoderKind name and its options -> an Encoder (core.semantic.encoders;
the ONNX kinds from core.semantic.onnx_encoder, imported only when asked for)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from core.semantic.encoders import (
    DEFAULT_HASHING_DIM,
    DEFAULT_MAX_SEQ_LENGTH,
    DEFAULT_NGRAM_MAX,
    DEFAULT_NGRAM_MIN,
    Encoder,
    EncoderKind,
    HashingConfig,
    HashingEncoder,
    MiniLMEncoder,
)


def _hashing(options: Mapping[str, Any]) -> Encoder:
    return HashingEncoder(HashingConfig(dim=int(options.get("hashing_dim", DEFAULT_HASHING_DIM)),
                                        ngram_min=int(options.get("ngram_min", DEFAULT_NGRAM_MIN)),
                                        ngram_max=int(options.get("ngram_max", DEFAULT_NGRAM_MAX))))


def _minilm(options: Mapping[str, Any]) -> Encoder:
    return MiniLMEncoder(max_seq_length=int(options.get("max_seq_length", DEFAULT_MAX_SEQ_LENGTH)),
                         device=str(options.get("device", "cpu")))


def _minilm_onnx(variant: str) -> Callable[[Mapping[str, Any]], Encoder]:
    def make(options: Mapping[str, Any]) -> Encoder:
        from core.semantic.onnx_encoder import OnnxMiniLMEncoder
        from core.semantic.onnx_export import DEFAULT_ONNX_CACHE_DIR, OnnxVariant

        threads = options.get("threads")
        return OnnxMiniLMEncoder(OnnxVariant(variant),
                                 max_seq_length=int(options.get("max_seq_length", DEFAULT_MAX_SEQ_LENGTH)),
                                 threads=None if threads is None else int(threads),
                                 device=str(options.get("device", "cpu")),
                                 cache_dir=options.get("onnx_cache") or DEFAULT_ONNX_CACHE_DIR)
    return make


ENCODERS: dict[EncoderKind, Callable[[Mapping[str, Any]], Encoder]] = {
    EncoderKind.HASHING: _hashing,
    EncoderKind.MINILM: _minilm,
    EncoderKind.MINILM_ONNX: _minilm_onnx("fp32"),
    EncoderKind.MINILM_INT8: _minilm_onnx("int8"),
    EncoderKind.MINILM_INT8_TENSOR: _minilm_onnx("int8-tensor"),
}


def make_encoder(name: str, options: Mapping[str, Any] | None = None) -> Encoder:
    """The encoder called `name` (an EncoderKind value). options: hashing_dim, ngram_min,
    ngram_max (hashing); max_seq_length, device ("cpu", "cuda" or "auto": CUDA if present) (all
    MiniLM kinds); threads (intra-op threads, default OMP_NUM_THREADS) and onnx_cache (the
    directory of exported graphs, default ~/.cache/ltrr/onnx) (ONNX kinds)."""
    try:
        kind = EncoderKind(name)
    except ValueError:
        raise ValueError(f"`encoder` must be one of {', '.join(k.value for k in EncoderKind)}, "
                         f"but got {name!r}") from None
    return ENCODERS[kind](options or {})
