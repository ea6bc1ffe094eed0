"""The lexical index: BM25F (or the per-field BM25 sum) over block-compressed postings.

Scoring, with F indexed fields, L_f(d) the length of field f of document d (Lucene-quantised
when length_quantization = "lucene") and avgdl_f its mean over the documents where f is not empty:
    inv_norm[f, d] = float32(1 / (1 - b + b * L_f(d) / avgdl_f))        (0 when L_f(d) = 0)
    tfw(t, d)      = sum over f of inner_w[f] * tf_f(t, d) * inv_norm[f, d]
    impact(t, d)   = tfw / (k1 + tfw)                                   (k1 = 0: 1 when tfw > 0)
    score(d)       = sum over query terms t, in query order, of qtf_t * outer_w(t) * idf_t * impact(t, d)
    idf_t          = ln(1 + (N - df_t + 0.5) / (df_t + 0.5))
- scoring "bm25f" (default): one vocabulary for all fields, inner_w = the field weights, outer_w = 1,
  N = documents with some non-empty field, df_t = documents holding t in any field.
- scoring "sum": one vocabulary per field, a term belongs to one field f: inner_w = 1, outer_w = the
  weight of f, N = documents with f non-empty, df_t = documents holding t in f. This is the Lucene
  BM25 of each field, weighted and added: w_f * idf * tf / (tf + k1 * (1 - b + b * L / avgdl)).
Scores accumulate in float64. Popularity prior (off by default): + popularity_weight *
ln(1 + popularity) on every document that matched a query term, so that of two equal matches the
more popular one ranks first without letting popularity alone retrieve anything.

On disk (component "lexical", see core.storage and core.lexical.codec for the block layout):
- terms.json: {"groups": [[field name, ...], ...], "terms": [[term, ...], ...]}, one sorted term list
  per vocabulary group; global term ids run group after group;
- term_blocks, block_first, block_last, block_n, block_words, block_bits, words (.npy): the blocks,
  exactly as core.lexical.codec.encode returns them;
- block_max_tf, block_min_len (.npy): per block and field, in the smallest unsigned dtype that fits;
- doc_lengths.npy: (F, N) terms per field and document, in the smallest unsigned dtype that fits;
- in a document partition of a larger catalog (core.partitioning) only: term_df.npy, int64 (T,), each
  term's document frequency in the whole catalog, and params["corpus"], the whole catalog's N per
  group and length sums per field (core.lexical.stats.CorpusStats): scores use these instead of the
  partition's own, so they equal the scores of one index over the whole catalog.
Loading memory-maps the postings; the block score bounds for pruning are computed at load from
block_max_tf and block_min_len with the current statistics and parameters, and the lengths become
one code per document and field (Lucene's one-byte norm, or the exact length) and a per-field
table of inv_norm per code, which is all the kernels read of them (core.lexical.norms).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pyroaring import BitMap
from tqdm import tqdm

from core.analysis import Analyzer, AnalyzerConfig
from core.catalog import Entity
from core.collection import Collection
from core.errors import IndexFormatError
from core.lexical import jit
from core.lexical.build import Postings, analyse
from core.lexical.config import (
    DEFAULT_B,
    DEFAULT_K1,
    DEFAULT_SCORING,
    QUANTIZATIONS,
    SCORINGS,
    FieldSpec,
    LexicalConfig,
    parse_fields,
    parse_flag,
    run_time_params,
)
from core.lexical.norms import lucene_length, norm_codes, norm_table
from core.lexical.stats import CorpusStats
from core.query import Query
from core.storage import ComponentReader, ComponentWriter
from core.types import Hits, StrategyEntry, StrategyKind

__all__ = ["COMPONENT", "DEFAULT_B", "DEFAULT_K1", "DEFAULT_SCORING", "ENTRY", "QUANTIZATIONS", "SCORINGS",
           "FieldSpec", "LexicalConfig", "LexicalIndex", "lucene_length", "parse_fields", "write_index"]

COMPONENT = "lexical"
# The block arrays, in the order core.lexical.codec.encode returns them.
BLOCK_ARRAYS = ("term_blocks", "block_first", "block_last", "block_n", "block_words", "block_bits",
                "block_max_tf", "block_min_len", "words")
# Needed only to compute the block bounds at load: stored compact, widened to uint32 when read.
BOUND_ARRAYS = ("block_max_tf", "block_min_len")
KERNEL_ARRAYS = ("term_blocks", "block_first", "block_last", "block_n", "block_words", "block_bits", "words")


def compact(values: np.ndarray) -> np.ndarray:
    """Non-negative integers in the smallest unsigned dtype that holds them (uint8 at least)."""
    return values.astype(np.min_scalar_type(int(values.max(initial=0))))


class LexicalIndex:
    """A loaded lexical index; implements core.types.Strategy.

    vocab: per vocabulary group, {term: global term id}; blocks: the arrays named in BLOCK_ARRAYS
    (uint32 bounds); doc_lengths: (F, N) unsigned. corpus: for a partition of a larger catalog, that
    catalog's statistics and each term's df in it (int64 (T,)); None: this index is the corpus.
    """

    kind = StrategyKind.LEXICAL
    vector_dim = 0

    def __init__(self, config: LexicalConfig, collection: Collection, vocab: list[dict[str, int]],
                 blocks: Mapping[str, np.ndarray], doc_lengths: np.ndarray,
                 corpus: tuple[CorpusStats, np.ndarray] | None = None) -> None:
        self.config = config
        self.collection = collection
        self.vocab = vocab
        self.groups = config.groups()
        self.blocks = {name: blocks[name] for name in KERNEL_ARRAYS}
        self.block_max_tf = blocks["block_max_tf"]
        self.n_docs = int(doc_lengths.shape[1])
        stats, df = corpus if corpus is not None else (CorpusStats.of_lengths(doc_lengths, self.groups), None)
        if df is None:
            df = postings_per_term(blocks["term_blocks"], blocks["block_n"])
        # (F, N) one small code per document and field.
        self.norm_code = norm_codes(doc_lengths, config.length_quantization)
        self.inner_w = np.array([f.weight if config.scoring == "bm25f" else 1.0 for f in config.fields],
                                dtype=np.float64)
        self.outer_w = [1.0 if config.scoring == "bm25f" else config.fields[g[0]].weight for g in self.groups]
        self.vocab_sizes = [len(v) for v in vocab]
        self.doc_lengths = doc_lengths  # for core.lexical.live's merge (memory-mapped when loaded)
        self.stats, self.df = stats, df
        # (F, B): the code of each block's shortest length, for the bounds (independent of the statistics).
        self.min_len_code = norm_codes(blocks["block_min_len"].T, config.length_quantization).astype(np.int64)
        self.set_stats(stats, df, self.norm_code)
        popularity = np.asarray(collection.popularity, dtype=np.float64)
        self.prior = (config.popularity_weight * np.log1p(popularity)).astype(np.float32) \
            if config.popularity_weight > 0 else np.zeros(0, dtype=np.float32)
        self.prior_max = float(self.prior.max(initial=0.0))
        # Groups sharing an analyzer configuration analyse the query once.
        self.group_analyzer = [config.fields[g[0]].analyzer for g in self.groups]
        self.analyzers = {cfg: Analyzer(cfg) for cfg in self.group_analyzer}

    def set_stats(self, stats: CorpusStats, df: np.ndarray, codes: np.ndarray) -> None:
        """Score with these corpus statistics (stats; df, int64 (T,), per term of this index):
        idf, the per-field norm table (covering `codes`, unsigned, any shape, as well as this
        index's own) and the block bounds, which depend on them, are recomputed. Used at load and
        by core.lexical.live, whose statistics also count the delta segment."""
        config = self.config
        cover = np.array([int(codes.max(initial=0)), int(self.norm_code.max(initial=0))], dtype=np.uint32)
        self.norm_table = norm_table(stats.avgdl(), config.b, config.length_quantization, cover)
        self.idf = term_idf(df, self.vocab_sizes, stats.group_docs)
        # (B, F): inv_norm at each block's shortest length, from the documents' own table.
        min_len_inv_norm = np.ascontiguousarray(np.take_along_axis(self.norm_table, self.min_len_code, axis=1).T)
        self.block_ub = jit.block_upper_bounds(self.block_max_tf, min_len_inv_norm, self.inner_w,
                                               float(config.k1))

    def query_terms(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(term ids int64, term weights float64), group by group, in query order: each known query
        term once per group, weighted qtf * outer_w * idf."""
        analysed: dict[AnalyzerConfig, Counter[str]] = {cfg: Counter(a(text)) for cfg, a in self.analyzers.items()}
        tids: list[int] = []
        weights: list[float] = []
        for g, vocab in enumerate(self.vocab):
            for term, qtf in analysed[self.group_analyzer[g]].items():
                tid = vocab.get(term)
                if tid is not None:
                    tids.append(tid)
                    weights.append(qtf * self.outer_w[g] * float(self.idf[tid]))
        return np.array(tids, dtype=np.int64), np.array(weights, dtype=np.float64)

    def search(self, tids: np.ndarray, weights: np.ndarray, quota: int, mask: np.ndarray, *,
               pruned: bool) -> tuple[np.ndarray, np.ndarray, int]:
        """The top-`quota` kernel over the given terms: (docs int64, scores float64, count); see
        core.lexical.scoring (exhaustive, exact count) and core.lexical.pruning (pruned, count of
        the documents it scored)."""
        kernel = jit.bm25_topk_pruned if pruned else jit.bm25_topk
        b = self.blocks
        docs, scores, count = kernel(tids, weights, b["term_blocks"], b["block_first"], b["block_last"], b["block_n"],
                                     b["block_words"], b["block_bits"], b["words"], self.block_ub, self.norm_code,
                                     self.norm_table, self.inner_w, float(self.config.k1), mask, self.prior,
                                     self.prior_max, self.n_docs, quota)
        return docs, scores, int(count)

    def retrieve(self, query: Query, quota: int, allowed: BitMap | None) -> Hits:
        """The top `quota` by (float32 score desc, ordinal asc) (core.lexical.scoring)."""
        tids, weights = self.query_terms(query.text)
        if tids.size == 0:
            return Hits.empty()
        docs, scores, count = self.search(tids, weights, quota, self.collection.mask(allowed),
                                          pruned=self.config.pruning)
        return Hits(docs, scores.astype(np.float32), count)

    def warm_up(self) -> None:
        """Compile (or load) the configured kernel for this index's own arrays (memory-mapped
        arrays are read-only, a type of their own for Numba), with and without a mask."""
        jit.warm_up()
        for a in self.analyzers.values():
            a("warm up")
        if len(self.idf) == 0:
            return
        tids = np.zeros(1, dtype=np.int64)
        weights = np.ones(1, dtype=np.float64)
        for mask in (np.zeros(0, dtype=np.uint8), np.ones(self.n_docs, dtype=np.uint8)):
            self.search(tids, weights, 1, mask, pruned=self.config.pruning)

    def describe(self) -> dict[str, str]:
        return {**self.config.describe(), "terms": str(len(self.idf))}

    # -- build and storage -------------------------------------------------------------------

    @classmethod
    def build(cls, entities: Sequence[Entity], collection: Collection, root: str | os.PathLike[str],
              options: Mapping[str, Any]) -> None:
        config = LexicalConfig.from_options(options, sorted({name for e in entities for name in e.fields}))
        write_index(entities, config, root, progress=parse_flag(options.get("progress", True)),
                    workers=int(options.get("workers", 1)))

    @classmethod
    def load(cls, root: str | os.PathLike[str], collection: Collection,
             options: Mapping[str, Any] | None = None) -> LexicalIndex:
        """options may override k1, b, popularity_weight and pruning for this process."""
        r = ComponentReader(root, COMPONENT)
        if "postings.roaring" in r.files or "words.npy" not in r.files:
            raise IndexFormatError(r.dir, "this lexical index was written by an older ltrr (Roaring-bitmap "
                                   "postings), which this version cannot read: rebuild it with `ltrr index`")
        config = LexicalConfig.from_params(run_time_params(r.params, options or {}))
        stored = r.read_json("terms.json")
        groups = [[config.fields[f].name for f in g] for g in config.groups()]
        if stored.get("groups") != groups or len(stored.get("terms", ())) != len(groups):
            raise IndexFormatError(r.path("terms.json"), f"holds vocabulary groups {stored.get('groups')}, "
                                   f"the params say {groups}")
        bases = np.cumsum([0] + [len(t) for t in stored["terms"]])
        vocab = [{t: i for i, t in enumerate(names, start=int(base))}
                 for names, base in zip(stored["terms"], bases, strict=False)]
        blocks = {name: np.asarray(r.read_array(f"{name}.npy")) for name in BLOCK_ARRAYS}
        for name in BOUND_ARRAYS:
            blocks[name] = blocks[name].astype(np.uint32)
        doc_lengths = np.asarray(r.read_array("doc_lengths.npy"))
        check_shapes(r, blocks, doc_lengths, n_terms=int(bases[-1]), n_fields=len(config.fields),
                     n_docs=len(collection))
        return cls(config, collection, vocab, blocks, doc_lengths, read_corpus(r, int(bases[-1])))


def read_corpus(r: ComponentReader, n_terms: int) -> tuple[CorpusStats, np.ndarray] | None:
    """The whole catalog's statistics stored in a partition (None in an index of a whole catalog)."""
    if "term_df.npy" not in r.files:
        return None
    df = np.asarray(r.read_array("term_df.npy", mmap=False), dtype=np.int64)
    if df.shape != (n_terms,):
        raise IndexFormatError(r.path("term_df.npy"), f"has shape {df.shape}, expected ({n_terms},)")
    return CorpusStats.from_params(r.params["corpus"]), df


def postings_per_term(term_blocks: np.ndarray, block_n: np.ndarray) -> np.ndarray:
    """int64 (T,): each term's postings (its df in this index), summed over its blocks."""
    postings = np.zeros(block_n.shape[0] + 1, dtype=np.int64)
    np.cumsum(block_n.astype(np.int64) + 1, out=postings[1:])
    return postings[term_blocks[1:]] - postings[term_blocks[:-1]]


def term_idf(df: np.ndarray, group_sizes: Sequence[int], group_docs: Sequence[int]) -> np.ndarray:
    """idf per term, float64 (T,): ln(1 + (N - df + 0.5) / (df + 0.5)), df: int (T,), N =
    group_docs[g] of the term's group (group_sizes[g] terms each, group after group)."""
    n = np.repeat(np.asarray(group_docs, dtype=np.float64), group_sizes)
    dff = df.astype(np.float64)
    return np.log1p((n - dff + 0.5) / (dff + 0.5))


def check_shapes(r: ComponentReader, blocks: Mapping[str, np.ndarray], doc_lengths: np.ndarray, *,
                 n_terms: int, n_fields: int, n_docs: int) -> None:
    """IndexFormatError naming the file when an array disagrees with the others."""
    n_blocks = int(blocks["block_first"].shape[0])
    want = {"term_blocks": (n_terms + 1,), "block_last": (n_blocks,), "block_n": (n_blocks,),
            "block_words": (n_blocks + 1,), "block_bits": (n_blocks, 1 + n_fields),
            "block_max_tf": (n_blocks, n_fields), "block_min_len": (n_blocks, n_fields)}
    for name, shape in want.items():
        if blocks[name].shape != shape:
            raise IndexFormatError(r.path(f"{name}.npy"), f"has shape {blocks[name].shape}, expected {shape}")
    if doc_lengths.shape != (n_fields, n_docs):
        raise IndexFormatError(r.path("doc_lengths.npy"), f"has shape {doc_lengths.shape}, expected "
                               f"({n_fields}, {n_docs}) (fields, documents of the collection)")
    if int(blocks["term_blocks"][-1]) != n_blocks or int(blocks["block_words"][-1]) != blocks["words"].shape[0]:
        raise IndexFormatError(r.path("term_blocks.npy"), "does not cover the stored blocks and words")


def write_index(entities: Sequence[Entity], config: LexicalConfig, root: str | os.PathLike[str],
                *, progress: bool = True, workers: int = 1) -> None:
    """Analyse every field of every entity, block-compress the postings and write the lexical
    component under `root`."""
    postings = analyse(entities, config.fields, config.groups(), progress=progress, workers=workers)
    write_postings(postings, config, root, progress=progress)


def write_postings(postings: Postings, config: LexicalConfig, root: str | os.PathLike[str], *,
                   progress: bool = True, corpus: tuple[CorpusStats, np.ndarray] | None = None) -> None:
    """Block-compress `postings` (analysed with `config`) and write the lexical component under
    `root`; corpus: for a partition, the whole catalog's statistics and df per term (see LexicalIndex)."""
    groups = config.groups()
    params = config.to_params() if corpus is None else {**config.to_params(), "corpus": corpus[0].to_params()}
    with tqdm(total=2, desc="lexical: compressing, writing", unit="step", disable=not progress) as bar:
        encoded = dict(zip(BLOCK_ARRAYS, jit.encode(postings.offsets, postings.doc_ids, postings.tfs,
                                                    postings.lengths), strict=True))
        bar.update()
        with ComponentWriter(root, COMPONENT, params) as w:
            w.write_json("terms.json", {"groups": [[config.fields[f].name for f in g] for g in groups],
                                        "terms": postings.terms})
            for name, values in encoded.items():
                w.write_array(f"{name}.npy", compact(values) if name in BOUND_ARRAYS else values)
            w.write_array("doc_lengths.npy", compact(postings.lengths))
            if corpus is not None:
                w.write_array("term_df.npy", corpus[1].astype(np.int64))
        bar.update()


ENTRY = StrategyEntry(build=LexicalIndex.build, load=LexicalIndex.load)
