"""Block-max pruning for the BM25F kernel: per-block score bounds and the pruned top-k kernel.

Plain functions in the Numba subset; `core.lexical.jit` compiles them and
`core.lexical.reference` holds their NumPy references.
"""

from __future__ import annotations

import numpy as np

# Relative margin on every block bound: covers the rounding of impact() against the bound's own
# arithmetic (a few ulps), so a bound is never below a posting's computed impact.
BOUND_MARGIN = 1e-9


def block_upper_bounds(block_max_tf: np.ndarray, min_len_inv_norm: np.ndarray, inner_w: np.ndarray,
                       k1: float) -> np.ndarray:
    """Upper bound of the BM25F impact of every posting of each block.

    block_max_tf: uint32 (B, F), the largest frequency per field in the block (codec).
    min_len_inv_norm: float32 (B, F), inv_norm evaluated at the block's shortest field length
        (`block_min_len`), with the same quantisation and float32 rounding as the documents'.
    inner_w: float64 (F,); k1 >= 0.
    Returns float64 (B,): tfw_max / (k1 + tfw_max) * (1 + 1e-9), where tfw_max is the sum over
    fields holding the term of inner_w[f] * block_max_tf[b, f] * min_len_inv_norm[b, f]. Valid
    because inv_norm falls as length grows, and impact grows with tfw.
    """
    n_blocks = block_max_tf.shape[0]
    out = np.empty(n_blocks, dtype=np.float64)
    for b in range(n_blocks):
        tfw = 0.0
        for f in range(block_max_tf.shape[1]):
            tf = block_max_tf[b, f]
            if tf > 0:
                tfw += inner_w[f] * np.float64(tf) * np.float64(min_len_inv_norm[b, f])
        out[b] = tfw / (k1 + tfw) * (1.0 + BOUND_MARGIN) if tfw > 0.0 else 0.0
    return out
