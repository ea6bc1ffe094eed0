"""Lexical search at catalog scale: ltrr against tantivy on a synthetic corpus, plus SciFact.

    python -m benchmarks.lexical_scale [--docs N] [--queries Q] [--rounds R] [--json FILE]
                                       [--scifact DIR | --no-scifact] [--workdir DIR]

Synthetic part (benchmarks.synthetic_corpus states the corpus: Zipf(1.07) over 500,000 words,
log-normal lengths with median 50 and sigma 0.5, queries of 2 to 5 words of ranks 100 to 10,000):
the corpus is streamed to a text file, then each engine (benchmarks.lexical_scale_engines) is
built from it in a process of its own, one after the other, on one thread: build seconds, peak
build RSS, index bytes on disk. Each engine then serves from a fresh process of its own: load
time and RSS after load (and after the queries, since both read their index through mmap or
page in what the queries touch). Queries per second, end to end (query string to the top-k
internal ids, analysis included), at top-10, top-100 and top-1000, are measured alternately (one
engine, then the other, the order swapped every round) over several rounds after an untimed
warm-up pass, so that drift on a shared machine hits both alike; the median round is reported
with every round. Overlap: mean |A ∩ B| / 10 of the two engines' top-10, which means something
because both score BM25 with k1 1.2, b 0.75 and the same one-byte length quantisation.

SciFact part: the corpus indexed by `ltrr index --format beir` with its defaults (fields title and
text), nDCG@10 and Recall@100 on the test split through a real `ltrr shard lexical` process;
tantivy on the same two fields (en_stem, both in parse_query) in process; and every test query
at top-10, 100 and 1000 through the pruned and the exhaustive kernel in process, counting the
queries whose ranked lists (ids and scores) differ.

Ratios are ltrr / tantivy: above 1 is better for ltrr in queries/s, worse in build time, bytes
and memory. bytes_ratio counts ltrr's lexical component (the collection component beside it, ids
and popularity shared by every strategy of the index, is reported in ltrr_index_bytes_total).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from benchmarks.common import (
    DEFAULT_SCIFACT,
    BeirData,
    load_beir,
    pin_threads,
    print_table,
    run_info,
    write_json,
)
from benchmarks.lexical import TOP, grpc_figures, measure
from benchmarks.synthetic_corpus import CorpusSpec, make_queries, vocabulary, write_corpus
from services.metrics_shard import directory_bytes

ENGINES = ("ltrr", "tantivy")
TOPS = (10, 100, 1000)
DEFAULT_ROUNDS = 3
DEFAULT_MIN_SECONDS = 2.0
MIB = 1024 * 1024
QUERY_SYNTAX = re.compile(r"[^\w\s]")  # tantivy query-language characters would change a query's meaning


def engine_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks.lexical_scale_engines", *args]


def build(engine: str, corpus: Path, out: Path) -> dict[str, Any]:
    """Build `engine`'s index of `corpus` into `out` in a child process; its figures plus bytes."""
    done = subprocess.run(engine_command("build", engine, str(corpus), str(out)), stdout=subprocess.PIPE,
                          text=True, check=True)
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    figures["index_bytes"] = directory_bytes(out / "lexical") if engine == "ltrr" else directory_bytes(out)
    if engine == "ltrr":
        figures["index_bytes_total"] = directory_bytes(out)
    return figures


