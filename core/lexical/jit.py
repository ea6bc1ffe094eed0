"""Compiles the kernels of core.lexical (codec, scoring, pruning, build_kernels) with Numba, in one place.

`cache=True` keeps compiled machine code on disk between processes; `nogil=True` lets a shard
run queries from several threads. Call `warm_up()` at start-up so the first request does not pay
for compilation.

Hazard: Numba's cache is keyed on the source file of each compiled function, not on this module,
so after changing an `env` or an option below (e.g. `inline`), delete core/lexical/__pycache__/*.nb*
or the stale machine code keeps being loaded.
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
packed_value = _compile(codec.packed_value, {}, inline="always")
wide_value = _compile(codec.wide_value, {}, inline="always")
unpack = _compile(codec.unpack, {"stream_words": stream_words, "packed_value": packed_value, "wide_value": wide_value})
decode_docs = _compile(codec.decode_docs, {"unpack": unpack, "stream_words": stream_words, "wide_value": wide_value})
decode_block = _compile(codec.decode_block, {"decode_docs": decode_docs, "unpack": unpack,
                                             "stream_words": stream_words})
_block_layout = _compile(codec._block_layout, {"bit_width": bit_width, "stream_words": stream_words})
encode = _compile(codec.encode, {"_block_layout": _block_layout, "pack": pack})

worse = _compile(scoring.worse, {}, inline="always")
sift_down = _compile(scoring.sift_down, {"worse": worse})
drain_heap = _compile(scoring.drain_heap, {"sift_down": sift_down})
select_topk = _compile(scoring.select_topk, {"worse": worse, "sift_down": sift_down, "drain_heap": drain_heap})
block_contributions = _compile(scoring.block_contributions, {})
bm25_topk = _compile(scoring.bm25_topk, {"decode_block": decode_block, "block_contributions": block_contributions,
                                         "select_topk": select_topk})

block_upper_bounds = _compile(pruning.block_upper_bounds, {})
init_cursors = _compile(pruning.init_cursors, {})
load = _compile(pruning.load, {"decode_block": decode_block, "block_contributions": block_contributions})
seek = _compile(pruning.seek, {}, inline="always")
window_bounds = _compile(pruning.window_bounds, {"seek": seek})
partition = _compile(pruning.partition, {})
offer = _compile(pruning.offer, {"worse": worse, "sift_down": sift_down})
collect = _compile(pruning.collect, {}, inline="always")
select_keys = _compile(pruning.select_keys, {})
drain_keys = _compile(pruning.drain_keys, {})
bm25_topk_pruned = _compile(pruning.bm25_topk_pruned, {
    "init_cursors": init_cursors, "seek": seek, "window_bounds": window_bounds, "partition": partition, "load": load,
    "decode_docs": decode_docs, "packed_value": packed_value, "stream_words": stream_words, "collect": collect,
    "select_keys": select_keys, "drain_keys": drain_keys, "worse": worse, "offer": offer, "sift_down": sift_down,
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


# The dtypes of norm_code: Lucene's one-byte codes, or exact lengths as compactly as they fit.
NORM_CODE_DTYPES = (np.uint8, np.uint16, np.uint32)


def warm_up() -> None:
    """Compile (or load from cache) every query-time kernel for the dtypes the index uses."""
    (term_blocks, first, last, block_n, block_words, bits, max_tf, _, words) = encode(
        np.array([0, 2], dtype=np.int64), np.array([0, 1], dtype=np.uint32), np.ones((2, 2), dtype=np.uint32),
        np.ones((2, 2), dtype=np.uint32))
    inner_w = np.ones(2, dtype=np.float64)
    norm_table = np.ones((2, 2), dtype=np.float32)
    ub = block_upper_bounds(max_tf, np.ones((1, 2), dtype=np.float32), inner_w, 1.2)
    for dtype in NORM_CODE_DTYPES:
        norm_code = np.ones((2, 2), dtype=dtype)
        for mask in (np.zeros(0, dtype=np.uint8), np.ones(2, dtype=np.uint8)):
            for prior in (np.zeros(0, dtype=np.float32), np.ones(2, dtype=np.float32)):
                for kernel in (bm25_topk, bm25_topk_pruned):
                    kernel(np.array([0], dtype=np.int64), np.array([1.0]), term_blocks, first, last, block_n,
                           block_words, bits, words, ub, norm_code, norm_table, inner_w, 1.2, mask, prior, 1.0, 2, 1)
