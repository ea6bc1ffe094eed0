"""all-MiniLM-L6-v2 served with ONNX Runtime: the same tokenizer, truncation, mean pooling and
normalisation as the torch encoder (core.semantic.encoders.MiniLMEncoder), 3 to 7 times faster
per query on one CPU thread (benchmarks/encoder.py measures it and the quality kept).

Texts are tokenised with the model's own tokenizer.json (Hugging Face `tokenizers`), cut at
`max_seq_length` word pieces, sorted by token count and run in batches of similar length (less
padding), then put back in input order. The int8 variants run each text alone: dynamic
quantisation scales activations by the largest value in the whole input tensor, so in a batch a
text's vector would depend on its neighbours and padding (by up to 0.04 per coordinate).

The graph comes from core.semantic.onnx_export, exported from the local model files on first use
and cached on disk.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path

import numpy as np

from core.semantic.encoders import (
    DEFAULT_MAX_SEQ_LENGTH,
    MINILM_DIM,
    MINILM_PACKAGE,
    EncoderError,
    EncoderKind,
    check_minilm_settings,
    minilm_model_dir,
    minilm_output,
)
from core.semantic.onnx_export import DEFAULT_ONNX_CACHE_DIR, OnnxVariant, ensure_onnx

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
KIND_OF = {OnnxVariant.FP32: EncoderKind.MINILM_ONNX, OnnxVariant.INT8: EncoderKind.MINILM_INT8,
           OnnxVariant.INT8_TENSOR: EncoderKind.MINILM_INT8_TENSOR}


def length_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Row indices (int64) in batches of at most `batch_size`, longest first, so each batch holds
    texts of similar length; together they are a permutation of range(len(lengths)), and the
    sort is stable (equal lengths keep input order). lengths: int, shape (n,)."""
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1, but got {batch_size}")
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def default_threads() -> int:
    """Encoding threads: OMP_NUM_THREADS when set (the shard entry point sets it, as it does for
    torch and numba), else the CPUs this process may use."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else len(os.sched_getaffinity(0))


class OnnxMiniLMEncoder:
    """all-MiniLM-L6-v2 (mean pooling, normalised), 384 dims, on ONNX Runtime.

    variant: fp32 or int8 (see core.semantic.onnx_export); threads: batches run at once (None =
    default_threads()), each on one thread: a batch's operators are too small to split well, and
    ONNX Runtime's intra-op pool spins, stealing CPU from the other processes of a shared host (on
    2 cores, 2 threads split by operator encoded documents no faster than 1); device: "cpu",
    "cuda", or "auto" (CUDA when ONNX Runtime has it, for bulk encoding; CPU otherwise).
    """

    def __init__(self, variant: OnnxVariant = OnnxVariant.INT8, *, max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH,
                 threads: int | None = None, device: str = "cpu",
                 cache_dir: str | os.PathLike[str] = DEFAULT_ONNX_CACHE_DIR) -> None:
        check_minilm_settings(max_seq_length, device)
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError:
            raise EncoderError("the ONNX MiniLM encoders need onnxruntime and tokenizers: "
                               "install ltrr[semantic]") from None
        model_dir = minilm_model_dir()
        self.tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=max_seq_length)
        self.tokenizer.no_padding()
        path, key = ensure_onnx(variant, cache_dir=cache_dir, model_dir=model_dir)
        options = ort.SessionOptions()
        self.threads = default_threads() if threads is None else threads
        if self.threads < 1:
            raise ValueError(f"`threads` must be >= 1, but got {self.threads}")
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.providers = providers_for(device, ort.get_available_providers())
        self.session = ort.InferenceSession(str(path), options, providers=self.providers)
        self.kind = KIND_OF[variant]
        self.variant, self.path, self.max_seq_length = variant, path, max_seq_length
        self.max_batch = 1 if variant in (OnnxVariant.INT8, OnnxVariant.INT8_TENSOR) else None
        self.dim = MINILM_DIM
        version = metadata.version(MINILM_PACKAGE)
        self.fingerprint = (f"all-MiniLM-L6-v2:{MINILM_PACKAGE}={version}:seq={max_seq_length}"
                            f":onnx-{variant.value}:{key}")

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        encodings = self.tokenizer.encode_batch(list(texts))
        lengths = np.array([len(e.ids) for e in encodings], dtype=np.int64)
        batches = length_batches(lengths, min(batch_size, self.max_batch or batch_size))

        def run(rows: np.ndarray) -> None:
            width = int(lengths[rows].max())
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for j, row in enumerate(rows):
                ids[j, :lengths[row]] = encodings[row].ids
                mask[j, :lengths[row]] = 1
            out[rows] = self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]

        if self.threads == 1 or len(batches) == 1:
            for rows in batches:
                run(rows)
        else:  # session.run releases the GIL and may be called from several threads at once
            with ThreadPoolExecutor(self.threads, thread_name_prefix="onnx-encode") as pool:
                list(pool.map(run, batches))
        return minilm_output(out, texts)

    def describe(self) -> dict[str, str]:
        return {"encoder": self.kind.value, "encoder_fingerprint": self.fingerprint,
                "max_seq_length": str(self.max_seq_length), "onnx_variant": self.variant.value,
                "encode_threads": str(self.threads),
                "onnx_providers": ",".join(self.providers)}


def providers_for(device: str, available: Sequence[str]) -> list[str]:
    """ONNX Runtime execution providers for `device` ("cpu", "cuda" or "auto") given the
    `available` ones: CUDA first (falling back to the CPU per operator) when asked for or, with
    "auto", present."""
    if device == "cuda" and CUDA not in available:
        raise EncoderError(f"`device` cuda needs onnxruntime with {CUDA}, but this one has {list(available)}")
    use_cuda = device == "cuda" or (device == "auto" and CUDA in available)
    return [CUDA, CPU] if use_cuda else [CPU]