class Served:
    """One engine's serving process (benchmarks.lexical_scale_engines serve): ask() sends a command."""

    def __init__(self, engine: str, index_dir: Path, queries: Path) -> None:
        self.engine = engine
        self.process = subprocess.Popen(engine_command("serve", engine, str(index_dir), str(queries)),
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.ready = self._receive()

    def ask(self, **cmd: Any) -> dict[str, Any]:
        stdin: IO[str] | None = self.process.stdin
        if stdin is None:
            raise RuntimeError(f"{self.engine} worker has no stdin")
        stdin.write(json.dumps(cmd) + "\n")
        stdin.flush()
        return self._receive()

    def _receive(self) -> dict[str, Any]:
        line = self.process.stdout.readline() if self.process.stdout is not None else ""
        if not line:
            raise RuntimeError(f"{self.engine} worker exited with code {self.process.wait()}")
        out: dict[str, Any] = json.loads(line)
        return out

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(60)


def measure_rounds(served: dict[str, Served], rounds: int, min_seconds: float) -> dict[str, dict[int, list[float]]]:
    """queries/s per engine, per top-k, per round: the engines alternate at every top-k, and the
    one going first swaps every round."""
    qps: dict[str, dict[int, list[float]]] = {e: {k: [] for k in TOPS} for e in served}
    with tqdm(total=rounds * len(TOPS) * len(served), desc="query rounds", unit="run") as bar:
        for r in range(rounds):
            order = list(served) if r % 2 == 0 else list(reversed(served))
            for k in TOPS:
                for engine in order:
                    got = served[engine].ask(op="time", k=k, min_seconds=min_seconds)
                    qps[engine][k].append(got["queries"] / got["seconds"])
                    bar.update()
    return qps


def top10_overlap(a: list[list[int]], b: list[list[int]]) -> float:
    """Mean over queries of |A ∩ B| / 10."""
    return statistics.fmean(len(set(x) & set(y)) / 10 for x, y in zip(a, b, strict=True))


def synthetic(spec: CorpusSpec, workdir: Path, rounds: int, min_seconds: float) -> dict[str, Any]:
    corpus, queries_path = workdir / "corpus.txt", workdir / "queries.json"
    started = time.perf_counter()
    text_bytes = write_corpus(spec, corpus)
    queries = make_queries(spec, vocabulary(spec))
    queries_path.write_text(json.dumps(queries))
    out: dict[str, Any] = {"corpus": {**spec.to_dict(), "text_bytes": text_bytes,
                                      "generate_seconds": time.perf_counter() - started}}
    for engine in ENGINES:
        print(f"building {engine} ...", file=sys.stderr)
        out[engine] = build(engine, corpus, workdir / engine)
    served = {e: Served(e, workdir / e, queries_path) for e in ENGINES}
    try:
        for engine, s in served.items():
            out[engine].update(s.ready)
            out[engine]["warm_seconds"] = s.ask(op="warm", ks=list(TOPS))["seconds"]
        qps = measure_rounds(served, rounds, min_seconds)
        tops = {e: s.ask(op="top", k=10)["ordinals"] for e, s in served.items()}
        for engine, s in served.items():
            memory = s.ask(op="memory")
            out[engine].update(rss_after_queries_mb=memory["rss_mb"], serve_peak_rss_mb=memory["peak_rss_mb"])
    finally:
        for s in served.values():
            s.close()
    for engine in ENGINES:
        for k in TOPS:
            out[engine][f"qps_top{k}_rounds"] = [round(v, 1) for v in qps[engine][k]]
            out[engine][f"qps_top{k}"] = round(statistics.median(qps[engine][k]), 1)
    out["overlap_top10"] = round(top10_overlap(tops["ltrr"], tops["tantivy"]), 4)
    return out


def ratios(result: dict[str, Any]) -> dict[str, float]:
    lt, ta = result["ltrr"], result["tantivy"]
    out = {f"qps_ratio_top{k}": lt[f"qps_top{k}"] / ta[f"qps_top{k}"] for k in TOPS}
    out |= {"build_ratio": lt["build_seconds"] / ta["build_seconds"],
            "bytes_ratio": lt["index_bytes"] / ta["index_bytes"],
            "rss_ratio": lt["rss_after_load_mb"] / ta["rss_after_load_mb"]}
    return {k: round(v, 3) for k, v in out.items()}


def print_synthetic(result: dict[str, Any]) -> None:
    lt, ta = result["ltrr"], result["tantivy"]
    rows: list[list[Any]] = [
        ["build seconds", lt["build_seconds"], ta["build_seconds"], lt["build_seconds"] / ta["build_seconds"]],
        ["build peak RSS MiB", lt["peak_rss_mb"], ta["peak_rss_mb"], lt["peak_rss_mb"] / ta["peak_rss_mb"]],
        ["index MiB", lt["index_bytes"] / MIB, ta["index_bytes"] / MIB, lt["index_bytes"] / ta["index_bytes"]],
        ["load seconds", lt["load_seconds"], ta["load_seconds"], lt["load_seconds"] / ta["load_seconds"]]]
    for key, label in (("rss_after_load_mb", "RSS after load MiB"), ("rss_after_queries_mb", "RSS after queries MiB")):
        rows.append([label, lt[key], ta[key], lt[key] / ta[key]])
    for k in TOPS:
        rows.append([f"queries/s top-{k} (median)", lt[f"qps_top{k}"], ta[f"qps_top{k}"],
                     lt[f"qps_top{k}"] / ta[f"qps_top{k}"]])
    print_table(rows, ["synthetic", "ltrr", "tantivy", "ltrr/tantivy"])
    for k in TOPS:
        print(f"  top-{k} rounds: ltrr {lt[f'qps_top{k}_rounds']}, tantivy {ta[f'qps_top{k}_rounds']}")
    print(f"  top-10 overlap {result['overlap_top10']:.4f}; ltrr index with its collection "
          f"{lt['index_bytes_total'] / MIB:,.1f} MiB; tantivy segments: {ta['segments']}")


def tantivy_two_fields(data: BeirData) -> Callable[[str], list[tuple[str, float]]]:
    """tantivy over SciFact's title and text as two fields (en_stem, freq), both in parse_query."""
    import tantivy

    builder = tantivy.SchemaBuilder()
    for name in ("title", "text"):
        builder.add_text_field(name, stored=False, tokenizer_name="en_stem", index_option="freq")
    index = tantivy.Index(builder.build())
    writer = index.writer(heap_size=200_000_000, num_threads=1)
    for _, title, text in data.corpus:
        writer.add_document(tantivy.Document(title=title, text=text))
    writer.commit()
    writer.wait_merging_threads()
    index.reload()
    searcher = index.searcher()
    if searcher.num_segments != 1:  # one segment from one thread: doc ids are insertion order
        raise RuntimeError(f"expected one tantivy segment, got {searcher.num_segments}")
    ids = [did for did, _, _ in data.corpus]

    def search(text: str) -> list[tuple[str, float]]:
        query = index.parse_query(QUERY_SYNTAX.sub(" ", text), ["title", "text"])
        return [(ids[addr.doc], float(score)) for score, addr in searcher.search(query, TOP, count=False).hits]

    return search


def pruned_vs_exhaustive(index_dir: Path, data: BeirData) -> dict[str, Any]:
    """Every test query at each of TOPS through the pruned and the exhaustive kernel over the same
    index, in process: how many queries' ranked lists (ids and scores, ties included) differ."""
    from core.indexing import open_strategy
    from core.query import make_query

    pruned, exhaustive = (open_strategy(index_dir, "lexical", {"pruning": p}) for p in (True, False))
    differing = {}
    for k in TOPS:
        differing[f"top{k}"] = 0
        for text in data.queries.values():
            a, b = (s.retrieve(make_query(text), k, None) for s in (pruned, exhaustive))
            differing[f"top{k}"] += a.ordinals.tolist() != b.ordinals.tolist() or a.scores.tolist() != b.scores.tolist()
    return {"queries": len(data.queries), "differing": differing}


def scifact_figures(root: Path) -> dict[str, Any]:
    """nDCG@10, Recall@100 and queries/s: ltrr as `ltrr index --format beir` builds it by default,
    through a gRPC shard; tantivy on the same two fields, in process. {} when `root` is missing."""
    if not (root / "corpus.jsonl").is_file():
        print(f"SciFact skipped: {root / 'corpus.jsonl'} not found (pass --scifact DIR)", file=sys.stderr)
        return {}
    data = load_beir(root)
    with tempfile.TemporaryDirectory(prefix="ltrr-scifact-") as tmp:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "services.cli", "index", "--catalog", str(root / "corpus.jsonl"),
                        "--format", "beir", "--out", tmp, "--strategies", "lexical"], stdout=sys.stderr, check=True)
        ltrr = {"build_seconds": time.perf_counter() - started, **grpc_figures(Path(tmp), data),
                "pruned_vs_exhaustive": pruned_vs_exhaustive(Path(tmp), data)}
    return {"ltrr_grpc": ltrr, "tantivy": measure(tantivy_two_fields(data), data)}


