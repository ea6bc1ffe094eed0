"""Kernels of the lexical index build: tokenisation with interning, term counting, posting scatter.

Plain functions in the Numba subset; `core.lexical.jit` compiles them. Each has a short Python or
NumPy reference below it (`*_reference`), and tests check that they agree.

`tokenize` is step 4 of core.analysis (the `_TOKEN` regular expression and the possessive filter)
over already normalised text given as code points, with a character-class table taken from the
regular expression engine itself (`char_classes`). Every token is interned in an open-addressing
hash table (FNV-1a over code points, linear probing, load <= 1/2, short tokens held in the
entries themselves) so the caller sees one small integer per token and handles each distinct
token (stop words, stemming) once.
"""

from __future__ import annotations

import re
from functools import cache

import numpy as np

from core.analysis import _APOSTROPHES
from core.analysis import tokenize as tokenize_text

# Character classes (bit flags) of the tokenizer, indexed by code point.
WORD = 1  # \w
DIGIT = 2  # \d
APOSTROPHE = 4  # joins letters, and starts the possessive "'s"
JOIN_WORD = 8  # "." and ":": join two runs of \w
JOIN_DIGIT = 16  # "," and ";": join two digits
MAX_CODE_POINT = 0x10FFFF
# Columns of the interning table, uint64 (slots, 4), one 32-byte entry per slot:
# HEAD: 32 bits of the token's hash | its length << 32;
# ID: the token id + 1 (0: an empty slot) | where its code points start in the arena << 32;
# TEXT0, TEXT1: a short token's code points, one byte each (see token_key), else 0. A short
# token is found without reading the arena, which for a large vocabulary is a cache miss.
HEAD, ID, TEXT0, TEXT1 = 0, 1, 2, 3
SHORT = 16  # tokens of at most SHORT code points, all below 256, are short
LOW32 = 0xFFFFFFFF
S = ord("s")


@cache
def char_classes() -> np.ndarray:
    """uint8 (0x110000,): the class bits of every code point, \\w and \\d as `re` defines them."""
    every = "".join(map(chr, range(MAX_CODE_POINT + 1)))
    classes = np.zeros(MAX_CODE_POINT + 1, dtype=np.uint8)
    for pattern, bit in ((r"\w", WORD), (r"\d", DIGIT)):
        classes[[m.start() for m in re.finditer(pattern, every)]] |= bit
    classes[[ord(c) for c in _APOSTROPHES]] |= APOSTROPHE
    classes[[ord("."), ord(":")]] |= JOIN_WORD
    classes[[ord(","), ord(";")]] |= JOIN_DIGIT
    return classes


def token_key(codes: np.ndarray, s: int, e: int) -> tuple[np.uint64, np.uint64, np.uint64, bool]:
    """(HEAD, TEXT0, TEXT1, short) of token codes[s:e]. The hash is the high 32 bits of the
    64-bit FNV-1a over the code points, mixed; a short token's code points are packed a byte
    each, little-endian, TEXT0 holding the first 8 and TEXT1 the next 8 (a token never holds 0)."""
    h = np.uint64(14695981039346656037)
    text0 = np.uint64(0)
    text1 = np.uint64(0)
    short = e - s <= SHORT
    for i in range(s, e):
        c = np.uint64(codes[i])
        h = (h ^ c) * np.uint64(1099511628211)
        if c > 255:
            short = False
        k = i - s
        if k < 8:
            text0 |= c << np.uint64(8 * k)
        elif k < SHORT:
            text1 |= c << np.uint64(8 * (k - 8))
    if not short:
        text0 = np.uint64(0)
        text1 = np.uint64(0)
    head = ((h ^ (h << np.uint64(29))) >> np.uint64(32)) | (np.uint64(e - s) << np.uint64(32))
    return head, text0, text1, short


def rehash(table: np.ndarray, size: int) -> np.ndarray:
    """The entries of `table` in a new table of `size` slots (a power of two)."""
    out = np.zeros((size, 4), dtype=np.uint64)
    for old in range(table.shape[0]):
        if table[old, ID] != 0:
            slot = np.int64(table[old, HEAD] & np.uint64(LOW32)) & (size - 1)
            while out[slot, ID] != 0:
                slot = (slot + 1) & (size - 1)
            out[slot] = table[old]
    return out


def grown(a: np.ndarray, used: int, need: int) -> np.ndarray:
    """`a` itself if it holds `need` items, else a copy of a[:used] in an array of max(2 len(a), need)."""
    if need <= a.size:
        return a
    out = np.zeros(max(2 * a.size, need), dtype=a.dtype)
    out[:used] = a[:used]
    return out


