"""The routing benchmark's data: BEIR-layout collections pooled into one catalog, and the stream of
simulated searches over their judged queries.

Pooling. Each collection is named after its folder (`scifact`, `med`, ...). A document becomes an
Entity with id `<collection>/<doc id>` (doc ids repeat across collections), text fields `title`
and `contents` (title + " " + text, what benchmarks.lexical and benchmarks.semantic index, so the
embedding cache is shared with them), and the categorical attribute `collection`. A query keeps
its text (cut to `max_query_chars`, see truncate_queries) and gets id `<collection>/<query id>`;
only queries with judgments in qrels/test.tsv are kept (benchmarks.common.load_beir), and their
judged documents are mapped to the pooled ids.

Search stream (routing_searches). Queries recur with Zipf frequencies: the query of popularity
rank r (a random permutation of the pooled queries per seed) is issued with probability
proportional to 1 / r^s, s = `zipf_exponent`. The wanted document (the target) is drawn from the
query's judged-relevant set with probability proportional to its grade (uniform when every grade is
1, as in most classic collections). Relevant = the documents judged > 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.common import load_beir, truncate_queries
from core.catalog import Entity
from core.query import DEFAULT_MAX_QUERY_CHARS
from core.simulator.users import SimSearch

DEFAULT_ZIPF_EXPONENT = 1.0
"""Query frequencies in web and site search logs follow a power law with exponent close to 1
(Xie and O'Hallaron, "Locality in search engine queries and its implications for caching",
INFOCOM 2002: 0.8-0.9 for Excite/Vivisimo; Baeza-Yates et al., SIGIR 2007: ~1 for Yahoo!); 1.0 is
the textbook value. It was fixed before any run, not tuned on the collections."""
ID_SEPARATOR = "/"


def doc_text(title: str, text: str) -> str:
    """What a document is indexed as: title and text, stripped, joined by one space (as
    benchmarks.semantic embeds it, MTEB's BEIR convention)."""
    return " ".join(part for part in (title.strip(), text.strip()) if part)


@dataclass(frozen=True, kw_only=True)
class PooledData:
    """collections: names, in --data order; entities: every document, collection by collection in
    file order; queries: pooled query id -> text (truncated); qrels: pooled query id -> pooled doc
    id -> grade; query_collection: pooled query id -> index into `collections`; truncated: per
    collection, how many query texts were cut to the limit."""

    collections: tuple[str, ...]
    entities: list[Entity]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    query_collection: dict[str, int]
    truncated: dict[str, int]

    def collection_of(self) -> np.ndarray:
        """int32 per entity (ordinal): the index of its collection in `collections`."""
        index = {name: i for i, name in enumerate(self.collections)}
        return np.array([index[str(e.attributes["collection"])] for e in self.entities], dtype=np.int32)


def pooled_id(collection: str, local: str) -> str:
    return f"{collection}{ID_SEPARATOR}{local}"


def pool_collections(roots: Sequence[Path], max_query_chars: int = DEFAULT_MAX_QUERY_CHARS) -> PooledData:
    """Pool the BEIR-layout folders `roots` (module docstring). Folder names must be distinct."""
    names = tuple(Path(r).resolve().name for r in roots)
    if len(set(names)) != len(names):
        raise ValueError(f"collection folders must have distinct names, but got {list(names)}")
    entities: list[Entity] = []
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    where: dict[str, int] = {}
    truncated: dict[str, int] = {}
    for c, (name, root) in enumerate(zip(names, roots, strict=True)):
        data = load_beir(Path(root))
        entities += [Entity(id=pooled_id(name, did), fields={"title": title.strip(), "contents": doc_text(title, text)},
                            attributes={"collection": name}) for did, title, text in data.corpus]
        texts, truncated[name] = truncate_queries(data.queries, max_query_chars)
        known = {did for did, _, _ in data.corpus}
        for qid, text in texts.items():
            judged = {pooled_id(name, d): g for d, g in data.qrels[qid].items() if g > 0 and d in known}
            if not judged or not text:
                continue  # nothing to want: the query cannot be a search of the stream
            key = pooled_id(name, qid)
            queries[key], qrels[key], where[key] = text, judged, c
    return PooledData(collections=names, entities=entities, queries=queries, qrels=qrels, query_collection=where,
                      truncated=truncated)


def zipf_weights(n: int, exponent: float) -> np.ndarray:
    """float64 (n,): P(rank r) = r^-exponent / sum_k k^-exponent for r = 1..n (exponent 0 = uniform)."""
    if n < 1:
        raise ValueError(f"`n` must be >= 1, but got {n}")
    if not (math.isfinite(exponent) and exponent >= 0):
        raise ValueError(f"`exponent` must be finite and >= 0, but got {exponent}")
    w = np.arange(1, n + 1, dtype=np.float64) ** -exponent
    return w / w.sum()


def routing_searches(data: PooledData, ordinal: dict[str, int], n: int, seed: int,
                     zipf_exponent: float = DEFAULT_ZIPF_EXPONENT) -> tuple[list[SimSearch], list[str]]:
    """(n searches of the stream of `seed` (module docstring), the pooled query id of each).
    ordinal: pooled doc id -> the index's ordinal. Each SimSearch has intent = the query's
    collection index, user 0 and an empty context (the benchmark has no users: the policy routes
    on the query alone), relevant = the judged ordinals (ascending) and target = the wanted one."""
    if n < 1:
        raise ValueError(f"`n` must be >= 1, but got {n}")
    rng = np.random.default_rng([seed, 7])
    qids = sorted(data.queries)
    popularity = rng.permutation(len(qids))  # popularity rank of each query, 0 = most frequent
    p = zipf_weights(len(qids), zipf_exponent)[popularity]
    # One (query, target) pair of uniforms per search, so the first n searches of a longer stream
    # are the stream of n: a 20,000-search run is the start of a 100,000-search one.
    pairs = rng.random((n, 2))
    drawn = np.minimum(np.searchsorted(np.cumsum(p), pairs[:, 0] * p.sum(), side="right"), len(qids) - 1)
    uniforms = pairs[:, 1]
    judged = {q: (np.array([ordinal[d] for d in data.qrels[q]], dtype=np.int64),
                  np.array(list(data.qrels[q].values()), dtype=np.float64)) for q in qids}
    out, ids = [], []
    for i, u in zip(drawn.tolist(), uniforms.tolist(), strict=True):
        q = qids[i]
        docs, grades = judged[q]
        cdf = np.cumsum(grades)
        target = int(docs[min(int(np.searchsorted(cdf, u * cdf[-1], side="right")), docs.size - 1)])
        out.append(SimSearch(intent=data.query_collection[q], user=0, text=data.queries[q], context={},
                             relevant=np.sort(docs), target=target))
        ids.append(q)
    return out, ids


STRATEGIES = ("lexical", "semantic", "attribute", "memory")


def build_routing_index(data: PooledData, root: Path, encoder: str, cache: Path | None = None) -> None:
    """The four strategies over the pooled catalog under `root` (core.indexing.build_index):
    lexical (BM25) and semantic over `contents`, attribute over the titles and the `collection`
    attribute, memory empty. cache: the embedding cache (None = the semantic strategy's default)."""
    from core.indexing import build_index

    semantic: dict[str, str] = {"encoder": encoder, "fields": "contents", "progress": "false"}
    if cache is not None:
        semantic["cache"] = str(cache)
    build_index(data.entities, root, STRATEGIES,
                {"lexical": {"fields": "contents", "progress": False}, "semantic": semantic})
