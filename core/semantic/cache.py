"""Embedding cache: vectors keyed by encoder fingerprint and text hash, so that rebuilding an
index re-encodes only new or changed text. QueryVectorCache: recent query vectors in memory.

Storage: one SQLite database (WAL mode) with a row per (fingerprint, SHA-256 of the UTF-8 text,
first 16 bytes) holding the float32 vector as bytes. Several builds may share a cache; SQLite
serialises their writes. Writes are committed after every block, so an interrupted build keeps
what it encoded.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from core.cache import SharedLRU
from core.semantic.encoders import Encoder

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "ltrr" / "embeddings"
DATABASE = "embeddings.sqlite3"
DEFAULT_BLOCK = 512
_SQL_VARS = 500  # keys per SELECT ... IN (...), below SQLite's parameter limit


def text_digest(text: str) -> bytes:
    """16-byte key of `text`: the first half of SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(text.encode()).digest()[:16]


class EmbeddingCache:
    """Vectors by (encoder fingerprint, text digest), in `directory`/embeddings.sqlite3."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.directory / DATABASE, timeout=60.0)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS vectors (model TEXT NOT NULL, digest BLOB NOT NULL, "
                        "vector BLOB NOT NULL, PRIMARY KEY (model, digest)) WITHOUT ROWID")
        self.db.commit()

    def get_many(self, model: str, digests: Sequence[bytes], dim: int) -> dict[bytes, np.ndarray]:
        """The cached vectors (float32, shape (dim,)) among `digests`; rows of another length are
        ignored (treated as missing)."""
        found: dict[bytes, np.ndarray] = {}
        unique = list(dict.fromkeys(digests))
        for start in range(0, len(unique), _SQL_VARS):
            chunk = unique[start:start + _SQL_VARS]
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(f"SELECT digest, vector FROM vectors WHERE model = ? AND digest IN ({marks})",
                                   [model, *chunk])
            for digest, blob in rows:
                if len(blob) == 4 * dim:
                    found[bytes(digest)] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put_many(self, model: str, digests: Sequence[bytes], vectors: np.ndarray) -> None:
        """Store rows of `vectors` (shape (len(digests), dim)) under `digests`, committed."""
        rows = np.ascontiguousarray(vectors, dtype=np.float32)
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO vectors (model, digest, vector) VALUES (?, ?, ?)",
                                [(model, d, rows[i].tobytes()) for i, d in enumerate(digests)])

    def count(self, model: str) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM vectors WHERE model = ?", [model]).fetchone()[0])

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class QueryVectorCache(SharedLRU[str, np.ndarray]):
    """Query text -> its vector (float32, shape (dim,), read-only), least recently used first out,
    at most `max_bytes` (estimated; 0 keeps nothing). Popular queries repeat, and encoding one
    costs milliseconds. Thread-safe (core.cache.SharedLRU, with its hit and miss counts); the
    encoder runs outside the lock, so two threads missing the same text may both encode it."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(max_bytes, _vector_bytes)

    def get_or_encode(self, text: str, encode: Callable[[str], np.ndarray]) -> np.ndarray:
        """The cached vector of `text`, else `encode(text)`, kept (read-only) for next time."""
        vec = self.get(text)
        if vec is None:
            vec = encode(text)
            vec.setflags(write=False)
            self.put(text, vec)
        return vec


def _vector_bytes(vector: np.ndarray) -> int:
    return vector.nbytes + 112  # plus the array object itself (sys.getsizeof of an empty one)


def encode_cached(encoder: Encoder, texts: Sequence[str], cache: EmbeddingCache | None, *,
                  batch_size: int = 64, block: int = DEFAULT_BLOCK, progress: bool = True,
                  desc: str = "semantic: encoding") -> tuple[np.ndarray, int]:
    """Vectors of `texts` (float32, shape (len(texts), encoder.dim)), encoding only texts the
    cache lacks; returns (vectors, number of distinct texts encoded).

    Missing texts are encoded longest first in blocks of `block` (similar lengths batch with
    less padding), each block stored in the cache as soon as it is done; the progress bar counts
    texts encoded.
    """
    digests = [text_digest(t) for t in texts]
    found = cache.get_many(encoder.fingerprint, digests, encoder.dim) if cache is not None else {}
    missing: dict[bytes, str] = {}
    for d, t in zip(digests, texts, strict=True):
        if d not in found and d not in missing:
            missing[d] = t
    order = sorted(missing, key=lambda d: -len(missing[d]))
    with tqdm(total=len(order), desc=desc, unit="text", disable=not progress or not order) as bar:
        for start in range(0, len(order), block):
            keys = order[start:start + block]
            vectors = encoder.encode([missing[d] for d in keys], batch_size=batch_size)
            if cache is not None:
                cache.put_many(encoder.fingerprint, keys, vectors)
            found.update(zip(keys, vectors, strict=True))
            bar.update(len(keys))
    out = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    for i, d in enumerate(digests):
        out[i] = found[d]
    return out, len(order)
