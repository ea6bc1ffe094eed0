"""Compiles the kernels of core.lexical.scoring with Numba, in one place.

`cache=True` keeps compiled machine code on disk between processes; `nogil=True` lets a shard
run queries from several threads. Call `warm_up()` at start-up so the first request does not pay
for compilation.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import numba
import numpy as np

from core.lexical import codec, scoring


def _compile(fn: Callable[..., Any], env: dict[str, Any], **options: Any) -> Any:
    """njit a copy of `fn` whose global names in `env` refer to already compiled kernels."""
    clone = types.FunctionType(fn.__code__, {**fn.__globals__, **env}, fn.__name__, fn.__defaults__)
    clone.__qualname__ = fn.__qualname__
    return numba.njit(cache=True, nogil=True, **options)(clone)


worse = _compile(scoring.worse, {}, inline="always")
sift_down = _compile(scoring.sift_down, {"worse": worse})
select_topk = _compile(scoring.select_topk, {"worse": worse, "sift_down": sift_down})
bm25_topk = _compile(scoring.bm25_topk, {"select_topk": select_topk})
impacts = _compile(scoring.impacts, {})

bit_width = _compile(codec.bit_width, {})
stream_words = _compile(codec.stream_words, {}, inline="always")
pack = _compile(codec.pack, {"stream_words": stream_words})
unpack = _compile(codec.unpack, {"stream_words": stream_words})
decode_block = _compile(codec.decode_block, {"unpack": unpack})
_block_layout = _compile(codec._block_layout, {"bit_width": bit_width, "stream_words": stream_words})
encode = _compile(codec.encode, {"_block_layout": _block_layout, "pack": pack})


def warm_up() -> None:
    """Compile (or load from cache) every kernel for the dtypes the index uses."""
    term_ids = np.array([0], dtype=np.int64)
    weights = np.array([1.0], dtype=np.float64)
    offsets = np.array([0, 2], dtype=np.int64)
    doc_ids = np.array([0, 1], dtype=np.uint32)
    tfs = np.array([1.0, 2.0], dtype=np.float32)
    imp = impacts(doc_ids, tfs, np.zeros(1, dtype=np.int64), offsets, np.ones((1, 2), dtype=np.float32))
    for mask in (np.zeros(0, dtype=np.uint8), np.ones(2, dtype=np.uint8)):
        for prior in (np.zeros(0, dtype=np.float32), np.ones(2, dtype=np.float32)):
            bm25_topk(term_ids, weights, offsets, weights, doc_ids, imp, mask, prior, 2, 1)
