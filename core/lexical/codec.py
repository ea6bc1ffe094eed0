"""Block-compressed postings: the lexical index's on-disk and in-memory layout.

Each term's postings (ascending document ids, one term frequency per field) are cut into blocks
of BLOCK = 128 documents (the last block of a term may be shorter). A block stores:
- its document ids as gaps: the first id in `block_first`, then (n - 1) values d[i] - d[i-1] - 1,
  bit-packed at the block's width `block_bits[b, 0]`;
- one stream per field of raw term frequencies (0 where the document lacks the term in that
  field), bit-packed at width `block_bits[b, 1 + f]` (0 bits when every value is 0);
- for pruning, the largest frequency `block_max_tf[b, f]` and the shortest field length
  `block_min_len[b, f]` among the block's documents that hold the term in field f. A block's
  score upper bound is derived from these two at load time, so it stays valid when the global
  statistics (N, average lengths) change.
Streams are packed little-endian into one uint32 arena `words`; a block starts at word
`block_words[b]`, each stream on a word boundary. `term_blocks[t]:term_blocks[t + 1]` are term
t's blocks; `block_last[b]` (its last document) lets a cursor skip whole blocks.

Plain functions in the Numba subset; `core.lexical.jit` compiles them.
"""

from __future__ import annotations

import numpy as np

BLOCK = 128


def bit_width(value: int) -> int:
    """Bits needed to write `value` (>= 0): 0 for 0."""
    bits = 0
    while value > 0:
        bits += 1
        value >>= 1
    return bits


def stream_words(n: int, bits: int) -> int:
    """uint32 words that n values of `bits` bits occupy."""
    return (n * bits + 31) >> 5


def pack(values: np.ndarray, n: int, bits: int, words: np.ndarray, pos: int) -> int:
    """Write values[:n] (each < 2**bits) at `bits` bits each into zeroed words[pos:]; returns the
    word after the stream."""
    if bits == 0:
        return pos
    for i in range(n):
        bit = i * bits
        w = pos + (bit >> 5)
        shift = bit & 31
        v = np.uint64(values[i]) << np.uint64(shift)
        words[w] |= np.uint32(v & np.uint64(0xFFFFFFFF))
        if shift + bits > 32:
            words[w + 1] |= np.uint32(v >> np.uint64(32))
    return pos + stream_words(n, bits)


def packed_value(words: np.ndarray, pos: int, i: int, bits: int) -> int:
    """Value i of a stream of `bits`-bit values (bits >= 1) packed from words[pos]."""
    bit = i * bits
    w = pos + (bit >> 5)
    shift = bit & 31
    v = np.uint64(words[w]) >> np.uint64(shift)
    if shift + bits > 32:
        v |= np.uint64(words[w + 1]) << np.uint64(32 - shift)
    return int(v & np.uint64((1 << bits) - 1))


def wide_value(words: np.ndarray, pos: np.uint64, bit: np.uint64, mask: np.uint64) -> np.uint64:
    """The value at bit offset `bit` of the stream packed from words[pos], read from two words
    without a branch (the word after the value's first must exist); mask = 2**bits - 1. Unsigned
    indices: Numba adds no negative-index arithmetic."""
    w = pos + (bit >> np.uint64(5))
    pair = np.uint64(words[w]) | (np.uint64(words[w + np.uint64(1)]) << np.uint64(32))
    return (pair >> (bit & np.uint64(31))) & mask


def unpack(words: np.ndarray, pos: int, n: int, bits: int, out: np.ndarray) -> int:
    """Read n values of `bits` bits from words[pos:] into out[:n]; returns the word after the stream."""
    if bits == 0:
        for i in range(n):
            out[i] = 0
        return pos
    end = pos + stream_words(n, bits)
    if end < words.shape[0]:  # a word follows the stream: every value is read without a branch
        mask = np.uint64((1 << bits) - 1)
        for i in range(np.uint64(n)):
            out[i] = wide_value(words, np.uint64(pos), i * np.uint64(bits), mask)
        return end
    for i in range(n):
        out[i] = packed_value(words, pos, i, bits)
    return end


def decode_docs(words: np.ndarray, block_words: np.ndarray, block_bits: np.ndarray, block_first: np.ndarray,
                block_n: np.ndarray, b: int, docs: np.ndarray) -> int:
    """Decode the documents of block b into docs[:n] (int64); returns n."""
    n = int(block_n[b]) + 1
    pos = int(block_words[b])
    bits = int(block_bits[b, 0])
    d = int(block_first[b])
    docs[0] = d
    if bits > 0 and pos + stream_words(n - 1, bits) < words.shape[0]:  # gaps read and summed in one pass
        mask = np.uint64((1 << bits) - 1)
        for i in range(np.uint64(n - 1)):
            d += int(wide_value(words, np.uint64(pos), i * np.uint64(bits), mask)) + 1
            docs[i + np.uint64(1)] = d
        return n
    unpack(words, pos, n - 1, bits, docs[1:])
    for i in range(1, n):
        d += docs[i] + 1
        docs[i] = d
    return n


