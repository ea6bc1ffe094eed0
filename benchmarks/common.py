"""Shared benchmark plumbing: BEIR loading, ir-measures evaluation, timing, run metadata."""

from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.query import DEFAULT_MAX_QUERY_CHARS

DEFAULT_SCIFACT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "scifact"


def pin_threads() -> None:
    """One thread everywhere, so 'single-thread' means the same for every system measured.
    Call before importing numba, numpy-backed peers or faiss."""
    for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "RAYON_NUM_THREADS"):
        os.environ[var] = "1"


@dataclass(frozen=True)
class BeirData:
    """corpus: (doc id, title, text) in file order; queries: query id -> text (test split only);
    qrels: query id -> doc id -> relevance."""

    corpus: list[tuple[str, str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def load_beir(root: Path, split: str = "test") -> BeirData:
    """A BEIR-layout folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv."""
    for name in ("corpus.jsonl", "queries.jsonl", f"qrels/{split}.tsv"):
        if not (root / name).is_file():
            sys.exit(f"error: {root / name} not found; pass --data DIR with a BEIR-layout folder")
    corpus = []
    with (root / "corpus.jsonl").open(encoding="utf-8") as f:
        for line in f:
            obj = json.loads(line)
            corpus.append((str(obj["_id"]), obj.get("title") or "", obj.get("text") or ""))
    qrels: dict[str, dict[str, int]] = {}
    with (root / "qrels" / f"{split}.tsv").open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        next(reader)
        for qid, did, rel in reader:
            qrels.setdefault(qid, {})[did] = int(rel)
    queries = {}
    with (root / "queries.jsonl").open(encoding="utf-8") as f:
        for line in f:
            obj = json.loads(line)
            if str(obj["_id"]) in qrels:
                queries[str(obj["_id"])] = obj["text"]
    return BeirData(corpus, dict(sorted(queries.items())), qrels)


Run = dict[str, list[tuple[str, float]]]


def evaluate(run: Run, qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """nDCG@10 and Recall@100 with ir-measures (pytrec_eval underneath)."""
    import ir_measures
    from ir_measures import R, nDCG

    scored = [ir_measures.ScoredDoc(qid, did, score) for qid, hits in run.items() for did, score in hits]
    q = [ir_measures.Qrel(qid, did, rel) for qid, docs in qrels.items() for did, rel in docs.items()]
    agg = ir_measures.calc_aggregate([nDCG @ 10, R @ 100], q, scored)
    return {"ndcg@10": round(float(agg[nDCG @ 10]), 4), "recall@100": round(float(agg[R @ 100]), 4)}


def queries_per_second(search: Callable[[str], Any], queries: Sequence[str], *, warmup: int = 20,
                       min_seconds: float = 2.0) -> float:
    """Sequential queries per second of `search` over `queries`, repeated until `min_seconds`
    have passed; the first `warmup` calls are not timed."""
    for q in queries[:warmup]:
        search(q)
    done = 0
    start = time.perf_counter()
    while True:
        for q in queries:
            search(q)
        done += len(queries)
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return done / elapsed


def run_info(threads: int = 1) -> dict[str, Any]:
    """Commit, machine and thread count, recorded with every benchmark result."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, check=False).stdout.strip()
    except OSError:
        commit = ""
    return {"commit": commit or "unknown", "machine": platform.machine(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "threads": threads}


def print_table(rows: Iterable[Sequence[Any]], header: Sequence[str]) -> None:
    rows = [[f"{v:.4f}" if isinstance(v, float) and v < 10 else f"{v:,.0f}" if isinstance(v, float) else str(v)
             for v in r] for r in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("  ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))


def write_json(path: Path | None, result: dict[str, Any]) -> None:
    if path is not None:
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {path}")


def truncate_query(text: str, limit: int) -> str:
    """`text` stripped and, when longer than `limit` characters, cut at the last white space
    within the limit (at the limit itself when the first `limit` characters hold none)."""
    if limit < 1:
        raise ValueError(f"`limit` must be >= 1, but got {limit}")
    text = text.strip()
    if len(text) <= limit:
        return text
    if text[limit].isspace():
        return text[:limit].rstrip()
    head = text[:limit]
    last = max(head.rfind(c) for c in " \t\n\r")
    return (head[:last] if last > 0 else head).rstrip()


def truncate_queries(queries: dict[str, str], limit: int = DEFAULT_MAX_QUERY_CHARS) -> tuple[dict[str, str], int]:
    """(queries with every text cut to `limit` characters by truncate_query, how many were cut).
    The default is the shards' request limit (core.query.DEFAULT_MAX_QUERY_CHARS): a benchmark
    measures what a served query could be, and must not die on one long query."""
    out = {qid: truncate_query(text, limit) for qid, text in queries.items()}
    return out, sum(len(text.strip()) > limit for text in queries.values())
