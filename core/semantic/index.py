"""The semantic strategy: cosine nearest neighbours of sentence embeddings over usearch HNSW.

Each entity is embedded once at build time: its precomputed `vector` if it has one (the length
must equal the encoder's dimension), else the encoding of its text fields joined with a separator
(default: every text field, title, name, artist, album and text first, then the others in catalog
order, " — " between them: "title — artist — album" for music, "title — text" for BEIR).
Entities with neither text nor vector are not indexed.

On disk (component "semantic", see core.storage):
- index.usearch: the usearch HNSW index, keys = entity ordinals; opened memory-mapped (`view`).
The manifest's params hold the configuration, the encoder's fingerprint (a shard refuses an index
built by a different model), the dimension and the vector count.

Queries: the query's own vector when it carries one, else the encoding of its text, kept in a
bounded LRU cache by text (popular queries repeat; `query_cache_bytes`, a run-time option). Scores
are cosine similarities in [-1, 1].
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pyroaring import BitMap

from core.catalog import Entity
from core.collection import Collection
from core.errors import CatalogError, IndexFormatError, InvalidArgumentError, NotFoundError
from core.query import Query
from core.semantic.ann import AnnConfig, VectorIndex
from core.semantic.cache import DEFAULT_CACHE_DIR, EmbeddingCache, QueryVectorCache, encode_cached
from core.semantic.encoders import Encoder, EncoderKind, l2_normalize
from core.semantic.registry import make_encoder
from core.storage import ComponentReader, ComponentWriter
from core.types import Hits, StrategyEntry, StrategyKind

COMPONENT = "semantic"
INDEX_FILE = "index.usearch"
DEFAULT_ENCODER = EncoderKind.MINILM_INT8.value
DEFAULT_QUERY_CACHE_BYTES = 8 << 20  # about 5,000 MiniLM query vectors
DEFAULT_SEPARATOR = " — "
DEFAULT_BATCH_SIZE = 64
PREFERRED_FIELDS = ("title", "name", "artist", "album", "text")
ENCODER_OPTIONS = ("hashing_dim", "ngram_min", "ngram_max", "max_seq_length")
ANN_INTS = ("connectivity", "expansion_add", "expansion_search", "exact_below")
RUNTIME_OPTIONS = ("expansion_search", "exact_below", "overfetch")


@dataclass(frozen=True, kw_only=True)
class SemanticConfig:
    """encoder: an EncoderKind value ("minilm-int8", "minilm-onnx", "minilm" (torch), "hashing",
    ...); encoder_options: hashing_dim, ngram_min, ngram_max (hashing), max_seq_length (MiniLM).
    fields: text fields to embed, in this order (empty = every text field of each entity, see
    default_field_order); separator joins them."""

    encoder: str = DEFAULT_ENCODER
    encoder_options: Mapping[str, int] = field(default_factory=dict)
    fields: tuple[str, ...] = ()
    separator: str = DEFAULT_SEPARATOR
    ann: AnnConfig = field(default_factory=AnnConfig)

    def __post_init__(self) -> None:
        if self.encoder not in {k.value for k in EncoderKind}:
            raise ValueError(f"`encoder` must be one of {', '.join(k.value for k in EncoderKind)}, "
                             f"but got {self.encoder!r}")
        unknown = sorted(set(self.encoder_options) - set(ENCODER_OPTIONS))
        if unknown:
            raise ValueError(f"`encoder_options` may hold {', '.join(ENCODER_OPTIONS)}, but got {unknown}")
        if any(not f.strip() for f in self.fields) or len(set(self.fields)) != len(self.fields):
            raise ValueError(f"`fields` must be distinct non-empty names, but got {list(self.fields)}")

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> SemanticConfig:
        """From CLI-style options: encoder, fields ("title,artist"), separator, dtype, connectivity,
        expansion_add, expansion_search, exact_below, overfetch, hashing_dim, ngram_min, ngram_max,
        max_seq_length."""
        ann = AnnConfig(dtype=str(options.get("dtype", AnnConfig.dtype)),
                        overfetch=float(options.get("overfetch", AnnConfig.overfetch)),
                        **{k: int(options.get(k, getattr(AnnConfig, k))) for k in ANN_INTS})
        fields = tuple(f.strip() for f in str(options.get("fields") or "").split(",") if f.strip())
        return cls(encoder=str(options.get("encoder") or DEFAULT_ENCODER),
                   encoder_options={k: int(options[k]) for k in ENCODER_OPTIONS if k in options},
                   fields=fields, separator=str(options.get("separator", DEFAULT_SEPARATOR)), ann=ann)

    def to_params(self) -> dict[str, Any]:
        a = self.ann
        return {"encoder": self.encoder, "encoder_options": dict(self.encoder_options), "fields": list(self.fields),
                "separator": self.separator, "dtype": a.dtype, "connectivity": a.connectivity,
                "expansion_add": a.expansion_add, "expansion_search": a.expansion_search,
                "exact_below": a.exact_below, "overfetch": a.overfetch}

    @classmethod
    def from_params(cls, params: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> SemanticConfig:
        """From a manifest; `overrides` may change the run-time settings in RUNTIME_OPTIONS."""
        p = {**params, **{k: v for k, v in (overrides or {}).items() if k in RUNTIME_OPTIONS}}
        ann = AnnConfig(dtype=p["dtype"], overfetch=float(p["overfetch"]), **{k: int(p[k]) for k in ANN_INTS})
        return cls(encoder=p["encoder"], encoder_options=dict(p["encoder_options"]), fields=tuple(p["fields"]),
                   separator=p["separator"], ann=ann)


def default_field_order(names: Sequence[str]) -> tuple[str, ...]:
    """Every field: those in PREFERRED_FIELDS first in that order, then the rest in catalog order
    (catalog JSON may list fields alphabetically; "title — artist — album" reads better)."""
    return (*(n for n in PREFERRED_FIELDS if n in names), *(n for n in names if n not in PREFERRED_FIELDS))


def entity_text(entity: Entity, fields: Sequence[str], separator: str) -> str:
    """The text embedded for `entity`: the non-empty `fields` (default_field_order of all of
    them when empty) stripped and joined with `separator`."""
    names = fields or default_field_order(tuple(entity.fields))
    return separator.join(t for t in (entity.fields.get(n, "").strip() for n in names) if t)


def embed_entities(entities: Sequence[Entity], config: SemanticConfig, encoder: Encoder,
                   cache: EmbeddingCache | None, *, batch_size: int = DEFAULT_BATCH_SIZE,
                   progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(ordinals int64 (m,), unit vectors float32 (m, dim)) of the entities that have content:
    precomputed vectors where given (length checked), text encodings otherwise."""
    vectors = np.zeros((len(entities), encoder.dim), dtype=np.float32)
    to_encode: list[int] = []
    for i, e in enumerate(entities):
        if e.vector is None:
            to_encode.append(i)
        elif len(e.vector) != encoder.dim:
            raise CatalogError(f"entity {e.id!r}: `vector` must have {encoder.dim} values for the "
                               f"{encoder.kind.value} encoder, but got {len(e.vector)}")
        elif not np.isfinite(e.vector).all():
            raise CatalogError(f"entity {e.id!r}: `vector` must hold only finite values")
        else:
            vectors[i] = e.vector
    texts = [entity_text(entities[i], config.fields, config.separator) for i in to_encode]
    encoded, _ = encode_cached(encoder, texts, cache, batch_size=batch_size, progress=progress)
    vectors[to_encode] = encoded
    vectors = l2_normalize(vectors)
    keep = np.flatnonzero(np.any(vectors != 0, axis=1))
    return keep.astype(np.int64), vectors[keep]


