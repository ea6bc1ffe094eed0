"""The lexical index: multi-field BM25 (Lucene variant) over Roaring-bitmap postings.

On disk (component "lexical", see core.storage):
- terms.json: {field: [term, ...]} in term-id order (ids are global, field after field);
- postings.roaring: each term's documents as a serialized Roaring bitmap, back to back;
- postings_offsets.npy: int64, shape (T + 1,), byte offsets of the bitmaps in postings.roaring;
- tfs.npy: uint32, shape (P,), term frequencies in (term, ascending document) order;
- doc_lengths.npy: uint32, shape (F, N), terms per field and document.
At load the bitmaps become one uint32 arena for the Numba kernel (core.lexical.jit).

Popularity prior (off by default): score += popularity_weight * ln(1 + popularity), added to
every document that matched at least one query term, so that of two equal matches the more
popular one ranks first without letting popularity alone retrieve anything.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pyroaring import BitMap
from tqdm import tqdm

from core.analysis import Analyzer, AnalyzerConfig
from core.catalog import Entity
from core.collection import Collection
from core.errors import IndexFormatError
from core.lexical import jit
from core.query import Query
from core.storage import ComponentReader, ComponentWriter
from core.types import Hits, StrategyEntry, StrategyKind

COMPONENT = "lexical"
DEFAULT_K1 = 0.9
DEFAULT_B = 0.4
QUANTIZATIONS = ("lucene", "exact")


@dataclass(frozen=True, kw_only=True)
class FieldSpec:
    """One indexed text field: its weight in the score sum and its analyzer."""

    name: str
    weight: float = 1.0
    analyzer: AnalyzerConfig = field(default_factory=AnalyzerConfig)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("field `name` must not be empty")
        if not (math.isfinite(self.weight) and self.weight > 0):
            raise ValueError(f"field {self.name!r}: `weight` must be finite and > 0, but got {self.weight}")


@dataclass(frozen=True, kw_only=True)
class LexicalConfig:
    """fields: empty = every text field of the catalog with weight 1.
    length_quantization: "lucene" stores document lengths as Lucene does (one byte, exact below 24,
    four significant bits above), so scores match Lucene/Anserini; "exact" keeps them exact."""

    fields: tuple[FieldSpec, ...] = ()
    k1: float = DEFAULT_K1
    b: float = DEFAULT_B
    popularity_weight: float = 0.0
    length_quantization: str = "lucene"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.k1) and self.k1 >= 0):
            raise ValueError(f"`k1` must be finite and >= 0, but got {self.k1}")
        if not 0 <= self.b <= 1:
            raise ValueError(f"`b` must be in [0, 1], but got {self.b}")
        if not (math.isfinite(self.popularity_weight) and self.popularity_weight >= 0):
            raise ValueError(f"`popularity_weight` must be finite and >= 0, but got {self.popularity_weight}")
        if self.length_quantization not in QUANTIZATIONS:
            raise ValueError(f"`length_quantization` must be one of {QUANTIZATIONS}, "
                             f"but got {self.length_quantization!r}")
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"`fields` must not repeat a name, but got {names}")

    @classmethod
    def from_options(cls, options: Mapping[str, Any], text_fields: Sequence[str] = ()) -> LexicalConfig:
        """From CLI-style options: fields ("title^2,artist"; empty: every name in `text_fields`
        with weight 1), stemmer, stopwords, k1, b, popularity_weight, length_quantization."""
        analyzer = AnalyzerConfig(stemmer=options.get("stemmer") or AnalyzerConfig.stemmer,
                                  stopwords=options.get("stopwords") or AnalyzerConfig.stopwords)
        spec = parse_fields(options.get("fields") or "") or [(name, 1.0) for name in text_fields]
        return cls(fields=tuple(FieldSpec(name=n, weight=w, analyzer=analyzer) for n, w in spec),
                   k1=float(options.get("k1", DEFAULT_K1)), b=float(options.get("b", DEFAULT_B)),
                   popularity_weight=float(options.get("popularity_weight", 0.0)),
                   length_quantization=str(options.get("length_quantization", "lucene")))

    def to_params(self) -> dict[str, Any]:
        return {"k1": self.k1, "b": self.b, "popularity_weight": self.popularity_weight,
                "length_quantization": self.length_quantization,
                "fields": [{"name": f.name, "weight": f.weight, "analyzer": f.analyzer.to_dict()}
                           for f in self.fields]}

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> LexicalConfig:
        fields = tuple(FieldSpec(name=f["name"], weight=f["weight"], analyzer=AnalyzerConfig(**f["analyzer"]))
                       for f in params["fields"])
        return cls(fields=fields, k1=params["k1"], b=params["b"], popularity_weight=params["popularity_weight"],
                   length_quantization=params["length_quantization"])


def parse_fields(spec: str) -> list[tuple[str, float]]:
    """"title^2,artist^1.5,album" -> [("title", 2.0), ("artist", 1.5), ("album", 1.0)]."""
    out = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, weight = part.partition("^")
        try:
            out.append((name.strip(), float(weight) if weight else 1.0))
        except ValueError:
            raise ValueError(f"bad field weight in {part!r}; expected NAME or NAME^WEIGHT") from None
    return out


def lucene_length(lengths: np.ndarray) -> np.ndarray:
    """Document lengths as Lucene decodes them from its one-byte norm (SmallFloat.intToByte4 and
    byte4ToInt): exact below 24, then rounded down to four significant bits."""
    free = 24  # SmallFloat.NUM_FREE_VALUES
    x = lengths.astype(np.int64)
    out = x.copy()
    big = x >= free
    v = x[big] - free
    bits = np.where(v > 0, np.floor(np.log2(np.maximum(v, 1))).astype(np.int64) + 1, 0)
    shift = np.maximum(bits - 4, 0)
    out[big] = free + ((v >> shift) << shift)
    return out


class LexicalIndex:
    """A loaded lexical index; implements core.types.Strategy."""

    kind = StrategyKind.LEXICAL
    vector_dim = 0

    def __init__(self, config: LexicalConfig, collection: Collection, terms: list[dict[str, int]],
                 offsets: np.ndarray, doc_ids: np.ndarray, tfs: np.ndarray, doc_lengths: np.ndarray) -> None:
        self.config = config
        self.collection = collection
        self.terms = terms
        self.offsets = offsets
        self.doc_ids = doc_ids
        self.tfs = tfs
        n_docs = doc_lengths.shape[1]
        self.term_field = np.concatenate([np.full(len(t), f, dtype=np.int64) for f, t in enumerate(terms)] or
                                         [np.zeros(0, dtype=np.int64)])
        df = np.diff(offsets).astype(np.float64)
        docs_with_field = (doc_lengths > 0).sum(axis=1).astype(np.float64)
        n_f = docs_with_field[self.term_field]
        self.idf = np.log1p((n_f - df + 0.5) / (df + 0.5))
        lengths = lucene_length(doc_lengths) if config.length_quantization == "lucene" else doc_lengths
        avgdl = doc_lengths.sum(axis=1) / np.maximum(docs_with_field, 1)
        norms = (config.k1 * (1 - config.b + config.b * lengths / np.maximum(avgdl, 1e-9)[:, None])
                 ).astype(np.float32)
        self.impacts = jit.impacts(doc_ids, tfs, self.term_field, offsets, norms)
        self.prior = (config.popularity_weight * np.log1p(collection.popularity)).astype(np.float32) \
            if config.popularity_weight > 0 else np.zeros(0, dtype=np.float32)
        self.field_weights = [f.weight for f in config.fields]
        # Fields sharing an analyzer configuration analyse the query once.
        self.analyzers: dict[AnalyzerConfig, Analyzer] = {}
        for f in config.fields:
            self.analyzers.setdefault(f.analyzer, Analyzer(f.analyzer))
        if n_docs != len(collection):
            raise ValueError(f"index covers {n_docs} documents, collection has {len(collection)}")

    def query_terms(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(term ids int64, query weights float64): each known query term once per field, its
        weight = occurrences in the query * field weight."""
        analysed = {cfg: Counter(a(text)) for cfg, a in self.analyzers.items()}
        tids: list[int] = []
        qws: list[float] = []
        for f, spec in enumerate(self.config.fields):
            vocab = self.terms[f]
            for term, count in analysed[spec.analyzer].items():
                tid = vocab.get(term)
                if tid is not None:
                    tids.append(tid)
                    qws.append(count * self.field_weights[f])
        return np.array(tids, dtype=np.int64), np.array(qws, dtype=np.float64)

    def retrieve(self, query: Query, quota: int, allowed: BitMap | None) -> Hits:
        tids, qws = self.query_terms(query.text)
        if tids.size == 0:
            return Hits.empty()
        docs, scores, total = jit.bm25_topk(tids, qws, self.offsets, self.idf, self.doc_ids, self.impacts,
                                            self.collection.mask(allowed), self.prior, len(self.collection), quota)
        return Hits(docs, scores.astype(np.float32), int(total))

    def warm_up(self) -> None:
        jit.warm_up()
        for a in self.analyzers.values():
            a("warm up")

    def describe(self) -> dict[str, str]:
        c = self.config
        return {"k1": str(c.k1), "b": str(c.b), "popularity_weight": str(c.popularity_weight),
                "length_quantization": c.length_quantization, "terms": str(len(self.idf)),
                "fields": ",".join(f"{f.name}^{f.weight:g}" for f in c.fields),
                "stemmer": ",".join(sorted({f.analyzer.stemmer for f in c.fields}))}

    # -- build and storage -------------------------------------------------------------------

    @classmethod
    def build(cls, entities: Sequence[Entity], collection: Collection, root: str | os.PathLike[str],
              options: Mapping[str, Any]) -> None:
        config = LexicalConfig.from_options(options, sorted({name for e in entities for name in e.fields}))
        write_index(entities, config, root, progress=bool(options.get("progress", True)))

    @classmethod
    def load(cls, root: str | os.PathLike[str], collection: Collection,
             options: Mapping[str, Any] | None = None) -> LexicalIndex:
        """options may override k1, b and popularity_weight for this process."""
        r = ComponentReader(root, COMPONENT)
        params = dict(r.params)
        params.update({k: float(v) for k, v in (options or {}).items() if k in ("k1", "b", "popularity_weight")})
        config = LexicalConfig.from_params(params)
        names = r.read_json("terms.json")
        terms = [{t: i for i, t in enumerate(names[f.name], start=base)}
                 for f, base in zip(config.fields, np.cumsum([0] + [len(names[f.name]) for f in config.fields]),
                                    strict=False)]
        byte_offsets = r.read_array("postings_offsets.npy", mmap=False)
        blob = r.read_bytes("postings.roaring")
        parts = [BitMap.deserialize(blob[byte_offsets[i]:byte_offsets[i + 1]]).to_array()
                 for i in range(len(byte_offsets) - 1)]
        doc_ids = np.concatenate(parts).astype(np.uint32) if parts else np.zeros(0, dtype=np.uint32)
        offsets = np.zeros(len(parts) + 1, dtype=np.int64)
        np.cumsum([len(p) for p in parts], out=offsets[1:])
        tfs = r.read_array("tfs.npy", mmap=False).astype(np.float32)
        if tfs.shape != doc_ids.shape:
            raise IndexFormatError(r.path("tfs.npy"), f"holds {tfs.size} frequencies for {doc_ids.size} postings")
        return cls(config, collection, terms, offsets, doc_ids, tfs, r.read_array("doc_lengths.npy", mmap=False))


