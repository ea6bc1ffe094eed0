"""The whole catalog's statistics, for lexical partitions that score as one index over everything.

A lexical index's scores read three statistics of its corpus (core.lexical.index): per vocabulary
group N (documents with a non-empty field of the group), per term df (documents holding it), per
field avgdl (mean length over the documents where the field is not empty). A document partition
(core.partitioning) stores the whole catalog's values of all three, so that each of its documents
gets the same score, bit for bit, as in one index over the whole catalog: idf and avgdl are
computed from the same integers by the same float64 operations. Everything else a score reads
(tf, the document's own lengths, the popularity prior) belongs to the document.

partition_postings slices the postings of the whole catalog (analysed once) to one partition, so
a partitioned build analyses the catalog once, not once per partition.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.lexical.build import Postings


@dataclass(frozen=True, kw_only=True)
class CorpusStats:
    """entities: documents of the catalog; group_docs: N per vocabulary group; length_sums: per
    field, the sum of the documents' lengths (terms after analysis); field_docs: per field, the
    documents where it is not empty."""

    entities: int
    group_docs: tuple[int, ...]
    length_sums: tuple[int, ...]
    field_docs: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.length_sums) != len(self.field_docs):
            raise ValueError(f"`length_sums` and `field_docs` must have one value per field, but got "
                             f"{len(self.length_sums)} and {len(self.field_docs)}")
        values = (self.entities, *self.group_docs, *self.length_sums, *self.field_docs)
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in values):
            raise ValueError(f"`CorpusStats` values must be ints >= 0, but got {self}")

    @classmethod
    def of_lengths(cls, lengths: np.ndarray, groups: Sequence[Sequence[int]]) -> CorpusStats:
        """From the (F, N) document lengths of the whole catalog (Postings.lengths)."""
        non_empty = lengths > 0
        return cls(entities=int(lengths.shape[1]),
                   group_docs=tuple(int(non_empty[list(g)].any(axis=0).sum()) for g in groups),
                   length_sums=tuple(int(s) for s in lengths.sum(axis=1, dtype=np.int64)),
                   field_docs=tuple(int(c) for c in non_empty.sum(axis=1)))

    def avgdl(self) -> np.ndarray:
        """float64 (F,): the mean length of each field over the documents having it, computed as
        LexicalIndex computes it from one index's lengths (an exact float64 sum of integers)."""
        sums = np.array(self.length_sums, dtype=np.float64)
        return sums / np.maximum(np.array(self.field_docs, dtype=np.int64), 1)

    def to_params(self) -> dict[str, Any]:
        return {"entities": self.entities, "group_docs": list(self.group_docs),
                "length_sums": list(self.length_sums), "field_docs": list(self.field_docs)}

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> CorpusStats:
        return cls(entities=int(params["entities"]), group_docs=tuple(int(v) for v in params["group_docs"]),
                   length_sums=tuple(int(v) for v in params["length_sums"]),
                   field_docs=tuple(int(v) for v in params["field_docs"]))


def partition_postings(postings: Postings, ordinals: np.ndarray) -> tuple[Postings, np.ndarray]:
    """The postings of the documents `ordinals` (int64, ascending, distinct) renumbered 0..m-1 in
    that order, the terms none of them holds dropped; and the whole catalog's df (int64) of each
    term kept, in the partition's global term id order."""
    n_docs = postings.lengths.shape[1]
    if ordinals.size and (np.any(np.diff(ordinals) <= 0) or ordinals[0] < 0 or ordinals[-1] >= n_docs):
        raise ValueError(f"`ordinals` must be ascending, distinct and in [0, {n_docs}), but got {ordinals[:5]}...")
    local = np.full(n_docs, -1, dtype=np.int64)
    local[ordinals] = np.arange(ordinals.size, dtype=np.int64)
    df = np.diff(postings.offsets)
    term_of = np.repeat(np.arange(df.size, dtype=np.int64), df)
    keep = local[postings.doc_ids] >= 0
    counts = np.bincount(term_of[keep], minlength=df.size)
    kept_terms = np.flatnonzero(counts)
    offsets = np.zeros(kept_terms.size + 1, dtype=np.int64)
    np.cumsum(counts[kept_terms], out=offsets[1:])
    terms, base = [], 0
    for group_terms in postings.terms:  # global term ids run group after group, each group sorted
        held = counts[base:base + len(group_terms)] > 0
        terms.append([t for t, h in zip(group_terms, held.tolist(), strict=True) if h])
        base += len(group_terms)
    sliced = Postings(terms=terms, offsets=offsets, doc_ids=local[postings.doc_ids[keep]].astype(np.uint32),
                      tfs=np.ascontiguousarray(postings.tfs[:, keep]),
                      lengths=np.ascontiguousarray(postings.lengths[:, ordinals]))
    return sliced, df[kept_terms].astype(np.int64)
