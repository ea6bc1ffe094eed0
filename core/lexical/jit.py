"""Compiles the kernels of core.lexical (codec, scoring, pruning, build_kernels) with Numba, in one place.

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

from core.lexical import build_kernels, codec, pruning, scoring


def _compile(fn: Callable[..., Any], env: dict[str, Any], **options: Any) -> Any:
    """njit a copy of `fn` whose global names in `env` refer to already compiled kernels."""
    clone = types.FunctionType(fn.__code__, {**fn.__globals__, **env}, fn.__name__, fn.__defaults__)
    clone.__qualname__ = fn.__qualname__
    return numba.njit(cache=True, nogil=True, **options)(clone)


bit_width = _compile(codec.bit_width, {})
stream_words = _compile(codec.stream_words, {}, inline="always")
pack = _compile(codec.pack, {"stream_words": stream_words})
unpack = _compile(codec.unpack, {"stream_words": stream_words})
decode_block = _compile(codec.decode_block, {"unpack": unpack})
_block_layout = _compile(codec._block_layout, {"bit_width": bit_width, "stream_words": stream_words})
encode = _compile(codec.encode, {"_block_layout": _block_layout, "pack": pack})

worse = _compile(scoring.worse, {}, inline="always")
sift_down = _compile(scoring.sift_down, {"worse": worse})
drain_heap = _compile(scoring.drain_heap, {"sift_down": sift_down})
select_topk = _compile(scoring.select_topk, {"worse": worse, "sift_down": sift_down, "drain_heap": drain_heap})
impact = _compile(scoring.impact, {}, inline="always")
bm25_topk = _compile(scoring.bm25_topk, {"decode_block": decode_block, "impact": impact, "select_topk": select_topk})
block_upper_bounds = _compile(pruning.block_upper_bounds, {})
_layout = {"decode_block": decode_block}
ensure_decoded = _compile(pruning.ensure_decoded, _layout)
shallow_advance = _compile(pruning.shallow_advance, {})
advance = _compile(pruning.advance, {"shallow_advance": shallow_advance, "ensure_decoded": ensure_decoded})
step = _compile(pruning.step, {"ensure_decoded": ensure_decoded})
offer = _compile(pruning.offer, {"worse": worse, "sift_down": sift_down})
prepare = _compile(pruning.prepare, {})
window_bound = _compile(pruning.window_bound, {"shallow_advance": shallow_advance})
probe = _compile(pruning.probe, {"shallow_advance": shallow_advance, "advance": advance,
                                 "ensure_decoded": ensure_decoded, "impact": impact})
bm25_topk_pruned = _compile(pruning.bm25_topk_pruned, {
    "prepare": prepare, "window_bound": window_bound, "advance": advance, "step": step,
    "ensure_decoded": ensure_decoded, "impact": impact, "probe": probe, "offer": offer, "sift_down": sift_down,
    "drain_heap": drain_heap})

token_key = _compile(build_kernels.token_key, {}, inline="always")
rehash = _compile(build_kernels.rehash, {})
grown = _compile(build_kernels.grown, {})
find_slot = _compile(build_kernels.find_slot, {}, inline="always")
token_end = _compile(build_kernels.token_end, {}, inline="always")
tokenize_some = _compile(build_kernels.tokenize_some, {"token_end": token_end, "token_key": token_key,
                                                       "find_slot": find_slot})
tokenize = _compile(build_kernels.tokenize, {"tokenize_some": tokenize_some, "grown": grown, "rehash": rehash})
count_terms = _compile(build_kernels.count_terms, {})
scatter_postings = _compile(build_kernels.scatter_postings, {})


def warm_up() -> None:
    """Compile (or load from cache) every query-time kernel for the dtypes the index uses."""
    (term_blocks, first, last, block_n, block_words, bits, max_tf, _, words) = encode(
        np.array([0, 2], dtype=np.int64), np.array([0, 1], dtype=np.uint32), np.ones((2, 2), dtype=np.uint32),
        np.ones((2, 2), dtype=np.uint32))
    inner_w = np.ones(2, dtype=np.float64)
    inv_norm = np.ones((2, 2), dtype=np.float32)
    ub = block_upper_bounds(max_tf, np.ones((1, 2), dtype=np.float32), inner_w, 1.2)
    for mask in (np.zeros(0, dtype=np.uint8), np.ones(2, dtype=np.uint8)):
        for prior in (np.zeros(0, dtype=np.float32), np.ones(2, dtype=np.float32)):
            for kernel in (bm25_topk, bm25_topk_pruned):
                kernel(np.array([0], dtype=np.int64), np.array([1.0]), term_blocks, first, last, block_n,
                       block_words, bits, words, ub, inv_norm, inner_w, 1.2, mask, prior, 1.0, 2, 1)