class SemanticStrategy:
    """A loaded semantic index; implements core.types.Strategy."""

    kind = StrategyKind.SEMANTIC

    def __init__(self, config: SemanticConfig, collection: Collection, encoder: Encoder,
                 vectors: VectorIndex, *, query_cache_bytes: int = DEFAULT_QUERY_CACHE_BYTES) -> None:
        if vectors.dim != encoder.dim:
            raise ValueError(f"index vectors have {vectors.dim} dimensions, the encoder makes {encoder.dim}")
        self.config = config
        self.collection = collection
        self.encoder = encoder
        self.vectors = vectors
        self.query_cache = QueryVectorCache(query_cache_bytes)

    @property
    def vector_dim(self) -> int:
        return self.encoder.dim

    def query_vector(self, query: Query) -> np.ndarray:
        """float32, shape (dim,): the query's vector if it has one (checked), else its text encoded
        (from the query cache when the same text was encoded recently). Do not modify it."""
        if query.vector is None:
            return self.encode_query(query.text)
        vec = np.asarray(query.vector, dtype=np.float32)
        if vec.shape != (self.vector_dim,):
            raise InvalidArgumentError("query.vector", f"must have {self.vector_dim} values, but got {vec.size}")
        if not np.isfinite(vec).all():
            raise InvalidArgumentError("query.vector", "must hold only finite values (no NaN or infinity)")
        if not vec.any():
            raise InvalidArgumentError("query.vector", "must not be all zeros (a cosine query needs a direction)")
        return vec

    def encode_query(self, text: str) -> np.ndarray:
        """The encoding of `text` (float32, shape (dim,), read-only), through the query cache."""
        return self.query_cache.get_or_encode(text, lambda t: self.encoder.encode([t])[0])

    def retrieve(self, query: Query, quota: int, allowed: BitMap | None) -> Hits:
        vec = self.query_vector(query)
        if not vec.any():  # text without content for this encoder
            return Hits.empty()
        keys, sims, total = self.vectors.search(vec, quota, allowed)
        return Hits(keys, sims, total)

    def warm_up(self) -> None:
        vec = self.encoder.encode(["warm up"])[0]
        if vec.any():
            self.vectors.search(vec, 1, None)

    def describe(self) -> dict[str, str]:
        a = self.config.ann
        return {**self.encoder.describe(), "dim": str(self.vector_dim), "metric": "cos", "dtype": a.dtype,
                "connectivity": str(a.connectivity), "expansion_add": str(a.expansion_add),
                "expansion_search": str(a.expansion_search), "exact_below": str(a.exact_below),
                "overfetch": f"{a.overfetch:g}", "vectors": str(len(self.vectors)),
                "fields": ",".join(self.config.fields) or "*", "separator": self.config.separator}

    # -- updates --------------------------------------------------------------------------------

    def _ordinals(self, entity_ids: Sequence[str]) -> np.ndarray:
        ordinal = self.collection.ordinal
        missing = [eid for eid in entity_ids if eid not in ordinal]
        if missing:
            raise NotFoundError(f"entities not in the collection: {missing[:5]}")
        return np.array([ordinal[eid] for eid in entity_ids], dtype=np.int64)

    def add(self, entity_ids: Sequence[str], vectors: np.ndarray) -> None:
        """Index (or re-index) entities of the collection. vectors: float32, shape
        (len(entity_ids), dim), finite, non-zero; normalised here. Unknown ids: NotFoundError."""
        vecs = np.asarray(vectors, dtype=np.float32)
        if vecs.shape != (len(entity_ids), self.vector_dim):
            raise InvalidArgumentError("vectors", f"must have shape ({len(entity_ids)}, {self.vector_dim}), "
                                       f"but got {vecs.shape}")
        if not np.isfinite(vecs).all() or not np.all(vecs.any(axis=1)):
            raise InvalidArgumentError("vectors", "must be finite and non-zero")
        self.vectors.add(self._ordinals(entity_ids), l2_normalize(vecs))

    def add_texts(self, entity_ids: Sequence[str], texts: Sequence[str]) -> None:
        """Index entities by the encodings of `texts` (one per id)."""
        if len(texts) != len(entity_ids):
            raise InvalidArgumentError("texts", f"must have {len(entity_ids)} items, but got {len(texts)}")
        self.add(entity_ids, self.encoder.encode(texts))

    def remove(self, entity_ids: Sequence[str]) -> int:
        """Drop entities from the vector index; returns how many were indexed. Unknown ids: NotFoundError."""
        return self.vectors.remove(self._ordinals(entity_ids))

    def save(self, root: str | os.PathLike[str]) -> None:
        """Publish the current vectors as the component under `root` (atomically)."""
        write_component(root, self.config, self.encoder, self.vectors)

    def snapshot_component(self) -> Callable[[str | os.PathLike[str]], None]:
        """A copy of the current vectors (usearch's file, in memory: 4.5-19 ms for 28k x 384 f16);
        the function returned writes it as the component under a root, as save() would have at
        the call, however the index changes meanwhile (core.live_checkpoint calls this while the
        live shard applies no batch, searches running on, and writes outside it)."""
        data, count = self.vectors.to_bytes(), len(self.vectors)
        config, encoder = self.config, self.encoder
        return lambda root: write_index_file(root, config, encoder, data, count)

    # -- build and load -------------------------------------------------------------------------

    @classmethod
    def build(cls, entities: Sequence[Entity], collection: Collection, root: str | os.PathLike[str],
              options: Mapping[str, Any]) -> None:
        """options: see SemanticConfig.from_options, plus cache (embedding cache directory; "off" =
        none; default ~/.cache/ltrr/embeddings), batch_size and progress. Encodes on a CUDA device
        when one is present."""
        config, encoder, keys, vecs = embed_catalog(entities, options)
        write_vectors(root, config, encoder, keys, vecs)

    @classmethod
    def load(cls, root: str | os.PathLike[str], collection: Collection,
             options: Mapping[str, Any] | None = None) -> SemanticStrategy:
        """options may override expansion_search, exact_below and overfetch for this process, and
        set query_cache_bytes (default DEFAULT_QUERY_CACHE_BYTES; 0 = no query cache)."""
        r = ComponentReader(root, COMPONENT)
        config = SemanticConfig.from_params(r.params, options)
        encoder = make_encoder(config.encoder, config.encoder_options)
        if encoder.fingerprint != r.params["fingerprint"]:
            raise IndexFormatError(r.dir, f"built with encoder {r.params['fingerprint']!r}, but this process "
                                   f"has {encoder.fingerprint!r}; rebuild with `ltrr index`")
        path = r.path(INDEX_FILE)
        vectors = VectorIndex.open(path, config.ann, view=True)
        if vectors.dim != r.params["dim"] or len(vectors) != r.params["vectors"]:
            raise IndexFormatError(path, f"holds {len(vectors)} vectors of {vectors.dim} dimensions, manifest "
                                   f"says {r.params['vectors']} of {r.params['dim']}")
        if len(vectors) and vectors.keys.max() >= len(collection):
            raise IndexFormatError(path, f"has ordinal {vectors.keys.max()}, collection has {len(collection)}")
        cache_bytes = int((options or {}).get("query_cache_bytes", DEFAULT_QUERY_CACHE_BYTES))
        if cache_bytes < 0:
            raise ValueError(f"`query_cache_bytes` must be >= 0, but got {cache_bytes}")
        return cls(config, collection, encoder, vectors, query_cache_bytes=cache_bytes)