def decode_block(words: np.ndarray, block_words: np.ndarray, block_bits: np.ndarray, block_first: np.ndarray,
                 block_n: np.ndarray, b: int, docs: np.ndarray, tfs: np.ndarray) -> int:
    """Decode block b: its documents into docs[:n] (int64, `decode_docs`) and its frequencies into
    tfs[f, :n] (uint32, shape (F, BLOCK)). Returns n."""
    n = decode_docs(words, block_words, block_bits, block_first, block_n, b, docs)
    pos = int(block_words[b]) + stream_words(n - 1, int(block_bits[b, 0]))
    for f in range(tfs.shape[0]):
        pos = unpack(words, pos, n, int(block_bits[b, 1 + f]), tfs[f])
    return n


def _block_layout(offsets: np.ndarray, doc_ids: np.ndarray, tfs: np.ndarray, lengths: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """First pass of `encode`: term_blocks, block_bits, block_words, block_max_tf, block_min_len."""
    n_terms = offsets.shape[0] - 1
    n_fields = tfs.shape[0]
    term_blocks = np.zeros(n_terms + 1, dtype=np.int64)
    for t in range(n_terms):
        term_blocks[t + 1] = term_blocks[t] + (offsets[t + 1] - offsets[t] + BLOCK - 1) // BLOCK
    n_blocks = term_blocks[n_terms]
    block_bits = np.zeros((n_blocks, 1 + n_fields), dtype=np.uint8)
    block_words = np.zeros(n_blocks + 1, dtype=np.int64)
    block_max_tf = np.zeros((n_blocks, n_fields), dtype=np.uint32)
    block_min_len = np.zeros((n_blocks, n_fields), dtype=np.uint32)
    for t in range(n_terms):
        for b in range(term_blocks[t], term_blocks[t + 1]):
            start = offsets[t] + (b - term_blocks[t]) * BLOCK
            stop = min(start + BLOCK, offsets[t + 1])
            max_gap = 0
            for p in range(start + 1, stop):
                gap = int(doc_ids[p]) - int(doc_ids[p - 1]) - 1
                if gap > max_gap:
                    max_gap = gap
            bits = bit_width(max_gap)
            block_bits[b, 0] = bits
            size = stream_words(stop - start - 1, bits)
            for f in range(n_fields):
                top = 0
                shortest = 0xFFFFFFFF
                for p in range(start, stop):
                    tf = int(tfs[f, p])
                    if tf > 0:
                        top = tf if tf > top else top
                        length = int(lengths[f, doc_ids[p]])
                        shortest = length if length < shortest else shortest
                block_max_tf[b, f] = top
                block_min_len[b, f] = shortest if top > 0 else 0
                block_bits[b, 1 + f] = bit_width(top)
                size += stream_words(stop - start, bit_width(top))
            block_words[b + 1] = block_words[b] + size
    return term_blocks, block_bits, block_words, block_max_tf, block_min_len


def encode(offsets: np.ndarray, doc_ids: np.ndarray, tfs: np.ndarray, lengths: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                      np.ndarray, np.ndarray]:
    """Block-compress postings.

    offsets: int64 (T + 1,), term t's postings are [offsets[t], offsets[t + 1]);
    doc_ids: uint32 (P,), ascending within a term; tfs: uint32 (F, P); lengths: uint32 (F, N).
    Returns (term_blocks int64 (T + 1,), block_first uint32 (B,), block_last uint32 (B,),
    block_n uint8 (B,) = documents - 1, block_words int64 (B + 1,), block_bits uint8 (B, 1 + F),
    block_max_tf uint32 (B, F), block_min_len uint32 (B, F), words uint32 (W,)).
    """
    term_blocks, block_bits, block_words, block_max_tf, block_min_len = _block_layout(offsets, doc_ids, tfs, lengths)
    n_blocks = block_bits.shape[0]
    block_first = np.zeros(n_blocks, dtype=np.uint32)
    block_last = np.zeros(n_blocks, dtype=np.uint32)
    block_n = np.zeros(n_blocks, dtype=np.uint8)
    words = np.zeros(block_words[n_blocks], dtype=np.uint32)
    gaps = np.zeros(BLOCK, dtype=np.uint32)
    for t in range(offsets.shape[0] - 1):
        for b in range(term_blocks[t], term_blocks[t + 1]):
            start = offsets[t] + (b - term_blocks[t]) * BLOCK
            stop = min(start + BLOCK, offsets[t + 1])
            block_first[b] = doc_ids[start]
            block_last[b] = doc_ids[stop - 1]
            block_n[b] = stop - start - 1
            for p in range(start + 1, stop):
                gaps[p - start - 1] = doc_ids[p] - doc_ids[p - 1] - 1
            pos = pack(gaps, stop - start - 1, int(block_bits[b, 0]), words, int(block_words[b]))
            for f in range(tfs.shape[0]):
                pos = pack(tfs[f, start:stop], stop - start, int(block_bits[b, 1 + f]), words, pos)
    return (term_blocks, block_first, block_last, block_n, block_words, block_bits, block_max_tf, block_min_len,
            words)