def write_index(entities: Sequence[Entity], config: LexicalConfig, root: str | os.PathLike[str],
                *, progress: bool = True) -> None:
    """Analyse every field of every entity and write the lexical component under `root`."""
    vocab: list[dict[str, int]] = [{} for _ in config.fields]
    field_col: list[int] = []
    term_col: list[int] = []
    doc_col: list[int] = []
    tf_col: list[int] = []
    lengths = np.zeros((len(config.fields), len(entities)), dtype=np.uint32)
    analyzers = [Analyzer(f.analyzer) for f in config.fields]
    for i, e in enumerate(tqdm(entities, desc="lexical: analysing", unit="doc", disable=not progress)):
        for f, spec in enumerate(config.fields):
            terms = analyzers[f](e.fields.get(spec.name, ""))
            lengths[f, i] = len(terms)
            for term, tf in Counter(terms).items():
                field_col.append(f)
                term_col.append(vocab[f].setdefault(term, len(vocab[f])))
                doc_col.append(i)
                tf_col.append(tf)
    # Global term ids: field after field, each field's terms sorted, for a stable layout.
    field_terms = [sorted(v) for v in vocab]
    bases = np.cumsum([0] + [len(v) for v in vocab])
    remap = np.zeros(int(bases[-1]), dtype=np.int64)
    for f, names in enumerate(field_terms):
        for new_id, name in enumerate(names):
            remap[bases[f] + vocab[f][name]] = bases[f] + new_id
    global_ids = remap[np.array(term_col, dtype=np.int64) + bases[:-1][np.array(field_col, dtype=np.int64)]]
    order = np.argsort(global_ids, kind="stable")
    sorted_terms = global_ids[order]
    docs = np.array(doc_col, dtype=np.uint32)[order]
    tfs = np.array(tf_col, dtype=np.uint32)[order]
    counts = np.bincount(sorted_terms, minlength=len(remap))
    bounds = np.concatenate([[0], np.cumsum(counts)])
    blob = bytearray()
    byte_offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    for t in tqdm(range(len(counts)), desc="lexical: postings", unit="term", disable=not progress):
        blob += BitMap(docs[bounds[t]:bounds[t + 1]]).serialize()
        byte_offsets[t + 1] = len(blob)
    with ComponentWriter(root, COMPONENT, config.to_params()) as w:
        w.write_json("terms.json", {spec.name: names for spec, names in zip(config.fields, field_terms, strict=True)})
        w.write_bytes("postings.roaring", bytes(blob))
        w.write_array("postings_offsets.npy", byte_offsets)
        w.write_array("tfs.npy", tfs)
        w.write_array("doc_lengths.npy", lengths)


ENTRY = StrategyEntry(build=LexicalIndex.build, load=LexicalIndex.load)
