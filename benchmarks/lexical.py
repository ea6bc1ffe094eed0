"""Lexical benchmark: ltrr BM25 against bm25s and tantivy on a BEIR dataset, in one run.

    python -m benchmarks.lexical [--data DIR] [--json FILE] [--no-grpc]

Title and text form one field (as Anserini's "flat" BEIR runs). Reported per system: nDCG@10 and
Recall@100 (ir-measures) on the test split, and single-thread queries per second end to end
(query string -> top-100 ids, analysis included, warm-up excluded). ltrr is also measured through
a real gRPC shard process, whose relevance must equal the in-process figures.
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import (
    DEFAULT_SCIFACT,
    BeirData,
    Run,
    evaluate,
    load_beir,
    pin_threads,
    print_table,
    queries_per_second,
    run_info,
    write_json,
)

TOP = 100


def ltrr_system(data: BeirData, workdir: Path) -> tuple[Any, Any]:
    """Build an ltrr lexical index; returns (search(text) -> [(id, score)], index dir)."""
    from core.catalog import Entity
    from core.indexing import build_index, open_strategy
    from core.query import make_query

    entities = [Entity(id=did, fields={"contents": f"{title} {text}"}) for did, title, text in data.corpus]
    build_index(entities, workdir, ["lexical"], {"lexical": {"progress": False}})
    strategy = open_strategy(workdir, "lexical")
    strategy.warm_up()
    ids = strategy.collection.ids

    def search(text: str) -> list[tuple[str, float]]:
        hits = strategy.retrieve(make_query(text), TOP, None)
        return [(ids[o], float(s)) for o, s in zip(hits.ordinals.tolist(), hits.scores.tolist(), strict=True)]

    return search, workdir


def bm25s_system(data: BeirData) -> Any:
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    texts = [f"{title} {text}" for _, title, text in data.corpus]
    ids = [did for did, _, _ in data.corpus]
    retriever = bm25s.BM25(k1=0.9, b=0.4, method="lucene")
    retriever.index(bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False),
                    show_progress=False)

    def search(text: str) -> list[tuple[str, float]]:
        tokens = bm25s.tokenize([text], stopwords="en", stemmer=stemmer, show_progress=False)
        docs, scores = retriever.retrieve(tokens, k=TOP, show_progress=False, n_threads=1)
        return [(ids[d], float(s)) for d, s in zip(docs[0].tolist(), scores[0].tolist(), strict=True)]

    return search


_QUERY_SYNTAX = re.compile(r"[^\w\s]")


def tantivy_system(data: BeirData) -> Any:
    import tantivy

    builder = tantivy.SchemaBuilder()
    builder.add_text_field("body", stored=False, tokenizer_name="en_stem", index_option="freq")
    index = tantivy.Index(builder.build())
    writer = index.writer(heap_size=200_000_000, num_threads=1)
    for _, title, text in data.corpus:
        writer.add_document(tantivy.Document(body=f"{title} {text}"))
    writer.commit()
    writer.wait_merging_threads()
    index.reload()
    searcher = index.searcher()
    # One segment written by one thread: tantivy's doc ids are insertion order.
    if searcher.num_segments != 1:
        raise RuntimeError(f"expected one tantivy segment, got {searcher.num_segments}")
    ids = [did for did, _, _ in data.corpus]

    def search(text: str) -> list[tuple[str, float]]:
        # Query-language characters (+ - : " ( ) ...) would change the query's meaning.
        query = index.parse_query(_QUERY_SYNTAX.sub(" ", text), ["body"])
        hits = searcher.search(query, TOP, count=False).hits
        return [(ids[addr.doc], float(score)) for score, addr in hits]

    return search


def measure(search: Any, data: BeirData) -> dict[str, float]:
    run: Run = {qid: search(text) for qid, text in data.queries.items()}
    out: dict[str, float] = evaluate(run, data.qrels)
    out["qps"] = round(queries_per_second(search, list(data.queries.values())), 1)
    return out


def grpc_figures(index_dir: Path, data: BeirData) -> dict[str, float]:
    """Relevance and sequential qps through a real `ltrr shard lexical` process on loopback."""
    from services.client import ShardClient
    from services.process import start_shard

    with start_shard("lexical", index_dir) as shard, ShardClient(shard.address) as client:
        def search(text: str) -> list[tuple[str, float]]:
            return [(c.entity_id, c.score) for c in client.retrieve(text, TOP).candidates]

        return measure(search, data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_SCIFACT, help="BEIR-layout folder (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--no-grpc", action="store_true", help="skip the measurement through a shard process")
    args = parser.parse_args(argv)
    pin_threads()
    data = load_beir(args.data)
    print(f"{args.data}: {len(data.corpus):,} documents, {len(data.queries):,} test queries")
    with tempfile.TemporaryDirectory(prefix="ltrr-bench-") as tmp:
        search, index_dir = ltrr_system(data, Path(tmp))
        result: dict[str, Any] = measure(search, data)
        result["peers"] = {"bm25s": measure(bm25s_system(data), data),
                           "tantivy": measure(tantivy_system(data), data)}
        if not args.no_grpc:
            result["grpc"] = grpc_figures(index_dir, data)
    for name, peer in result["peers"].items():
        result[f"qps_ratio_vs_{name}"] = round(result["qps"] / peer["qps"], 2)
    result["run"] = run_info()
    rows = [["ltrr (in process)", result["ndcg@10"], result["recall@100"], result["qps"], "1.00"]]
    if "grpc" in result:
        g = result["grpc"]
        rows.append(["ltrr (gRPC shard)", g["ndcg@10"], g["recall@100"], g["qps"], f"{g['qps'] / result['qps']:.2f}"])
    for name, peer in result["peers"].items():
        rows.append([name, peer["ndcg@10"], peer["recall@100"], peer["qps"], f"{peer['qps'] / result['qps']:.2f}"])
    print_table(rows, ["system", "nDCG@10", "Recall@100", "queries/s", "qps / ltrr"])
    print(f"ltrr qps ratio: {result['qps_ratio_vs_tantivy']}x tantivy, {result['qps_ratio_vs_bm25s']}x bm25s "
          f"(commit {result['run']['commit']}, {result['run']['threads']} thread)")
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
