"""Encoder benchmark: all-MiniLM-L6-v2 on torch against its ONNX Runtime variants, side by side.

    python -m benchmarks.encoder [--data DIR] [--json FILE] [--docs N] [--cache DIR] [--onnx-cache DIR]
                                 [--doc-threads T] [--doc-sample S]

In one run, on BEIR SciFact (test split) by default:
- query-encoding latency, one query at a time on ONE thread (torch.set_num_threads(1), ONNX
  Runtime intra-op threads 1), p50 and p90 over every test query; the encoders take turns query by
  query, so load from other processes falls on all of them alike;
- quality against torch's own vectors: mean and min cosine over the corpus and the queries, and
  SciFact nDCG@10 (ir-measures) of exact cosine search (brute force, top 100) with each encoder's
  document and query vectors (torch's nDCG@10 through the HNSW index is 0.6451, README);
- document encoding throughput (documents/s) on --doc-threads threads (default 2: torch's
  intra-op threads; ONNX runs that many single-threaded batches at once) over a fixed
  sample of --doc-sample abstracts spread over the corpus, never cached, best of two alternating
  rounds, for torch, fp32 ONNX and the chosen variant; the same for torch and the chosen variant
  over --doc-sample short track texts of the bundled demo catalog ("title — artist — album");
- the chosen variant: the fastest ONNX one (by query p50) whose mean cosine is >= 0.99 and whose
  nDCG@10 is within 0.005 of torch's in the same run.
Corpus vectors go through the embedding cache (each encoder has its own fingerprint), so only the
first run pays for encoding the corpus; --docs N keeps the judged documents plus the first N others
for a quick run (its nDCG is then not SciFact's).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    DEFAULT_SCIFACT,
    BeirData,
    evaluate,
    load_beir,
    pin_threads,
    print_table,
    run_info,
    write_json,
)

TORCH = "minilm"
ONNX_KINDS = ("minilm-onnx", "minilm-int8", "minilm-int8-tensor")
MIN_MEAN_COS = 0.99
MAX_NDCG_LOSS = 0.005
TOP = 100
WARMUP = 10


def doc_text(title: str, text: str) -> str:
    """What a document is embedded as (benchmarks.semantic's convention: MTEB's for BEIR)."""
    return " ".join(part for part in (title.strip(), text.strip()) if part)


def subsample(data: BeirData, docs: int | None) -> list[tuple[str, str]]:
    """(doc id, text) of the corpus, or of its judged documents plus the first `docs` others."""
    corpus = [(did, doc_text(t, x)) for did, t, x in data.corpus]
    if docs is None:
        return corpus
    judged = {d for rel in data.qrels.values() for d in rel}
    others = [c for c in corpus if c[0] not in judged][:docs]
    return [c for c in corpus if c[0] in judged] + others


def make_encoders(threads: int, onnx_cache: Path) -> dict[str, Any]:
    from core.semantic.registry import make_encoder

    return {kind: make_encoder(kind, {"threads": threads, "onnx_cache": str(onnx_cache)})
            for kind in (TORCH, *ONNX_KINDS)}


def query_latency(encoders: dict[str, Any], queries: Sequence[str]) -> tuple[dict[str, dict[str, float]],
                                                                             dict[str, np.ndarray]]:
    """Per encoder: p50/p90 ms of encoding one query alone, taking turns query by query; and the
    query vectors (float32, (q, dim))."""
    import torch

    torch.set_num_threads(1)
    for q in queries[:WARMUP]:
        for enc in encoders.values():
            enc.encode([q])
    times: dict[str, list[float]] = {k: [] for k in encoders}
    vectors: dict[str, list[np.ndarray]] = {k: [] for k in encoders}
    for q in queries:
        for kind, enc in encoders.items():
            start = time.perf_counter()
            vec = enc.encode([q])[0]
            times[kind].append((time.perf_counter() - start) * 1000)
            vectors[kind].append(vec)
    stats = {k: {"p50_ms": round(float(np.median(t)), 2), "p90_ms": round(float(np.percentile(t, 90)), 2)}
             for k, t in times.items()}
    return stats, {k: np.vstack(v) for k, v in vectors.items()}


def corpus_vectors(kind: str, texts: Sequence[str], threads: int, cache: Path, onnx_cache: Path) -> np.ndarray:
    """Unit document vectors (float32, (n, dim)) of `kind`, through the embedding cache."""
    import torch

    from core.semantic.cache import EmbeddingCache, encode_cached
    from core.semantic.registry import make_encoder

    torch.set_num_threads(threads)
    encoder = make_encoder(kind, {"threads": threads, "onnx_cache": str(onnx_cache)})
    with EmbeddingCache(cache) as c:
        vectors, encoded = encode_cached(encoder, texts, c, desc=f"{kind}: encoding")
    torch.set_num_threads(1)
    print(f"{kind}: {len(texts):,} documents, {encoded:,} encoded now, the rest from {cache}")
    return vectors


def ndcg10(doc_ids: Sequence[str], docs: np.ndarray, query_ids: Sequence[str], queries: np.ndarray,
           qrels: dict[str, dict[str, int]]) -> float:
    """nDCG@10 of exact cosine search (top TOP by inner product of unit vectors)."""
    scores = queries @ docs.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :TOP]
    run = {qid: [(doc_ids[j], float(scores[i, j])) for j in top[i]] for i, qid in enumerate(query_ids)}
    return evaluate(run, qrels)["ndcg@10"]


def doc_throughput(kinds: Sequence[str], texts: Sequence[str], threads: int, onnx_cache: Path) -> dict[str, float]:
    """Documents/s of each kind on `threads` threads over `texts` (batch 64, never cached), best of
    two rounds taken in turn."""
    import torch

    from core.semantic.registry import make_encoder

    torch.set_num_threads(threads)
    encoders = {k: make_encoder(k, {"threads": threads, "onnx_cache": str(onnx_cache)}) for k in kinds}
    best = dict.fromkeys(kinds, 0.0)
    for enc in encoders.values():
        enc.encode(texts[:8])
    for _ in range(2):
        for kind, enc in encoders.items():
            start = time.perf_counter()
            enc.encode(texts, batch_size=64)
            best[kind] = max(best[kind], len(texts) / (time.perf_counter() - start))
    torch.set_num_threads(1)
    return {k: round(v, 1) for k, v in best.items()}


def track_texts(n: int) -> list[str]:
    """`n` texts of the demo catalog spread over it, as the semantic index embeds them."""
    from core.catalog import demo_catalog_path, load_catalog
    from core.semantic.index import DEFAULT_SEPARATOR, entity_text

    entities = load_catalog(demo_catalog_path())
    return [entity_text(e, (), DEFAULT_SEPARATOR) for e in entities[::max(1, len(entities) // n)][:n]]


def choose(variants: dict[str, dict[str, Any]], torch_ndcg: float) -> str | None:
    """The fastest ONNX kind (query p50) meeting the quality bar, or None."""
    ok = [k for k in ONNX_KINDS if variants[k]["mean_cos"] >= MIN_MEAN_COS
          and abs(variants[k]["scifact_ndcg10"] - torch_ndcg) <= MAX_NDCG_LOSS]
    return min(ok, key=lambda k: variants[k]["p50_ms"]) if ok else None


def quality(kinds: Sequence[str], data: BeirData, corpus: list[tuple[str, str]], qvecs: dict[str, np.ndarray],
            threads: int, cache: Path, onnx_cache: Path) -> dict[str, dict[str, float]]:
    """Per kind: mean and min cosine to torch over documents and queries, and nDCG@10."""
    doc_ids, texts = [c[0] for c in corpus], [c[1] for c in corpus]
    docs = {k: corpus_vectors(k, texts, threads, cache, onnx_cache) for k in kinds}
    out = {}
    for kind in kinds:
        cos = np.concatenate([np.sum(docs[kind] * docs[TORCH], axis=1), np.sum(qvecs[kind] * qvecs[TORCH], axis=1)])
        out[kind] = {"mean_cos": round(float(cos.mean()), 4), "min_cos": round(float(cos.min()), 4),
                     "scifact_ndcg10": round(ndcg10(doc_ids, docs[kind], list(data.queries), qvecs[kind],
                                                    data.qrels), 4)}
    return out


def measure(*, data_dir: Path = DEFAULT_SCIFACT, docs: int | None = None, doc_threads: int = 2,
            doc_sample: int = 256, cache: Path | None = None, onnx_cache: Path | None = None) -> dict[str, Any]:
    """Every figure of this benchmark (see the module docstring) as a dict: torch_p50_ms,
    onnx_p50_ms, mean_cos, scifact_ndcg10, doc_speedup and the rest for the chosen variant, and
    `variants` with each encoder's figures."""
    from core.semantic.cache import DEFAULT_CACHE_DIR
    from core.semantic.onnx_export import DEFAULT_ONNX_CACHE_DIR

    cache, onnx_cache = cache or DEFAULT_CACHE_DIR, onnx_cache or DEFAULT_ONNX_CACHE_DIR
    data = load_beir(data_dir)
    corpus = subsample(data, docs)
    stats, qvecs = query_latency(make_encoders(1, onnx_cache), list(data.queries.values()))
    kinds = (TORCH, *ONNX_KINDS)
    variants = {k: {**stats[k], **v} for k, v in quality(kinds, data, corpus, qvecs, doc_threads, cache,
                                                          onnx_cache).items()}
    torch_ndcg = variants[TORCH]["scifact_ndcg10"]
    chosen = choose(variants, torch_ndcg) or "minilm-onnx"
    step = max(1, len(data.corpus) // doc_sample)
    sample = [doc_text(t, x) for _, t, x in data.corpus[::step][:doc_sample]]
    rates = doc_throughput(list(dict.fromkeys([TORCH, "minilm-onnx", chosen])), sample, doc_threads, onnx_cache)
    for k, r in rates.items():
        variants[k]["docs_per_s"] = r
    tracks = doc_throughput([TORCH, chosen], track_texts(doc_sample), doc_threads, onnx_cache)
    for k, r in tracks.items():
        variants[k]["tracks_per_s"] = r
    c, t = variants[chosen], variants[TORCH]
    return {"chosen": chosen, "meets_bar": choose(variants, torch_ndcg) is not None,
            "torch_p50_ms": t["p50_ms"], "onnx_p50_ms": c["p50_ms"],
            "query_speedup": round(t["p50_ms"] / c["p50_ms"], 2), "mean_cos": c["mean_cos"], "min_cos": c["min_cos"],
            "scifact_ndcg10": c["scifact_ndcg10"], "torch_scifact_ndcg10": torch_ndcg,
            "torch_docs_per_s": t["docs_per_s"], "onnx_docs_per_s": c["docs_per_s"],
            "doc_speedup": round(c["docs_per_s"] / t["docs_per_s"], 2),
            "track_speedup": round(c["tracks_per_s"] / t["tracks_per_s"], 2), "documents": len(corpus),
            "queries": len(data.queries), "doc_threads": doc_threads, "doc_sample": len(sample),
            "variants": variants, "run": run_info(threads=1)}


def report(result: dict[str, Any]) -> None:
    v, t = result["variants"], result["variants"][TORCH]
    rows = [[k, f"{r['p50_ms']:.2f}", f"{r['p90_ms']:.2f}", f"{t['p50_ms'] / r['p50_ms']:.2f}", f"{r['mean_cos']:.4f}",
             f"{r['min_cos']:.4f}", f"{r['scifact_ndcg10']:.4f}", f"{r['scifact_ndcg10'] - t['scifact_ndcg10']:+.4f}",
             f"{r['docs_per_s']:.1f}" if "docs_per_s" in r else "-",
             f"{r['tracks_per_s']:.1f}" if "tracks_per_s" in r else "-"] for k, r in v.items()]
    print(f"\n{result['queries']} queries, {result['documents']:,} documents; query latency on 1 thread, "
          f"documents/s on {result['doc_threads']} threads over {result['doc_sample']} abstracts")
    print_table(rows, ["encoder", "query p50 ms", "p90 ms", "x torch", "mean cos", "min cos", "nDCG@10",
                       "vs torch", "docs/s", "tracks/s"])
    print(f"\nchosen: {result['chosen']} (meets the bar: {result['meets_bar']}): query p50 "
          f"{result['query_speedup']:.2f}x faster than torch, documents {result['doc_speedup']:.2f}x, track texts "
          f"{result['track_speedup']:.2f}x, mean cos "
          f"{result['mean_cos']:.4f}, nDCG@10 {result['scifact_ndcg10']:.4f} "
          f"(torch {result['torch_scifact_ndcg10']:.4f})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_SCIFACT, help="BEIR-layout folder (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--docs", type=int, help="judged documents plus this many others (default: the whole corpus)")
    parser.add_argument("--cache", type=Path, help="embedding cache directory (default: ~/.cache/ltrr/embeddings)")
    parser.add_argument("--onnx-cache", type=Path, help="exported ONNX graphs (default: ~/.cache/ltrr/onnx)")
    parser.add_argument("--doc-threads", type=int, default=2, help="threads for document encoding (default 2)")
    parser.add_argument("--doc-sample", type=int, default=256, help="abstracts timed for documents/s (default 256)")
    args = parser.parse_args(argv)
    pin_threads()
    result = measure(data_dir=args.data, docs=args.docs, doc_threads=args.doc_threads, doc_sample=args.doc_sample,
                     cache=args.cache, onnx_cache=args.onnx_cache)
    report(result)
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