def print_scifact(result: dict[str, Any]) -> None:
    lt, ta = result["ltrr_grpc"], result["tantivy"]
    rows: list[list[Any]] = [[name, lt[name], ta[name], lt[name] / ta[name]] for name in ("ndcg@10", "recall@100")]
    rows.append(["queries/s (not comparable)", lt["qps"], ta["qps"], "-"])
    print_table(rows, ["SciFact (title, text)", "ltrr gRPC shard", "tantivy in process", "ltrr/tantivy"])
    exact = lt["pruned_vs_exhaustive"]
    print(f"  pruned vs exhaustive kernel over {exact['queries']} queries: lists that differ {exact['differing']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=CorpusSpec.n_docs, help="documents (default: %(default)s)")
    parser.add_argument("--queries", type=int, default=CorpusSpec.n_queries, help="queries (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="timed rounds (default: %(default)s)")
    parser.add_argument("--min-seconds", type=float, default=DEFAULT_MIN_SECONDS,
                        help="least duration of one timed run (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--workdir", type=Path, help="keep the corpus and indexes here (default: a temporary folder)")
    data = parser.add_mutually_exclusive_group()
    data.add_argument("--scifact", type=Path, default=DEFAULT_SCIFACT,
                      help="BEIR SciFact folder (default: %(default)s)")
    data.add_argument("--no-scifact", action="store_true", help="skip the SciFact part")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.min_seconds <= 0:
        parser.error("--rounds must be >= 1 and --min-seconds > 0")
    pin_threads()
    spec = CorpusSpec(n_docs=args.docs, n_queries=args.queries)
    with tempfile.TemporaryDirectory(prefix="ltrr-scale-") as tmp:
        workdir = args.workdir or Path(tmp)
        if any((workdir / e).exists() for e in ENGINES):
            parser.error(f"--workdir {workdir} already holds an index from an earlier run ({', '.join(ENGINES)})")
        workdir.mkdir(parents=True, exist_ok=True)
        result = synthetic(spec, workdir, args.rounds, args.min_seconds)
    result |= ratios(result)
    if not args.no_scifact:
        result["scifact"] = scifact_figures(args.scifact)
    result["run"] = run_info(threads=1)
    print(f"ltrr vs tantivy, {spec.n_docs:,} documents, {spec.n_queries} queries, {args.rounds} round(s) "
          f"(commit {result['run']['commit']}, {result['run']['threads']} thread)")
    print_synthetic(result)
    if result.get("scifact"):
        print_scifact(result["scifact"])
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
