"""Semantic benchmark: MiniLM + usearch HNSW on a BEIR dataset, lexical+semantic RRF, usearch
against faiss HNSW at matched recall, encoding speed; in one run.

    python -m benchmarks.semantic [--data DIR] [--json FILE] [--cache DIR] [--encode-threads N]
                                  [--target-recall R] [--encoder minilm|hashing] [--max-query-chars C]

Documents are embedded as title + " " + text (MTEB's BEIR convention), queries as their text,
with all-MiniLM-L6-v2 (max 256 word pieces); query texts longer than --max-query-chars (default
1024, the shards' request limit, core.query) are cut at a word boundary (CISI has queries over 1,024
characters) and the run prints how many; corpus embeddings come from the embedding cache, so
only the first run pays for encoding. Reported:
- nDCG@10 and Recall@100 (ir-measures, test split) for semantic alone (ltrr's index, default
  settings), lexical alone (ltrr BM25) and their reciprocal-rank fusion (k = 60, top 100 of each);
- HNSW recall@10 of ltrr's index against exact f32 search;
- single-thread queries per second (query vector -> top-10 keys) of usearch (as ltrr configures
  it: inner product of unit vectors, M=16, ef_construction=128; f16 and f32) and faiss
  IndexHNSWFlat (f32, inner product, same M and ef_construction) over the same vectors, sweeping
  the search expansion (ef); each compared at its fastest point reaching the target recall
  (default 0.98), in the same run;
- encoding throughput (documents per second, on a fixed sample, never cached) with
  --encode-threads threads, and query-encoding latency (one query at a time, one thread).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    DEFAULT_SCIFACT,
    BeirData,
    Run,
    evaluate,
    load_beir,
    pin_threads,
    print_table,
    run_info,
    truncate_queries,
    write_json,
)
from core.query import DEFAULT_MAX_QUERY_CHARS

TOP = 100
K = 10
EFS = (16, 24, 32, 48, 64, 96, 128, 192, 256)
CONNECTIVITY = 16
EXPANSION_ADD = 128
ENCODE_SAMPLE = 256


def doc_text(title: str, text: str) -> str:
    """What a document is embedded as: title and text, stripped, joined by one space."""
    return " ".join(part for part in (title.strip(), text.strip()) if part)


def timed_qps(search: Any, vectors: np.ndarray, min_seconds: float = 1.0) -> float:
    """Sequential searches per second over the rows of `vectors`; the first 20 are warm-up."""
    for v in vectors[:20]:
        search(v)
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < min_seconds or done == 0:
        for v in vectors:
            search(v)
        done += len(vectors)
    return done / elapsed


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean |found_i ∩ truth_i| / K over queries; both int64, shape (q, K)."""
    return float(np.mean([len(set(f.tolist()) & set(t.tolist())) / K for f, t in zip(found, truth, strict=True)]))


def set_torch_threads(n: int) -> None:
    try:
        import torch
    except ImportError:  # the hashing encoder needs no torch
        return
    torch.set_num_threads(n)


def build(data: BeirData, root: Path, cache: Path, encoder: str) -> tuple[Any, Any]:
    """ltrr lexical and semantic indexes over one "contents" field (title + " " + text)."""
    from core.catalog import Entity
    from core.indexing import build_index, open_strategy

    entities = [Entity(id=did, fields={"contents": doc_text(title, text)}) for did, title, text in data.corpus]
    build_index(entities, root, ["lexical", "semantic"],
                {"lexical": {"progress": False}, "semantic": {"encoder": encoder, "cache": str(cache)}})
    lexical, semantic = open_strategy(root, "lexical"), open_strategy(root, "semantic")
    lexical.warm_up()
    semantic.warm_up()
    return lexical, semantic


def encode_queries(semantic: Any, texts: list[str]) -> tuple[np.ndarray, dict[str, float]]:
    """Query vectors (float32, (q, dim)), encoded one at a time on one thread, with latencies."""
    set_torch_threads(1)
    for t in texts[:10]:
        semantic.encoder.encode([t])
    out, times = [], []
    for t in texts:
        start = time.perf_counter()
        out.append(semantic.encoder.encode([t])[0])
        times.append((time.perf_counter() - start) * 1000)
    return np.vstack(out), {"query_encode_ms_p50": round(float(np.median(times)), 2),
                            "query_encode_ms_p95": round(float(np.percentile(times, 95)), 2)}


