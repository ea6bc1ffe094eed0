"""The segments of a live lexical index (core.lexical.live): the in-memory delta segment, one
base with its delta, and the view one search reads."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from pyroaring import BitMap

from core.analysis import Analyzer
from core.catalog import Entity
from core.lexical.index import LexicalIndex
from core.lexical.norms import norm_codes
from core.lexical.stats import CorpusStats

MIN_CAPACITY = 16


class DeltaSegment:
    """Documents added since the base was built, append-only, in memory.

    postings[g][term] = (docs int64 (cap,), tfs uint32 (F, cap), n): the term's first n postings
    (delta document numbers, ascending). The tuple is replaced whole on append, so a reader sees
    a consistent one without a lock; a reader holding a view of n_delta documents reads only the
    postings below n_delta. lengths: uint32 (F, cap), terms per field and document.
    """

    def __init__(self, base: LexicalIndex) -> None:
        self.groups = base.groups
        self.base_vocab = base.vocab
        self.base_df = np.zeros(len(base.df), dtype=np.int64)  # delta documents holding each base term
        self.fields = [f.name for f in base.config.fields]
        self.analyzers = [Analyzer(f.analyzer) for f in base.config.fields]
        self.popularity_weight = base.config.popularity_weight
        self.entities: list[Entity] = []
        self.quantization = base.config.length_quantization
        self.lengths = np.zeros((len(self.fields), MIN_CAPACITY), dtype=np.uint32)
        self.codes = np.zeros((len(self.fields), MIN_CAPACITY), dtype=np.uint32)  # norm code per field and document
        self.prior = np.zeros(MIN_CAPACITY, dtype=np.float32)
        self.postings: list[dict[str, tuple[np.ndarray, np.ndarray, int]]] = [{} for _ in self.groups]
        self.group_docs = [0] * len(self.groups)  # documents with a non-empty field of the group
        self.length_sums = [0] * len(self.fields)
        self.field_docs = [0] * len(self.fields)

    def __len__(self) -> int:
        return len(self.entities)

    def add(self, entity: Entity) -> None:
        """Analyse `entity` and append it (delta document number len(self) before the call)."""
        j = len(self.entities)
        if j == self.prior.shape[0]:
            self.lengths = np.concatenate([self.lengths, np.zeros_like(self.lengths)], axis=1)
            self.codes = np.concatenate([self.codes, np.zeros_like(self.codes)], axis=1)
            self.prior = np.concatenate([self.prior, np.zeros_like(self.prior)])
        counts = [Counter(a(entity.fields.get(name, ""))) for name, a in zip(self.fields, self.analyzers, strict=True)]
        for f, c in enumerate(counts):
            length = sum(c.values())
            self.lengths[f, j] = length
            self.length_sums[f] += length
            self.field_docs[f] += length > 0
        self.codes[:, j] = norm_codes(self.lengths[:, j:j + 1], self.quantization)[:, 0]
        for g, group in enumerate(self.groups):
            self.group_docs[g] += any(self.lengths[f, j] > 0 for f in group)
            for term in sorted({t for f in group for t in counts[f]}):
                self._append(g, term, j, [counts[f][term] if f in group else 0 for f in range(len(self.fields))])
        if self.popularity_weight > 0:
            # As LexicalIndex: from the Collection's float32 popularity.
            self.prior[j] = np.float32(self.popularity_weight * np.log1p(np.float64(np.float32(entity.popularity))))
        self.entities.append(entity)

    def _append(self, g: int, term: str, j: int, tfs: list[int]) -> None:
        docs, freqs, n = self.postings[g].get(term) or (np.zeros(4, dtype=np.int64),
                                                        np.zeros((len(self.fields), 4), dtype=np.uint32), 0)
        if n == docs.shape[0]:
            docs = np.concatenate([docs, np.zeros_like(docs)])
            freqs = np.concatenate([freqs, np.zeros_like(freqs)], axis=1)
        docs[n] = j
        tid = self.base_vocab[g].get(term)
        if tid is not None:
            self.base_df[tid] += 1
        freqs[:, n] = tfs
        self.postings[g][term] = (docs, freqs, n + 1)

    def term(self, g: int, term: str, n_delta: int) -> tuple[np.ndarray, np.ndarray]:
        """The postings of `term` in group g among the first n_delta documents: (docs, tfs (F, P))."""
        docs, freqs, n = self.postings[g].get(term) or (np.zeros(0, dtype=np.int64),
                                                        np.zeros((len(self.fields), 0), dtype=np.uint32), 0)
        p = int(np.searchsorted(docs[:n], n_delta))
        return docs[:p], freqs[:, :p]


@dataclass(frozen=True)
class Segments:
    """One base and its delta; a merge replaces the whole object."""

    base: LexicalIndex
    base_ids: list[str]
    delta: DeltaSegment
    # a partition's base (core.partitioning): the whole catalog's df of each term the base's
    # documents do not hold, by (group, term); empty for a whole index
    outside_df: Mapping[tuple[int, str], int] = field(default_factory=dict)


@dataclass(frozen=True)
class View:
    """What one search reads: the segments as of `n_delta` delta documents and `deleted`, the base
    re-scored with the combined statistics, the delta's norm codes and live documents."""

    segments: Segments
    base: LexicalIndex
    stats: CorpusStats
    n_delta: int
    deleted: BitMap
    base_live: np.ndarray  # uint8 (n_base,), or (0,) when no base document is deleted
    delta_live: np.ndarray  # bool (n_delta,)
    delta_code: np.ndarray  # (F, n_delta)
    version: int

    @property
    def n_base(self) -> int:
        return self.segments.base.n_docs

    def id_of(self, ordinal: int) -> str:
        n_base = self.n_base
        return self.segments.base_ids[ordinal] if ordinal < n_base else \
            self.segments.delta.entities[ordinal - n_base].id