def find_slot(codes: np.ndarray, s: int, e: int, head: np.uint64, text0: np.uint64, text1: np.uint64, short: bool,
              table: np.ndarray, arena: np.ndarray) -> int:
    """The slot of token codes[s:e] in the table: where it is, or the empty slot where it goes."""
    mask = table.shape[0] - 1
    slot = np.int64(head & np.uint64(LOW32)) & mask
    while table[slot, ID] != 0:
        if table[slot, HEAD] == head:
            if short:
                if table[slot, TEXT0] == text0 and table[slot, TEXT1] == text1:
                    return slot
            else:
                off = np.int64(table[slot, ID] >> np.uint64(32))
                i = 0
                while i < e - s and arena[off + i] == codes[s + i]:
                    i += 1
                if i == e - s:
                    return slot
        slot = (slot + 1) & mask
    return slot


def token_end(codes: np.ndarray, classes: np.ndarray, i: int, end: int) -> int:
    """End of the token starting at a \\w character codes[i]: runs of \\w joined across one
    apostrophe, "." or ":" between \\w, or one "," or ";" between digits (analysis._TOKEN)."""
    while True:
        while i < end and classes[codes[i]] & WORD:
            i += 1
        if i + 1 >= end:
            return i
        joiner = classes[codes[i]]
        after = classes[codes[i + 1]]
        if (joiner & (APOSTROPHE | JOIN_WORD) and after & WORD) or \
                (joiner & JOIN_DIGIT and classes[codes[i - 1]] & DIGIT and after & DIGIT):
            i += 2
        else:
            return i