def encode_throughput(semantic: Any, data: BeirData, threads: int) -> dict[str, float]:
    """Documents per second on a fixed sample spread over the corpus (batch 64, no cache)."""
    set_torch_threads(threads)
    step = max(1, len(data.corpus) // ENCODE_SAMPLE)
    sample = [doc_text(t, x) for _, t, x in data.corpus[::step][:ENCODE_SAMPLE]]
    semantic.encoder.encode(sample[:8])
    start = time.perf_counter()
    semantic.encoder.encode(sample, batch_size=64)
    elapsed = time.perf_counter() - start
    set_torch_threads(1)
    return {"encode_docs_per_s": round(len(sample) / elapsed, 1), "encode_threads": threads,
            "encode_sample": len(sample)}


def relevance(lexical: Any, semantic: Any, data: BeirData, qvecs: np.ndarray) -> dict[str, dict[str, float]]:
    from core.fusion import reciprocal_rank_fusion
    from core.query import Query, make_query

    ids = semantic.collection.ids
    runs: dict[str, Run] = {"semantic": {}, "lexical": {}, "rrf": {}}
    for (qid, text), vec in zip(data.queries.items(), qvecs, strict=True):
        sem = semantic.retrieve(Query(text=text, vector=vec), TOP, None)
        lex = lexical.retrieve(make_query(text), TOP, None)
        runs["semantic"][qid] = [(ids[o], float(s)) for o, s in zip(sem.ordinals, sem.scores, strict=True)]
        runs["lexical"][qid] = [(ids[o], float(s)) for o, s in zip(lex.ordinals, lex.scores, strict=True)]
        fused = reciprocal_rank_fusion([[d for d, _ in runs["lexical"][qid]], [d for d, _ in runs["semantic"][qid]]],
                                       limit=TOP)
        runs["rrf"][qid] = fused
    return {name: evaluate(run, data.qrels) for name, run in runs.items()}


def ann_recall(semantic: Any, doc_vectors: np.ndarray, qvecs: np.ndarray) -> tuple[float, np.ndarray]:
    """Recall@10 of ltrr's index (its own settings) against exact f32 search; returns (recall, truth)."""
    truth = np.argsort(-(qvecs @ doc_vectors.T), axis=1, kind="stable")[:, :K]
    found = np.array([semantic.vectors.search(q, K)[0] for q in qvecs])
    return recall(found, truth), truth


def sweep_usearch(doc_vectors: np.ndarray, qvecs: np.ndarray, truth: np.ndarray, dtype: str) -> list[dict[str, float]]:
    from usearch.index import Index

    from core.semantic.ann import METRIC

    index = Index(ndim=doc_vectors.shape[1], metric=METRIC, dtype=dtype, connectivity=CONNECTIVITY,
                  expansion_add=EXPANSION_ADD)
    index.add(np.arange(len(doc_vectors), dtype=np.uint64), doc_vectors, threads=1)
    rows = []
    for ef in EFS:
        index.expansion_search = ef  # type: ignore[misc]  # usearch's setter is untyped
        found = np.array([np.asarray(index.search(q, K, threads=1).keys, dtype=np.int64) for q in qvecs])
        qps = timed_qps(lambda q: index.search(q, K, threads=1), qvecs)
        rows.append({"ef": ef, "recall@10": round(recall(found, truth), 4), "qps": round(qps, 1)})
    return rows


def sweep_faiss(doc_vectors: np.ndarray, qvecs: np.ndarray, truth: np.ndarray) -> list[dict[str, float]]:
    import faiss

    faiss.omp_set_num_threads(1)
    index = faiss.IndexHNSWFlat(doc_vectors.shape[1], CONNECTIVITY, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = EXPANSION_ADD
    index.add(doc_vectors)
    rows = []
    for ef in EFS:
        index.hnsw.efSearch = ef
        _, found = index.search(qvecs, K)
        qps = timed_qps(lambda q: index.search(q[None, :], K), qvecs)
        rows.append({"ef": ef, "recall@10": round(recall(found, truth), 4), "qps": round(qps, 1)})
    return rows


def at_recall(rows: list[dict[str, float]], target: float) -> dict[str, float] | None:
    """The fastest sweep point reaching `target` recall (None when none does)."""
    ok = [r for r in rows if r["recall@10"] >= target]
    return max(ok, key=lambda r: r["qps"]) if ok else None


def speed(semantic: Any, doc_vectors: np.ndarray, qvecs: np.ndarray, truth: np.ndarray,
          target: float) -> dict[str, Any]:
    sweeps = {"usearch-" + semantic.config.ann.dtype: sweep_usearch(doc_vectors, qvecs, truth,
                                                                     semantic.config.ann.dtype),
              "usearch-f32": sweep_usearch(doc_vectors, qvecs, truth, "f32"),
              "faiss-hnsw-flat": sweep_faiss(doc_vectors, qvecs, truth)}
    matched = {name: at_recall(rows, target) for name, rows in sweeps.items()}
    ltrr_qps = timed_qps(lambda q: semantic.vectors.search(q, K), qvecs)
    return {"target_recall": target, "sweeps": sweeps, "at_target": matched,
            "ltrr_index_qps_top10": round(ltrr_qps, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_SCIFACT, help="BEIR-layout folder (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "ltrr" / "embeddings",
                        help="embedding cache directory (default: %(default)s)")
    parser.add_argument("--encode-threads", type=int, default=2, help="torch threads for corpus encoding")
    parser.add_argument("--encoder", default="minilm", choices=("minilm", "hashing"),
                        help="hashing: spelling, not meaning; only for a quick smoke run")
    parser.add_argument("--target-recall", type=float, default=0.98, help="recall@10 for the qps comparison")
    parser.add_argument("--max-query-chars", type=int, default=DEFAULT_MAX_QUERY_CHARS,
                        help="longer query texts are cut to this many characters (default %(default)s, the shards' "
                             "request limit)")
    args = parser.parse_args(argv)
    if args.max_query_chars < 1:
        parser.error(f"--max-query-chars must be >= 1, but got {args.max_query_chars}")
    pin_threads()
    set_torch_threads(args.encode_threads)  # corpus encoding; queries use one thread
    data, truncated = load_queries(args.data, args.max_query_chars)
    print(f"{args.data}: {len(data.corpus):,} documents, {len(data.queries):,} test queries, {truncated} cut to "
          f"{args.max_query_chars} characters")
    with tempfile.TemporaryDirectory(prefix="ltrr-bench-") as tmp:
        start = time.perf_counter()
        lexical, semantic = build(data, Path(tmp), args.cache, args.encoder)
        result: dict[str, Any] = {"build_s": round(time.perf_counter() - start, 1),
                                  "max_query_chars": args.max_query_chars, "truncated_queries": truncated}
        qvecs, latency = encode_queries(semantic, list(data.queries.values()))
        result.update(latency)
        result["relevance"] = relevance(lexical, semantic, data, qvecs)
        doc_vectors = doc_matrix(semantic, data, args.cache)
        result["hnsw_recall@10"], truth = ann_recall(semantic, doc_vectors, qvecs)
        result["hnsw_recall@10"] = round(result["hnsw_recall@10"], 4)
        result["speed"] = speed(semantic, doc_vectors, qvecs, truth, args.target_recall)
        result.update(encode_throughput(semantic, data, args.encode_threads))
        result["index"] = semantic.describe()
    result["run"] = run_info()
    report(result)
    write_json(args.json, result)
    return 0


def load_queries(root: Path, max_query_chars: int) -> tuple[BeirData, int]:
    """The BEIR folder with every query text cut to `max_query_chars` (benchmarks.common.truncate_queries),
    and how many were cut: one long query must not stop the benchmark."""
    data = load_beir(root)
    queries, truncated = truncate_queries(data.queries, max_query_chars)
    return dataclasses.replace(data, queries=queries), truncated


def doc_matrix(semantic: Any, data: BeirData, cache: Path) -> np.ndarray:
    """Unit document vectors (float32, (n, dim)) in corpus order, from the embedding cache."""
    from core.semantic.cache import EmbeddingCache, encode_cached

    with EmbeddingCache(cache) as c:
        vectors, _ = encode_cached(semantic.encoder, [doc_text(t, x) for _, t, x in data.corpus], c,
                                   progress=False)
    return vectors


def report(result: dict[str, Any]) -> None:
    rel = result["relevance"]
    print_table([[name, r["ndcg@10"], r["recall@100"]] for name, r in rel.items()],
                ["run", "nDCG@10", "Recall@100"])
    print()
    s = result["speed"]
    rows = []
    for name, point in s["at_target"].items():
        rows.append([name, point["ef"], point["recall@10"], point["qps"]] if point else [name, "-", "-", "-"])
    print(f"single-thread top-{K} search at recall@10 >= {s['target_recall']}:")
    print_table(rows, ["system", "ef", "recall@10", "queries/s"])
    base = s["at_target"].get("faiss-hnsw-flat")
    for name, point in s["at_target"].items():
        if point and base and name != "faiss-hnsw-flat":
            print(f"{name} / faiss qps ratio: {point['qps'] / base['qps']:.2f}")
    print()
    print(f"ltrr index (default {result['index']['dtype']}, ef {result['index']['expansion_search']}): "
          f"HNSW recall@10 vs exact f32 {result['hnsw_recall@10']}, {s['ltrr_index_qps_top10']:,.0f} queries/s")
    print(f"encoding: {result['encode_docs_per_s']} docs/s ({result['encode_threads']} threads, "
          f"{result['encode_sample']} docs); query encoding p50 {result['query_encode_ms_p50']} ms, "
          f"p95 {result['query_encode_ms_p95']} ms (1 thread)")
    print(f"(commit {result['run']['commit']}, build {result['build_s']} s)")


if __name__ == "__main__":
    raise SystemExit(main())
