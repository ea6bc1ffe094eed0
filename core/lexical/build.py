"""Analysis and posting construction for the lexical index build.

analyse() turns the entities' text fields into flat postings, one list per term, with one term
frequency per field. Fields are partitioned into vocabulary groups: the fields of one group share
one vocabulary (one analyzer configuration), so a term of that group carries a frequency in each
of its fields; a term of one group never has a frequency in another group's fields.

How it is fast: the entities are read once, in chunks (text_chunks). Per chunk and field, the
texts are normalised as core.analysis.normalize does, then one kernel tokenises them all and
interns each token in a hash table (core.lexical.build_kernels.tokenize), so stop words and
stemming apply once per distinct token, not per occurrence; a second kernel counts each
document's terms. The terms are exactly Analyzer's (tests/core/lexical/test_build.py checks it on
random unicode). With workers > 1, chunks are analysed in forked processes, each with its own
tables, and the parent merges their vocabularies. Every kernel signature is compiled in the parent
before it forks (ASCII and wider text take different ones): a numba compile in a child forked from
a process that runs threads (gRPC's, a test runner's) was seen to spin for ever. A fork server
would avoid forking such a process but costs 2.5-4 s of worker start-up per build (measured on
227k documents: 1.1-1.8 s forked vs 3.9-5.7 s). Postings are scattered per term at the end, in
document order, so each list comes out ascending. Memory: the big columns are uint32/int32 arrays
(about 8 bytes per (document, term) pair while collecting, 4 + 4F per posting in the result).
"""

from __future__ import annotations

import collections
import functools
import itertools
import math
import multiprocessing
import os
import sys
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.pool import AsyncResult
from typing import TYPE_CHECKING

import numpy as np
import Stemmer
from tqdm import tqdm

from core.analysis import STOPWORD_LISTS, AnalyzerConfig
from core.catalog import Entity
from core.lexical import build_kernels, jit

if TYPE_CHECKING:  # index.py imports this module: no import cycle at run time
    from core.lexical.config import FieldSpec

MAX_CHUNK_DOCS = 4096
MAX_CHUNK_CHARS = 1 << 24  # code points: the tokenizer's input and output take 8 bytes each


@dataclass(frozen=True)
class Postings:
    """Flat postings of every term.

    terms: one list per vocabulary group, each sorted; the global term id runs group after group,
        the position in its group's sorted list (T = total terms).
    offsets: int64 (T + 1,), term t's postings are offsets[t]:offsets[t + 1].
    doc_ids: uint32 (P,), ascending within each term.
    tfs: uint32 (F, P), the posting term's frequency in field f (0 where the document lacks it there).
    lengths: uint32 (F, N), terms per field and document after analysis (stop words removed).
    """

    terms: list[list[str]]
    offsets: np.ndarray
    doc_ids: np.ndarray
    tfs: np.ndarray
    lengths: np.ndarray


def check_groups(groups: Sequence[Sequence[int]], n_fields: int) -> None:
    """Raise ValueError unless `groups` is a partition of range(n_fields) into non-empty groups."""
    flat = sorted(f for g in groups for f in g)
    if flat != list(range(n_fields)) or any(len(g) == 0 for g in groups):
        raise ValueError(f"`groups` must partition the field indices 0..{n_fields - 1} into non-empty groups, "
                         f"but got {[list(g) for g in groups]}")


def analyse(entities: Sequence[Entity], fields: Sequence[FieldSpec], groups: Sequence[Sequence[int]],
            *, progress: bool = True, workers: int = 1) -> Postings:
    """Analyse field f of every entity (text entity.fields.get(fields[f].name, "")) with
    fields[f].analyzer and collect the postings of every term, group by group (see Postings).
    The fields of a group must share one analyzer configuration. workers > 1 analyses chunks of
    documents in that many forked processes (where the platform can fork)."""
    check_groups(groups, len(fields))
    for g in groups:
        if len({fields[f].analyzer for f in g}) > 1:
            raise ValueError(f"fields of one group must share one analyzer configuration, but fields "
                             f"{[fields[f].name for f in g]} differ")
    if workers < 1:
        raise ValueError(f"`workers` must be >= 1, but got {workers}")
    n = len(entities)
    size = max(1, min(MAX_CHUNK_DOCS, math.ceil(n / (4 * workers))))
    parallel = workers > 1 and n > size and "fork" in multiprocessing.get_all_start_methods()
    merger = _Merger(groups, len(fields), n, from_one_process=not parallel)
    texts = text_chunks(entities, [f.name for f in fields], size)
    with tqdm(total=n, desc="lexical: analysing", unit="doc", disable=not progress) as bar:
        for chunk in _analysed(texts, fields, groups, workers if parallel else 1):
            merger.add(chunk)
            bar.update(chunk.stop - chunk.start)
    if merger.n_docs != n:
        raise ValueError(f"`entities` yielded {merger.n_docs} entities but has length {n}")
    return merger.postings(threads=workers)