def _flag(value: Any) -> bool:
    """A boolean option given as a bool or as CLI text ("false", "0", "no" and "off" are false)."""
    return value if isinstance(value, bool) else str(value).strip().lower() not in ("false", "0", "no", "off", "")


def embed_catalog(entities: Sequence[Entity], options: Mapping[str, Any]
                  ) -> tuple[SemanticConfig, Encoder, np.ndarray, np.ndarray]:
    """(config, encoder, ordinals, unit vectors) of `entities` as SemanticStrategy.build embeds
    them (options as it takes them); see embed_entities."""
    config = SemanticConfig.from_options(options)
    encoder = make_encoder(config.encoder, {**config.encoder_options, "device": "auto"})
    cache_opt = str(options.get("cache", DEFAULT_CACHE_DIR))
    cache = None if cache_opt in ("", "off", "none") else EmbeddingCache(Path(cache_opt))
    try:
        keys, vecs = embed_entities(entities, config, encoder, cache, progress=_flag(options.get("progress", True)),
                                    batch_size=int(options.get("batch_size", DEFAULT_BATCH_SIZE)))
    finally:
        if cache is not None:
            cache.close()
    return config, encoder, keys, vecs


def write_vectors(root: str | os.PathLike[str], config: SemanticConfig, encoder: Encoder, keys: np.ndarray,
                  vecs: np.ndarray) -> None:
    """Index `vecs` (float32 (m, dim), unit) under `keys` (ordinals, int64 (m,)) and write the component."""
    vectors = VectorIndex.create(encoder.dim, config.ann)
    vectors.add(keys, vecs)
    write_component(root, config, encoder, vectors)


def write_component(root: str | os.PathLike[str], config: SemanticConfig, encoder: Encoder,
                    vectors: VectorIndex) -> None:
    write_index_file(root, config, encoder, vectors.to_bytes(), len(vectors))


def write_index_file(root: str | os.PathLike[str], config: SemanticConfig, encoder: Encoder, data: bytes,
                     count: int) -> None:
    """The component under `root` whose INDEX_FILE is `data` (a usearch index holding `count` vectors)."""
    params = {**config.to_params(), "fingerprint": encoder.fingerprint, "dim": encoder.dim, "vectors": count}
    with ComponentWriter(root, COMPONENT, params) as w:
        w.write_bytes(INDEX_FILE, data)


ENTRY = StrategyEntry(build=SemanticStrategy.build, load=SemanticStrategy.load)
