"""Approximate nearest neighbours over usearch HNSW (Malkov & Yashunin, 2018), cosine similarity.

Keys are entity ordinals (uint64 in usearch, int64 here). Scores are cosine similarities, float32,
in [-1, 1], best first. Every vector is scaled to unit length on the way in (add and search), so
the index uses usearch's inner-product metric: on unit vectors it equals the cosine and skips the
two norms usearch's "cos" metric computes per distance (measured faster at equal recall).

Filters: usearch has no filtered search from Python, so an `allowed` bitmap is honoured by
over-fetching and filtering with Roaring, widening the fetch until the quota is met or the index is
exhausted (the last round is an exact scan, which misses nothing). Small allowed sets are scored
exactly, straight from their stored vectors.

A saved index is opened memory-mapped (`view`): read-only and shared by the page cache. The first
add or remove on a view copies the index into memory (copy on write), under a lock.

Staged keys: a live shard inserts a batch's new vectors (the slow part, ~1 ms each: the HNSW
insertion) before it takes the lock its searches read under, with `stage`, and makes them
searchable under that lock with `publish`. A staged key is above every key before it, and a search
drops every key from the lowest staged one up (`hidden_from`), which it reads after usearch
answers: a key staged while a search ran is never returned, a published one always is.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# ONNX Runtime (the semantic extra) must be loaded before usearch: with usearch 2.26 and
# onnxruntime 1.32, importing onnxruntime after usearch.compiled kills the process (SIGSEGV), which
# a script that opens an index and then makes an ONNX encoder would do.
with contextlib.suppress(ImportError):
    import onnxruntime  # noqa: F401
from pyroaring import BitMap
from usearch.index import Index

from core.semantic.encoders import l2_normalize

METRIC = "ip"  # on unit vectors: the cosine
DTYPES = ("f32", "f16", "i8")
DEFAULT_DTYPE = "f16"
DEFAULT_CONNECTIVITY = 16
DEFAULT_EXPANSION_ADD = 128
DEFAULT_EXPANSION_SEARCH = 64
DEFAULT_EXACT_BELOW = 2048
DEFAULT_OVERFETCH = 2.0
# Vectors per usearch add call when staging: a search waits inside usearch for the add call in
# progress (usearch 2.26: a search issued during a 3,000-vector add returned when the add did),
# so a live batch inserts a few at a time (~0.5 ms each on the demo index) and a search waits for
# at most one call.
STAGE_CHUNK = 8
# usearch holds the GIL for a whole save or load into memory, stalling every other thread of the
# process, searches included (the demo index's 28k x 384 f16: 6-13 ms a save; a million vectors,
# ~40 times that). Given a progress callback it calls back once per node, and a callback that hands
# the GIL over every SAVE_YIELD_EVERY nodes bounds the wait to about the interpreter's switch
# interval (5 ms), for a save ~3 times slower. Measured on the demo index (a thread waking every 1 ms
# beside VectorIndex.to_bytes, 8 calls each, NOTES.md session 21): without staged keys 5-8 ms with a
# longest wait of 4-8 ms, against 16-22 ms and 4-6 ms with it; with staged keys (a load, a remove
# and a save) 27-31 ms and 14-21 ms, against 56-70 ms and 9-14 ms. The gain grows with the index.
SAVE_YIELD_EVERY = 1024


@dataclass(frozen=True, kw_only=True)
class AnnConfig:
    """dtype: storage of vectors ("f32", "f16" half precision, "i8" 8-bit scalar quantisation).
    connectivity: HNSW graph degree M. expansion_add / expansion_search: candidate-list sizes
    (efConstruction / ef) at build and query time; more is slower and more exact.
    exact_below: indexes with fewer vectors, and allowed sets with fewer members, are searched
    exactly (brute force; 0 = never). overfetch: a filtered search first asks for
    quota * overfetch / (share of the index allowed) neighbours, then doubles."""

    dtype: str = DEFAULT_DTYPE
    connectivity: int = DEFAULT_CONNECTIVITY
    expansion_add: int = DEFAULT_EXPANSION_ADD
    expansion_search: int = DEFAULT_EXPANSION_SEARCH
    exact_below: int = DEFAULT_EXACT_BELOW
    overfetch: float = DEFAULT_OVERFETCH

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"`dtype` must be one of {', '.join(DTYPES)}, but got {self.dtype!r}")
        if not 2 <= self.connectivity <= 256:
            raise ValueError(f"`connectivity` must be in [2, 256], but got {self.connectivity}")
        for name in ("expansion_add", "expansion_search"):
            if not 1 <= getattr(self, name) <= 65_536:
                raise ValueError(f"`{name}` must be in [1, 65536], but got {getattr(self, name)}")
        if self.exact_below < 0:
            raise ValueError(f"`exact_below` must be >= 0, but got {self.exact_below}")
        if not (math.isfinite(self.overfetch) and self.overfetch >= 1):
            raise ValueError(f"`overfetch` must be finite and >= 1, but got {self.overfetch}")


def _yielding() -> Callable[[int, int], bool]:
    """A usearch progress callback that hands the GIL to waiting threads every SAVE_YIELD_EVERY calls."""
    calls = itertools.count(1)

    def progress(done: int, total: int) -> bool:
        if next(calls) % SAVE_YIELD_EVERY == 0:
            time.sleep(0)  # releases the GIL: a waiting thread takes it
        return True

    progress.__annotations__ = {"done": int, "total": int, "return": bool}  # usearch checks them, not as strings
    return progress


def _loaded(data: bytes | bytearray) -> Index:
    """A copy in memory of the index saved in `data` (Index.restore, yielding the GIL as it loads)."""
    meta = Index.metadata(data)
    if not meta:
        raise RuntimeError("usearch could not read its own saved index")
    index = Index(ndim=meta["dimensions"], dtype=meta["kind_scalar"], metric=meta["kind_metric"])
    index.load(data, progress=_yielding())
    return index


def _set_expansion(index: Index, expansion_search: int) -> None:
    index.expansion_search = expansion_search  # type: ignore[misc]  # usearch's setter is untyped


class VectorIndex:
    """An HNSW index of unit vectors keyed by ordinal, plus the bitmap of keys it holds."""

    def __init__(self, index: Index, config: AnnConfig, *, view: bool = False) -> None:
        self.index = index
        self.config = config
        self.view = view
        self.keys = BitMap(np.asarray(index.keys, dtype=np.uint64).astype(np.uint32))
        self.staged = BitMap()  # in the graph, not searchable yet (module docstring); replaced, never changed
        self._lock = threading.Lock()

    @classmethod
    def create(cls, dim: int, config: AnnConfig) -> VectorIndex:
        if dim < 1:
            raise ValueError(f"`dim` must be >= 1, but got {dim}")
        return cls(Index(ndim=dim, metric=METRIC, dtype=config.dtype, connectivity=config.connectivity,
                         expansion_add=config.expansion_add, expansion_search=config.expansion_search), config)

    @classmethod
    def open(cls, path: str | os.PathLike[str], config: AnnConfig, *, view: bool = True) -> VectorIndex:
        """A saved index, memory-mapped read-only when `view` (else copied into memory)."""
        index = Index.restore(os.fspath(path), view=view)
        if index is None:
            raise ValueError(f"{path}: not a usearch index")
        _set_expansion(index, config.expansion_search)
        return cls(index, config, view=view)

    @property
    def dim(self) -> int:
        return int(self.index.ndim)

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def hidden_from(self) -> int | None:
        """The lowest staged key (searches drop it and every key above); None when none is staged."""
        staged = self.staged
        return staged.min() if staged else None

    def to_bytes(self) -> bytes:
        """The whole index in usearch's file format, staged keys left out: a new buffer of
        usearch's (a bytearray, not copied again: a copy of the demo index's 26 MB cost ~30 ms, taken
        while a live shard applies no batch by core.live_checkpoint)."""
        with self._lock:
            if not self.staged:
                return self._saved()
            # a checkpoint between a batch's stage and its publish (common under steady writes)
            copy = _loaded(self._saved())
            copy.remove(np.asarray(self.staged.to_array(), dtype=np.uint64))
            return self._saved(copy)

    def _saved(self, index: Index | None = None) -> bytes:
        data = (self.index if index is None else index).save(progress=_yielding())
        if data is None:
            raise RuntimeError("usearch returned no buffer from save()")
        return data

    # -- updates --------------------------------------------------------------------------------

    def make_writable(self) -> None:
        """Copy a memory-mapped index into memory now (the demo catalog's 28k vectors: ~56 ms,
        handing the GIL over as it goes: SAVE_YIELD_EVERY), as the first write would: a live shard
        calls it at start-up, so that its first write does not make the copy while searches run.
        The price: a live replica holds its own copy from the start, even one that is never written
        to, instead of sharing the mapped file's pages with the page cache."""
        with self._lock:
            self._writable()

    def _writable(self) -> Index:
        if self.view:  # nothing is staged in a view: staging makes the index writable first
            copy = _loaded(bytearray(self._saved()))
            _set_expansion(copy, self.config.expansion_search)
            self.index = copy
            self.view = False
        return self.index

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Insert or replace: keys int64, shape (n,), distinct, >= 0; vectors float32, shape (n, dim)."""
        keys, vectors = self._checked(keys, vectors)
        with self._lock:
            index = self._writable()
            present = keys[[int(k) in self.keys for k in keys]]
            if present.size:
                index.remove(present.astype(np.uint64))
            self._insert(index, keys, vectors)
            self.keys |= BitMap(keys.astype(np.uint32))

    def stage(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Insert vectors under new keys that searches do not return until `publish` (module
        docstring): every key must be above every key held or staged already."""
        keys, vectors = self._checked(keys, vectors)
        if not keys.size:
            return
        with self._lock:
            held = max(self.keys.max() if self.keys else -1, self.staged.max() if self.staged else -1)
            if int(keys.min()) <= held:
                raise ValueError(f"staged keys must be above every key held or staged ({held}), but got {keys.min()}")
            index = self._writable()
            before = self.staged
            self.staged = before | BitMap(keys.astype(np.uint32))  # before the insertion (module docstring)
            try:
                self._insert(index, keys, vectors, STAGE_CHUNK)  # a search waits for one call at most
            except BaseException:
                inserted = np.array([k for k in keys.tolist() if k in index], dtype=np.uint64)
                if inserted.size:
                    index.remove(inserted)
                self.staged = before
                raise

    def publish(self, keys: np.ndarray) -> None:
        """Make the staged `keys` searchable and remove every other staged key from the index
        (none: drop what is staged)."""
        with self._lock:
            ready = BitMap(np.asarray(keys, dtype=np.int64).astype(np.uint32))
            if not ready <= self.staged:
                raise ValueError(f"`keys` must be staged, but {list(ready - self.staged)[:5]} are not")
            dropped = self.staged - ready
            if dropped:
                self.index.remove(np.asarray(dropped.to_array(), dtype=np.uint64))
            self.keys |= ready
            self.staged = BitMap()

    def _checked(self, keys: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        keys = np.asarray(keys, dtype=np.int64)
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(keys), -1)
        if vectors.shape[1] != self.dim:
            raise ValueError(f"`vectors` must have {self.dim} columns, but got {vectors.shape[1]}")
        if len(np.unique(keys)) != len(keys) or (keys < 0).any():
            raise ValueError("`keys` must be distinct and >= 0")
        return keys, l2_normalize(vectors)

    @staticmethod
    def _insert(index: Index, keys: np.ndarray, vectors: np.ndarray, chunk: int = 0) -> None:
        """Add to usearch `chunk` vectors per call (0: all in one call), in order, on one thread:
        HNSW built by several threads depends on their interleaving, so two builds of one catalog
        answered differently (the experiment could not be repeated bit for bit on a rebuilt
        index); one thread makes the graph a function of the input."""
        step = chunk or max(len(keys), 1)
        for i in range(0, len(keys), step):
            index.add(keys[i:i + step].astype(np.uint64), vectors[i:i + step], threads=1)

    def remove(self, keys: np.ndarray) -> int:
        """Remove the given keys (absent ones are ignored); returns how many were removed."""
        with self._lock:
            present = np.array([k for k in np.asarray(keys, dtype=np.int64).tolist() if k in self.keys],
                               dtype=np.int64)
            if present.size == 0:
                return 0
            self._writable().remove(present.astype(np.uint64))
            self.keys -= BitMap(present.astype(np.uint32))
            return int(present.size)

    # -- search ---------------------------------------------------------------------------------

    def _search(self, vector: np.ndarray, count: int, exact: bool) -> tuple[np.ndarray, np.ndarray]:
        """The `count` nearest searchable keys (fewer when the index holds fewer). While keys are
        staged it asks for up to `count` more, and again for more when staged keys took their
        places: asking for every staged key (a batch of 1,000 new entities) would make each search
        an HNSW search for 1,000 more neighbours."""
        extra = min(len(self.staged), count)
        while True:
            asked = count + extra
            m = self.index.search(vector, asked, exact=exact)
            keys = np.asarray(m.keys, dtype=np.int64)
            sims = 1.0 - np.asarray(m.distances, dtype=np.float32)
            hidden = self.hidden_from  # after the search (module docstring)
            if hidden is None:
                return keys[:count], sims[:count]
            shown = keys < hidden
            if shown.sum() >= count or len(keys) < asked:
                return keys[shown][:count], sims[shown][:count]
            extra += int((~shown).sum())  # staged keys took the places: ask for that many more

    def _exact_subset(self, vector: np.ndarray, candidates: BitMap, quota: int) -> tuple[np.ndarray, np.ndarray]:
        keys = np.asarray(candidates.to_array(), dtype=np.int64)
        stored = np.stack(self.index.get(keys.astype(np.uint64), dtype="f32")).reshape(len(keys), -1)  # type: ignore[arg-type]
        sims = l2_normalize(stored) @ vector
        top = np.argsort(-sims, kind="stable")[:quota]
        return keys[top], sims[top].astype(np.float32)

    def search(self, vector: np.ndarray, quota: int, allowed: BitMap | None = None
               ) -> tuple[np.ndarray, np.ndarray, int]:
        """Top `quota` keys among `allowed` (None: all) by cosine similarity to `vector`
        (float32, shape (dim,), non-zero). Returns (keys int64 (m,), similarities float32 (m,),
        total candidates allowed), m <= quota, best first."""
        vector = l2_normalize(np.asarray(vector, dtype=np.float32).reshape(1, -1))[0]
        n = len(self.keys)
        if n == 0 or quota < 1:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32), 0
        exact_below = self.config.exact_below
        if allowed is None:
            keys, sims = self._search(vector, min(quota, n), exact=n < exact_below)
            return keys, sims, n
        candidates = self.keys & allowed
        total = len(candidates)
        if total == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32), 0
        if total < exact_below:
            keys, sims = self._exact_subset(vector, candidates, quota)
            return keys, sims, total
        members = np.asarray(candidates.to_array(), dtype=np.int64)
        want = min(quota, total)
        count = min(n, max(want, math.ceil(want * self.config.overfetch * n / total)))
        while True:
            exact = count >= n or n < exact_below
            keys, sims = self._search(vector, n if exact else count, exact=exact)
            keep = np.isin(keys, members, assume_unique=True)
            if keep.sum() >= want or exact:
                return keys[keep][:quota], sims[keep][:quota], total
            count = min(n, count * 2)