# -- per process: interning tokens and counting terms ------------------------------------------


@functools.cache
def _combining_marks() -> dict[int, None]:
    """str.translate table deleting the combining marks (unicodedata.combining(c) != 0)."""
    return {c: None for c in range(sys.maxunicode + 1) if unicodedata.combining(chr(c))}


def _normalise(text: str, config: AnalyzerConfig) -> str:
    """core.analysis.normalize(text), faster: NFKC leaves ASCII as it is and casefolding lowers
    it, with no accents to fold; accents are folded by one str.translate, not a generator."""
    if text.isascii():
        return text.lower() if config.casefold else text
    text = unicodedata.normalize("NFKC", text)
    if config.casefold:
        text = text.casefold()
    if config.fold_accents and not text.isascii():
        text = unicodedata.normalize("NFC", unicodedata.normalize("NFD", text).translate(_combining_marks()))
    return text


class _Vocabulary:
    """One group's tokens and terms in one process: token id -> term id (-1: a stop word)."""

    def __init__(self, config: AnalyzerConfig) -> None:
        self.config = config
        self.stop = STOPWORD_LISTS[config.stopwords]
        self.stemmer = None if config.stemmer == "none" else Stemmer.Stemmer(config.stemmer)
        if self.stemmer is not None:
            self.stemmer.maxCacheSize = 0  # each token is stemmed once: a cache only costs
        self.table = np.zeros((1 << 12, 4), dtype=np.uint64)
        self.tok_off = np.zeros(1 << 11, dtype=np.int64)
        self.arena = np.zeros(1 << 14, dtype=np.uint32)
        self.n_tokens = 0
        self.token_term = np.zeros(1 << 11, dtype=np.int32)
        self.term_ids: dict[str, int] = {}
        self.new_terms: list[str] = []  # terms added since the last take_new_terms()

    def normalised(self, texts: list[str]) -> tuple[str, np.ndarray]:
        """(the texts normalised as core.analysis.normalize does, back to back; their lengths int64)."""
        c = self.config
        joined = "".join(texts)
        if not joined.isascii():
            texts = [_normalise(t, c) for t in texts]
            joined = "".join(texts)
        elif c.casefold:
            joined = joined.lower()
        return joined, np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))

    def terms(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(term id int32 of every token, -1 for stop words; tokens per text int64)."""
        joined, lengths = self.normalised(texts)
        doc_bounds = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum(lengths, out=doc_bounds[1:])
        codes = np.frombuffer(joined.encode("ascii"), dtype=np.uint8) if joined.isascii() else \
            np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        ids = np.empty(codes.size, dtype=np.int32)
        counts = np.empty(len(texts), dtype=np.int64)
        known = self.n_tokens
        self.table, self.tok_off, self.arena, self.n_tokens, n_out = jit.tokenize(
            codes, doc_bounds, build_kernels.char_classes(), self.config.max_token_chars, self.table,
            self.tok_off, self.arena, self.n_tokens, ids, counts)
        if self.n_tokens > known:
            self._add_tokens(known)
        return self.token_term[ids[:n_out]], counts

    def _add_tokens(self, known: int) -> None:
        """Map tokens known.. to terms: stop words dropped, the rest stemmed, each once."""
        off = self.tok_off[known:self.n_tokens + 1]
        raw = self.arena[off[0]:off[-1]].tobytes().decode("utf-32-le", "surrogatepass")
        starts = (off - off[0]).tolist()
        tokens = [raw[a:b] for a, b in itertools.pairwise(starts)]
        stop = np.fromiter(map(self.stop.__contains__, tokens), dtype=bool, count=len(tokens))
        kept = [t for t in tokens if t not in self.stop] if stop.any() else tokens
        stems = self.stemmer.stemWords(kept) if self.stemmer is not None and kept else kept
        ids = self.term_ids
        fresh = [t for t in dict.fromkeys(stems) if t not in ids]
        ids.update(zip(fresh, range(len(ids), len(ids) + len(fresh)), strict=True))
        self.new_terms += fresh
        if self.n_tokens > self.token_term.size:
            self.token_term = np.concatenate([self.token_term[:known],
                                              np.zeros(max(self.n_tokens, 2 * known), dtype=np.int32)])
        mapped = self.token_term[known:self.n_tokens]
        mapped[stop] = -1
        mapped[~stop] = np.fromiter(map(ids.__getitem__, stems), dtype=np.int32, count=len(stems))

    def take_new_terms(self) -> list[str]:
        out, self.new_terms = self.new_terms, []
        return out


@dataclass(frozen=True)
class _GroupChunk:
    """One group's terms in a chunk of documents (see build_kernels.count_terms); term ids are
    the analysing process's, whose new terms (in id order) are `new_terms`."""

    new_terms: list[str]
    pair_counts: np.ndarray
    pair_terms: np.ndarray
    pair_tfs: np.ndarray
    lengths: np.ndarray


@dataclass(frozen=True)
class _Chunk:
    pid: int
    start: int
    stop: int
    groups: list[_GroupChunk]


class _Analyser:
    """Analyses chunks of documents in one process, keeping its vocabularies from chunk to chunk."""

    def __init__(self, fields: Sequence[FieldSpec], groups: Sequence[Sequence[int]]) -> None:
        self.groups = [list(g) for g in groups]
        self.vocabularies = [_Vocabulary(fields[g[0]].analyzer) for g in groups]

    def chunk(self, item: tuple[int, list[list[str]]]) -> _Chunk:
        """item: (first document, texts per field of the chunk's documents)."""
        start, texts = item
        out = []
        for group, vocabulary in zip(self.groups, self.vocabularies, strict=True):
            parts = [vocabulary.terms(texts[f]) for f in group]
            terms = np.concatenate([p[0] for p in parts])
            counts = np.stack([p[1] for p in parts])
            pair_counts, pair_terms, pair_tfs, lengths = jit.count_terms(terms, counts, len(vocabulary.term_ids))
            out.append(_GroupChunk(vocabulary.take_new_terms(), pair_counts, pair_terms, pair_tfs, lengths))
        return _Chunk(os.getpid(), start, start + len(texts[0]), out)


def text_chunks(entities: Iterable[Entity], names: list[str], size: int, max_chars: int = MAX_CHUNK_CHARS
           ) -> Iterator[tuple[int, list[list[str]]]]:
    """(first document, texts per field) of chunks of at most `size` entities and, unless one
    document alone is longer, `max_chars` characters, which bounds the kernels' buffers. Read in
    one pass: a lazy Sequence, such as a corpus file, may be slow to index at random."""
    it = iter(entities)
    start = 0
    # Only the field mappings are kept: entities made on the fly (a corpus file's) die at once,
    # which saves the garbage collector and the cache a third of this loop's time.
    while chunk := [e.fields for e in itertools.islice(it, size)]:
        texts = [[fields.get(name, "") for fields in chunk] for name in names]
        ends = np.zeros(len(chunk) + 1, dtype=np.int64)  # characters before each document
        for col in texts:
            ends[1:] += np.fromiter(map(len, col), dtype=np.int64, count=len(chunk))
        np.cumsum(ends, out=ends)
        cut = 0
        while cut < len(chunk):
            stop = max(cut + 1, int(np.searchsorted(ends, ends[cut] + max_chars, "right")) - 1)
            yield start + cut, [col[cut:stop] for col in texts]
            cut = stop
        start += len(chunk)


_WORKER: _Analyser | None = None


def _init_worker(fields: Sequence[FieldSpec], groups: Sequence[Sequence[int]]) -> None:
    global _WORKER
    _WORKER = _Analyser(fields, groups)


def _work(item: tuple[int, list[list[str]]]) -> _Chunk:
    if _WORKER is None:
        raise RuntimeError("worker process not initialised")
    return _WORKER.chunk(item)


def _analysed(texts: Iterator[tuple[int, list[list[str]]]], fields: Sequence[FieldSpec],
              groups: Sequence[Sequence[int]], workers: int) -> Iterator[_Chunk]:
    """The analysed chunks, in order: in this process, or in `workers` forked ones, with at most
    2 * workers chunks in flight so that memory stays bounded. A worker takes its chunks in
    order, so its new terms arrive before the chunks that use them."""
    if workers == 1:
        yield from map(_Analyser(fields, groups).chunk, texts)
        return
    # compile every kernel signature before forking (module docstring): ASCII and wider text
    warm = _Analyser(fields, groups)
    for text in ("warm up", "warm up \u00e9"):
        warm.chunk((0, [[text] for _ in fields]))
    with multiprocessing.get_context("fork").Pool(workers, _init_worker, (fields, groups)) as pool:
        pending: collections.deque[AsyncResult[_Chunk]] = collections.deque()
        for item in texts:
            pending.append(pool.apply_async(_work, (item,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


# -- in the parent: merging vocabularies, scattering postings --------------------------------------


class _Merger:
    """Collects chunks in document order; per group one vocabulary, terms in order of arrival.

    from_one_process: every chunk comes from one process, whose term ids are then the group's."""

    def __init__(self, groups: Sequence[Sequence[int]], n_fields: int, n_docs: int, from_one_process: bool
                 ) -> None:
        self.groups = [np.array(g, dtype=np.int64) for g in groups]
        self.terms: list[list[str]] = [[] for _ in groups]  # in group term id order, from one process
        # From several processes: group term ids by term, in order of arrival (so list(ids) is in id order).
        self.term_ids: list[dict[str, int]] | None = None if from_one_process else [{} for _ in groups]
        self.local: dict[tuple[int, int], np.ndarray] = {}  # (pid, group): process term id -> group term id
        self.chunks: list[tuple[int, list[_GroupChunk]]] = []
        self.lengths = np.zeros((n_fields, n_docs), dtype=np.uint32)
        self.n_docs = 0  # documents added so far

    def add(self, chunk: _Chunk) -> None:
        self.n_docs = chunk.stop
        if chunk.stop > self.lengths.shape[1]:
            raise ValueError(f"`entities` yielded more entities than its length, {self.lengths.shape[1]}")
        for g, part in enumerate(chunk.groups):
            self.lengths[self.groups[g], chunk.start:chunk.stop] = part.lengths
            if self.term_ids is None:
                self.terms[g] += part.new_terms
                continue
            ids = self.term_ids[g]  # setdefault's default is the id of a term not seen yet
            new = np.array([ids.setdefault(t, len(ids)) for t in part.new_terms], dtype=np.int32)
            local = self.local[chunk.pid, g] = np.concatenate([self.local.get((chunk.pid, g), new[:0]), new])
            part.pair_terms[:] = local[part.pair_terms]
        self.chunks.append((chunk.start, chunk.groups))

    def postings(self, threads: int) -> Postings:
        """The postings of every chunk added, scattered by `threads` threads (disjoint term ranges)."""
        names, ranks = self._sorted_terms()
        df = np.zeros(sum(map(len, names)), dtype=np.int64)
        for _, parts in self.chunks:
            for g, part in enumerate(parts):
                part.pair_terms[:] = ranks[g][part.pair_terms]
                df += np.bincount(part.pair_terms, minlength=df.size)
        offsets = np.zeros(df.size + 1, dtype=np.int64)
        np.cumsum(df, out=offsets[1:])
        doc_ids = np.empty(int(offsets[-1]), dtype=np.uint32)
        tfs = np.zeros((self.lengths.shape[0], doc_ids.size), dtype=np.uint32)
        cursor = offsets[:-1].copy()

        def scatter(lo: int, hi: int) -> None:
            for start, parts in self.chunks:
                for g, part in enumerate(parts):
                    jit.scatter_postings(part.pair_counts, start, part.pair_terms, part.pair_tfs, self.groups[g],
                                         lo, hi, cursor, doc_ids, tfs)

        # Term ranges holding about as many postings each.
        cuts = [0, *np.searchsorted(offsets, np.linspace(0, doc_ids.size, threads + 1)[1:-1]).tolist(), df.size]
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(scatter, cuts[:-1], cuts[1:]))
        self.chunks.clear()
        return Postings(terms=names, offsets=offsets, doc_ids=doc_ids, tfs=tfs, lengths=self.lengths)

    def _sorted_terms(self) -> tuple[list[list[str]], list[np.ndarray]]:
        """Per group: its terms sorted, and the global term id of each group term id."""
        names, ranks = [], []
        base = 0
        for terms in self.terms if self.term_ids is None else [list(ids) for ids in self.term_ids]:
            order = sorted(range(len(terms)), key=terms.__getitem__)
            names.append([terms[i] for i in order])
            rank = np.empty(len(terms), dtype=np.int32)
            rank[order] = np.arange(base, base + len(terms), dtype=np.int32)
            ranks.append(rank)
            base += len(terms)
        return names, ranks
