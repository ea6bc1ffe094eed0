"""Partitioned equals unpartitioned on SciFact (issue 14 acceptance, checked in core, no ports).

For the first N test queries (qrels/test.tsv order), lexical quota Q: one index over the corpus
against P partitions (core.partitioning) merged as the broker merges them (core.partitions:
partition_quota, merge_partitions, refetch_needed). Prints how many lists are equal (ids, order,
float32 scores), the refetches, the build times and nDCG@10 of both (ir-measures).

    NUMBA_NUM_THREADS=1 python -m benchmarks.partitioned_scifact [--data DIR] [--partitions 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import ir_measures
from ir_measures import nDCG

from core.catalog import load_catalog
from core.indexing import build_index, open_strategy
from core.merge import StrategyList
from core.partitioning import build_partitioned, catalog_positions, partition_dirs
from core.partitions import merge_partitions, partition_quota, refetch_needed
from core.query import Query
from core.types import Strategy


def as_list(strategy: Strategy, text: str, quota: int) -> StrategyList:
    hits = strategy.retrieve(Query(text=text), quota, strategy.collection.allowed(()))
    return StrategyList("lexical", [strategy.collection.ids[o] for o in hits.ordinals.tolist()], hits.scores)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="/work/shared/data/scifact")
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--quota", type=int, default=100)
    args = parser.parse_args()
    data = Path(args.data)
    corpus = load_catalog(data / "corpus.jsonl", "beir")
    texts = {q["_id"]: q["text"] for q in map(json.loads, (data / "queries.jsonl").read_text().splitlines())}
    rows = [line.split("\t") for line in (data / "qrels" / "test.tsv").read_text().splitlines()[1:]]
    qids = list(dict.fromkeys(r[0] for r in rows))[:args.queries]
    qrels = [ir_measures.Qrel(r[0], r[1], int(r[2])) for r in rows]
    options = {"lexical": {"progress": False}}
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        build_index(corpus, Path(tmp) / "one", ["lexical"], options)
        built_one = time.perf_counter() - started
        started = time.perf_counter()
        build_partitioned(corpus, Path(tmp) / "parts", ["lexical"], options, partitions=args.partitions,
                          progress=False)
        built_parts = time.perf_counter() - started
        one = open_strategy(Path(tmp) / "one", "lexical")
        parts = [open_strategy(d, "lexical") for d in partition_dirs(Path(tmp) / "parts", "lexical")]
        positions = catalog_positions(Path(tmp) / "parts")
        equal = refetches = 0
        runs: dict[str, list[ir_measures.ScoredDoc]] = {"one": [], "parts": []}
        for qid in qids:
            reference = as_list(one, texts[qid], args.quota)
            asked = [partition_quota(args.quota, len(parts))] * len(parts)
            lists: list[StrategyList | None] = [as_list(s, texts[qid], k) for s, k in zip(parts, asked, strict=True)]
            merged = merge_partitions("lexical", lists, args.quota, positions)
            for p in refetch_needed(lists, asked, merged, args.quota):
                lists[p], refetches = as_list(parts[p], texts[qid], args.quota), refetches + 1
            merged = merge_partitions("lexical", lists, args.quota, positions)
            equal += list(merged.entity_ids) == list(reference.entity_ids) and \
                merged.scores.tolist() == reference.scores.tolist()
            for name, lst in (("one", reference), ("parts", merged)):
                runs[name] += [ir_measures.ScoredDoc(qid, d, float(s)) for d, s in
                               zip(lst.entity_ids, lst.scores.tolist(), strict=True)]
    ndcg = {name: ir_measures.calc_aggregate([nDCG @ 10], qrels, run)[nDCG @ 10] for name, run in runs.items()}
    print(f"scifact: {len(corpus)} docs, {len(qids)} test queries, lexical quota {args.quota}, "
          f"{args.partitions} partitions (asked {partition_quota(args.quota, args.partitions)} each)")
    print(f"equal lists (ids, order, float32 scores): {equal}/{len(qids)}; refetches: {refetches}")
    print(f"nDCG@10 one index {ndcg['one']:.4f}, partitioned {ndcg['parts']:.4f}")
    print(f"build: one index {built_one:.1f}s, {args.partitions} partitions {built_parts:.1f}s")


if __name__ == "__main__":
    main()