def tokenize(codes: np.ndarray, doc_bounds: np.ndarray, classes: np.ndarray, max_chars: int, table: np.ndarray,
             tok_off: np.ndarray, arena: np.ndarray, n_tok: int, out_ids: np.ndarray, out_counts: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Tokenise documents and intern their tokens.

    codes: code points (uint32, or uint8 for ASCII) of the normalised documents back to back, document d in
    codes[doc_bounds[d]:doc_bounds[d + 1]] (doc_bounds int64 (n + 1,)). classes: char_classes().
    Tokens as core.analysis.tokenize cuts them: possessive "'s" removed, tokens longer than
    max_chars dropped. The interning state is updated and returned, reallocated when full: table
    uint64 (slots, 4) (see HEAD, ID, TEXT0, TEXT1; slots a power of two, at most half full), n_tok
    tokens so far, token i in arena[tok_off[i]:tok_off[i + 1]] (uint32 code points, int64 offsets).
    Writes the token ids into out_ids (int32, at least len(codes) long) and the tokens per
    document into out_counts (int64 (n,)).
    Returns (table, tok_off, arena, n_tok, tokens written).
    """
    d = 0
    i = doc_bounds[0]
    n_out = 0
    before = 0
    while True:
        d, i, n_tok, n_out, before, pending = tokenize_some(codes, doc_bounds, classes, max_chars, table, tok_off,
                                                            arena, n_tok, out_ids, out_counts, d, i, n_out, before)
        if pending == 0:
            return table, tok_off, arena, n_tok, n_out
        used = tok_off[n_tok]
        if used + pending > LOW32 or n_tok + 1 > LOW32:
            raise ValueError("the distinct tokens of a field group exceed 2**32 code points or ids")
        if 2 * (n_tok + 1) > table.shape[0]:
            table = rehash(table, 2 * table.shape[0])
        tok_off = grown(tok_off, n_tok + 1, n_tok + 2)
        arena = grown(arena, used, used + pending)


def tokenize_some(codes: np.ndarray, doc_bounds: np.ndarray, classes: np.ndarray, max_chars: int,
                  table: np.ndarray, tok_off: np.ndarray, arena: np.ndarray, n_tok: int, out_ids: np.ndarray,
                  out_counts: np.ndarray, d: int, i: int, n_out: int, before: int
                  ) -> tuple[int, int, int, int, int, int]:
    """The loop of `tokenize`, from document d, code point i, n_out tokens written (`before` of
    them before document d), until the end or a new token that does not fit the state's arrays
    (which `tokenize` then grows: reassigning arrays in this loop would slow it down by a third).
    Returns (d, i, n_tok, n_out, before, pending): pending = 0 at the end, else the length of the
    token that did not fit, which starts at i."""
    n_docs = doc_bounds.size - 1
    while d < n_docs:
        end = doc_bounds[d + 1]
        while i < end:
            if not classes[codes[i]] & WORD:
                i += 1
                continue
            s = i
            i = token_end(codes, classes, i + 1, end)
            e = i
            if e - s >= 2 and codes[e - 1] == S and classes[codes[e - 2]] & APOSTROPHE:
                e -= 2
            if e - s > max_chars:
                continue
            head, text0, text1, short = token_key(codes, s, e)
            slot = find_slot(codes, s, e, head, text0, text1, short, table, arena)
            t = int(table[slot, ID] & np.uint64(LOW32)) - 1
            if t < 0:  # a new token
                used = tok_off[n_tok]
                if n_tok + 2 > tok_off.size or used + e - s > arena.size or 2 * (n_tok + 1) > table.shape[0]:
                    return d, s, n_tok, n_out, before, e - s
                for j in range(e - s):
                    arena[used + j] = codes[s + j]
                tok_off[n_tok + 1] = used + e - s
                table[slot, HEAD] = head
                table[slot, ID] = np.uint64(n_tok + 1) | (np.uint64(used) << np.uint64(32))
                table[slot, TEXT0] = text0
                table[slot, TEXT1] = text1
                t = n_tok
                n_tok += 1
            out_ids[n_out] = t
            n_out += 1
        out_counts[d] = n_out - before
        before = n_out
        d += 1
    return d, i, n_tok, n_out, before, 0


def tokenize_reference(texts: list[str], max_chars: int) -> list[list[str]]:
    """The tokens `tokenize` must find: core.analysis.tokenize on each (normalised) text."""
    return [tokenize_text(t, max_chars) for t in texts]


def count_terms(terms: np.ndarray, counts: np.ndarray, n_terms: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Count each document's terms over the G fields of one vocabulary group.

    terms: int32, the term id of every token, field after field, within a field document after
    document (-1: a dropped token, a stop word); counts: int64 (G, n), tokens per field and
    document; term ids < n_terms.
    Returns (pair_counts int32 (n,): distinct terms per document; pair_terms int32 (P,): each
    document's distinct terms in order of first occurrence, document after document; pair_tfs
    uint32 (G, P): their frequency per field; lengths uint32 (G, n): terms kept per field and document).
    """
    n_fields, n_docs = counts.shape
    pos = np.full(n_terms, -1, dtype=np.int64)
    pair_terms = np.empty(terms.size, dtype=np.int32)
    pair_tfs = np.zeros((n_fields, terms.size), dtype=np.uint32)
    pair_counts = np.zeros(n_docs, dtype=np.int32)
    lengths = np.zeros((n_fields, n_docs), dtype=np.uint32)
    cursor = np.zeros(n_fields, dtype=np.int64)
    for f in range(1, n_fields):
        cursor[f] = cursor[f - 1] + counts[f - 1].sum()
    p = 0
    for d in range(n_docs):
        first = p
        for f in range(n_fields):
            for j in range(cursor[f], cursor[f] + counts[f, d]):
                t = terms[j]
                if t < 0:
                    continue
                lengths[f, d] += 1
                if pos[t] < first:
                    pos[t] = p
                    pair_terms[p] = t
                    p += 1
                pair_tfs[f, pos[t]] += 1
            cursor[f] += counts[f, d]
        pair_counts[d] = p - first
    return pair_counts, pair_terms[:p].copy(), pair_tfs[:, :p].copy(), lengths


def scatter_postings(pair_counts: np.ndarray, first_doc: int, pair_terms: np.ndarray, pair_tfs: np.ndarray,
                     rows: np.ndarray, lo: int, hi: int, cursor: np.ndarray, doc_ids: np.ndarray, tfs: np.ndarray
                     ) -> None:
    """Write one chunk of (document, term) pairs (count_terms' output, documents first_doc + i,
    pair_terms now global term ids) into the postings, those of terms lo <= t < hi only: pair p
    goes to position cursor[term], which then advances. Chunks scattered in document order leave
    each term's documents ascending; threads may scatter disjoint term ranges at once.
    rows: int64 (G,), the field row in tfs (uint32 (F, P)) of each of the chunk's G fields."""
    p = 0
    for i in range(pair_counts.size):
        doc = first_doc + i
        for _ in range(pair_counts[i]):
            t = pair_terms[p]
            if lo <= t < hi:
                q = cursor[t]
                cursor[t] = q + 1
                doc_ids[q] = doc
                for f in range(rows.size):
                    tfs[rows[f], q] = pair_tfs[f, p]
            p += 1


def postings_reference(docs: np.ndarray, terms: np.ndarray, tfs: np.ndarray, n_terms: int
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(offsets, doc_ids, tfs) of pairs (docs[i], terms[i], tfs[:, i]) sorted by term, then document."""
    order = np.lexsort((docs, terms))
    offsets = np.zeros(n_terms + 1, dtype=np.int64)
    np.cumsum(np.bincount(terms, minlength=n_terms), out=offsets[1:])
    return offsets, docs[order].astype(np.uint32), tfs[:, order]
