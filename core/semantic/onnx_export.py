"""all-MiniLM-L6-v2 exported to ONNX from the local model files, once, into a cache directory.

The export traces the transformer with mean pooling over the attention mask and L2 normalisation
inside the graph (inputs `input_ids` and `attention_mask`, int64, shape (batch, tokens); output
`embedding`, float32, shape (batch, 384), rows of norm 1), with eager attention so that ONNX
Runtime fuses it into its Attention operator. Variants:
- fp32: the exported graph as is (the same numbers as torch, up to float rounding);
- int8: weights of every MatMul quantised to int8 per output channel, activations quantised
  dynamically (onnxruntime.quantization.quantize_dynamic, per_channel=True);
- int8-tensor: the same with one scale per weight tensor; kept to measure against, it loses
  noticeably more (benchmarks/encoder.py).

Files are named by `export_key`: a hash of the model files and of every setting that changes the
graph (variant, opset, exporter and quantizer versions), so a new model or toolchain never reuses
an old file. Each is written to a temporary file and renamed into place, so a crash never leaves a
half file; two processes exporting at once both write whole files and the last rename wins.
Only the model's own files are read; no hub is contacted. Needs torch and transformers (the
`semantic` extra) for the export, onnx and onnxruntime for the quantisation.
"""

from __future__ import annotations

import enum
import hashlib
import os
import tempfile
import warnings
from importlib import metadata
from pathlib import Path

from core.semantic.encoders import EncoderError, hub_offline, minilm_model_dir

DEFAULT_ONNX_CACHE_DIR = Path.home() / ".cache" / "ltrr" / "onnx"
OPSET = 17
EXPORT_FORMAT = "ltrr-minilm-onnx-v1"  # bump when the traced graph changes
HASHED_FILES = ("config.json", "model.safetensors")
TOOLS = ("torch", "transformers", "onnxruntime")


class OnnxVariant(enum.StrEnum):
    FP32 = "fp32"
    INT8 = "int8"
    INT8_TENSOR = "int8-tensor"


def _file_digest(path: Path) -> bytes:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.digest()


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "none"


def export_key(model_dir: str | os.PathLike[str], variant: OnnxVariant) -> str:
    """16 hex digits naming one exported file: the model files' SHA-256, the variant, the opset
    and the versions of the tools that write the graph."""
    h = hashlib.sha256()
    for name in HASHED_FILES:
        h.update(_file_digest(Path(model_dir) / name))
    settings = [EXPORT_FORMAT, f"opset={OPSET}", f"variant={variant.value}",
                *(f"{t}={_version(t)}" for t in TOOLS)]
    h.update(":".join(settings).encode())
    return h.hexdigest()[:16]


def onnx_path(cache_dir: str | os.PathLike[str], key: str, variant: OnnxVariant) -> Path:
    return Path(cache_dir) / f"all-MiniLM-L6-v2-{variant.value}-{key}.onnx"


def ensure_onnx(variant: OnnxVariant, *, cache_dir: str | os.PathLike[str] = DEFAULT_ONNX_CACHE_DIR,
                model_dir: str | None = None) -> tuple[Path, str]:
    """(path of the ONNX file of `variant`, its export key), exporting it first if it is missing
    (an int8 variant is quantised from the fp32 file, which is exported and kept first)."""
    model_dir = model_dir or minilm_model_dir()
    key = export_key(model_dir, variant)
    path = onnx_path(cache_dir, key, variant)
    if path.is_file():
        return path, key
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as tmp:
        out = Path(tmp) / path.name
        if variant is OnnxVariant.FP32:
            _export_fp32(model_dir, out)
        else:
            fp32, _ = ensure_onnx(OnnxVariant.FP32, cache_dir=cache_dir, model_dir=model_dir)
            _quantize(fp32, out, per_channel=variant is OnnxVariant.INT8)
        os.replace(out, path)
    return path, key


def _export_fp32(model_dir: str, out: Path) -> None:
    hub_offline()
    try:
        import torch
        from transformers import AutoModel
    except ImportError:
        raise EncoderError("exporting MiniLM to ONNX needs torch and transformers: install ltrr[semantic]") from None

    class Pooled(torch.nn.Module):
        """The transformer, then mean pooling over real tokens, then L2 normalisation
        (sentence-transformers' Pooling(mean) + Normalize)."""

        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask,
                                token_type_ids=torch.zeros_like(input_ids)).last_hidden_state
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    model = AutoModel.from_pretrained(model_dir, local_files_only=True, attn_implementation="eager").eval()
    example = torch.ones((2, 8), dtype=torch.int64)
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
            "embedding": {0: "batch"}}
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about Python branches on shapes in transformers' code; with an
        # attention mask given, each takes the same side for every batch and length.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(Pooled(model), (example, example), str(out), input_names=["input_ids", "attention_mask"],
                          output_names=["embedding"], dynamic_axes=axes, opset_version=OPSET, dynamo=False)


def _quantize(src: Path, out: Path, *, per_channel: bool) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The traced graph leaves some MatMul outputs untyped; they are all float.
    quantize_dynamic(src, out, per_channel=per_channel, weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


if __name__ == "__main__":  # `python -m core.semantic.onnx_export [VARIANT ...]`: export ahead of first use
    import sys

    for name in sys.argv[1:] or [OnnxVariant.INT8.value]:
        print(ensure_onnx(OnnxVariant(name))[0])
