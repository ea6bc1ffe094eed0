"""Document-length normalisation of BM25F: one small code per document and field, and a table.

The kernels never read a length or a float per document: they read `norm_code[f, d]` and look
its normalisation up in `norm_table[f, code]`, so the per-document array they touch at random
is one byte per document under Lucene quantisation (a quarter of a float32 array: far fewer
cache misses at millions of documents) and the table fits in L1.
- length_quantization "lucene": the code is Lucene's one-byte norm, SmallFloat.intToByte4(length)
  (exact below 24, then four significant bits), and the table has 256 entries, decoded as
  SmallFloat.byte4ToInt, as Lucene's BM25Similarity builds its LENGTH_TABLE.
- "exact": the code is the length itself, in the smallest unsigned dtype that holds it, and the
  table has max length + 1 entries.
norm_table[f, norm_code[f, d]] == inv_norms(lengths, ...)[f, d] bit for bit.
"""

from __future__ import annotations

import numpy as np

LUCENE_FREE = 24  # SmallFloat.NUM_FREE_VALUES: lengths below it encode as themselves
LUCENE_CODES = 256
LUCENE_MAX_LENGTH = 2**31 - 1  # intToByte4 takes a Java int


def lucene_length(lengths: np.ndarray) -> np.ndarray:
    """Document lengths as Lucene decodes them from its one-byte norm (SmallFloat.intToByte4 and
    byte4ToInt): exact below 24, then rounded down to four significant bits. Any shape; int64."""
    x = lengths.astype(np.int64)
    out = x.copy()
    big = x >= LUCENE_FREE
    v = x[big] - LUCENE_FREE
    bits = np.where(v > 0, np.floor(np.log2(np.maximum(v, 1))).astype(np.int64) + 1, 0)
    shift = np.maximum(bits - 4, 0)
    out[big] = LUCENE_FREE + ((v >> shift) << shift)
    return out


def lucene_code(lengths: np.ndarray) -> np.ndarray:
    """Lucene's one-byte norm of each length, SmallFloat.intToByte4: uint8, shape of `lengths`.

    Below 24 the code is the length; above, 24 + longToInt4(length - 24), whose top five bits
    hold the shift plus one (0: a value below 8, stored as is) and low three bits the three bits
    after the leading one. Lengths must be in [0, 2**31 - 1]."""
    x = lengths.astype(np.int64)
    if x.size and (int(x.min()) < 0 or int(x.max()) > LUCENE_MAX_LENGTH):
        raise ValueError(f"`lengths` must be in [0, {LUCENE_MAX_LENGTH}] (a Java int), "
                         f"but got values in [{int(x.min())}, {int(x.max())}]")
    v = np.maximum(x - LUCENE_FREE, 0)
    bits = np.frexp(v.astype(np.float64))[1].astype(np.int64)  # bit length of v, exact below 2**53
    shift = np.maximum(bits - 4, 0)
    int4 = np.where(bits < 4, v, ((v >> shift) & 0x07) | ((shift + 1) << 3))
    return np.where(x < LUCENE_FREE, x, LUCENE_FREE + int4).astype(np.uint8)


def lucene_code_length(codes: np.ndarray) -> np.ndarray:
    """The length each one-byte code stands for, SmallFloat.byte4ToInt: int64, shape of `codes`."""
    c = codes.astype(np.int64)
    i = np.maximum(c - LUCENE_FREE, 0)
    shift = (i >> 3) - 1
    int4 = np.where(shift < 0, i & 0x07, ((i & 0x07) | 0x08) << np.maximum(shift, 0))
    return np.where(c < LUCENE_FREE, c, LUCENE_FREE + int4)


def inv_norms(lengths: np.ndarray, avgdl: np.ndarray, b: float, quantization: str) -> np.ndarray:
    """float32(1 / (1 - b + b * L / avgdl_f)) per field row, shape of `lengths` (F, X), L being
    the length quantised as `quantization` says; 0 where L = 0 (such a field holds no term, and 0
    keeps tf * inv_norm finite when b = 1). avgdl: float64 (F,)."""
    length = (lucene_length(lengths) if quantization == "lucene" else lengths).astype(np.float64)
    avg = np.where(avgdl > 0, avgdl, 1.0)[:, None]
    denom = 1.0 - b + b * length / avg
    out = np.zeros(length.shape, dtype=np.float64)
    np.divide(1.0, denom, out=out, where=length > 0)
    return out.astype(np.float32)


def norm_codes(lengths: np.ndarray, quantization: str) -> np.ndarray:
    """The kernels' norm_code, shape of `lengths` (F, N), C-contiguous: lucene_code (uint8) under
    "lucene"; under "exact" the lengths in the smallest unsigned dtype that holds them."""
    if quantization == "lucene":
        return np.ascontiguousarray(lucene_code(lengths))
    # A copy, always writable: a read-only memory map would be another type for Numba.
    return np.array(lengths, dtype=np.min_scalar_type(int(lengths.max(initial=0))), order="C")


def norm_table(avgdl: np.ndarray, b: float, quantization: str, codes: np.ndarray) -> np.ndarray:
    """The kernels' norm_table, float32 (F, C): entry [f, c] is inv_norms of the length code c
    stands for (0 for length 0). C = 256 under "lucene"; max(codes) + 1 under "exact".
    avgdl: float64 (F,); codes: any codes the table must cover (the documents', the blocks')."""
    if quantization == "lucene":
        length = lucene_code_length(np.arange(LUCENE_CODES))
    else:
        length = np.arange(int(codes.max(initial=0)) + 1, dtype=np.int64)
    return np.ascontiguousarray(inv_norms(np.broadcast_to(length, (avgdl.shape[0], length.size)), avgdl, b, "exact"))
