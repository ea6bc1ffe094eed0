"""The two engines of benchmarks.lexical_scale, each built and served in a process of its own, so
that its build peak and its resident memory are its own.

    python -m benchmarks.lexical_scale_engines build ENGINE CORPUS INDEX_DIR
    python -m benchmarks.lexical_scale_engines serve ENGINE INDEX_DIR QUERIES_JSON

`build` indexes the corpus file (benchmarks.synthetic_corpus) and prints one JSON line: build
seconds (reading the file included, interpreter start and imports not) and the process's peak RSS.
`serve` opens the index, prints a JSON line with its load time and RSS, then answers one JSON
command per stdin line with one JSON line (see Worker). Protocol lines go to the real stdout;
anything else the process prints is sent to stderr.

ltrr: core.indexing.build_index over FileCorpus (one text field), k1 1.2 and b 0.75 (tantivy's
fixed BM25 parameters) with ltrr's other defaults (Lucene length quantisation: tantivy stores
field norms with the same one-byte code); queries through strategy.retrieve.
tantivy: one text field (en_stem, index_option "freq", not stored) and an unsigned fast field
"ord" holding the document's position in the corpus (to compare result lists; it is read only
outside timed loops), one writer thread, one commit, wait_merging_threads; parse_query over the
text field, search with count=False (counting would disable tantivy's pruning).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from benchmarks.synthetic_corpus import FIELD, FileCorpus

K1 = 1.2
B = 0.75
TANTIVY_HEAP_BYTES = 2_000_000_000

Search = Callable[[str, int], object]
Ordinals = Callable[[str, int], list[int]]


def build_ltrr(corpus: Path, out: Path) -> dict[str, Any]:
    from core.indexing import build_index

    entities = FileCorpus(corpus)
    started = time.perf_counter()
    build_index(entities, out, ["lexical"], {"lexical": {"k1": K1, "b": B, "progress": True}})
    return {"build_seconds": time.perf_counter() - started}


def _tantivy_schema() -> Any:
    import tantivy

    builder = tantivy.SchemaBuilder()
    builder.add_text_field(FIELD, stored=False, tokenizer_name="en_stem", index_option="freq")
    builder.add_unsigned_field("ord", stored=False, indexed=False, fast=True)
    return builder.build()


def build_tantivy(corpus: Path, out: Path) -> dict[str, Any]:
    import tantivy
    from tqdm import tqdm

    out.mkdir(parents=True)
    n = len(FileCorpus(corpus))
    started = time.perf_counter()
    index = tantivy.Index(_tantivy_schema(), path=str(out), reuse=False)
    writer = index.writer(heap_size=TANTIVY_HEAP_BYTES, num_threads=1)
    with corpus.open(encoding="ascii") as f:
        for i, line in enumerate(tqdm(f, total=n, desc="tantivy: indexing", unit="doc")):
            doc = tantivy.Document()
            doc.add_text(FIELD, line[:-1])
            doc.add_unsigned("ord", i)
            writer.add_document(doc)
    writer.commit()
    writer.wait_merging_threads()
    seconds = time.perf_counter() - started
    index.reload()
    return {"build_seconds": seconds, "segments": index.searcher().num_segments}


def open_ltrr(index_dir: Path) -> tuple[Search, Ordinals]:
    from core.indexing import open_strategy
    from core.query import make_query

    strategy = open_strategy(index_dir, "lexical")
    strategy.warm_up()

    def search(text: str, k: int) -> object:
        return strategy.retrieve(make_query(text), k, None)

    def ordinals(text: str, k: int) -> list[int]:
        return [int(o) for o in strategy.retrieve(make_query(text), k, None).ordinals.tolist()]

    return search, ordinals


def open_tantivy(index_dir: Path) -> tuple[Search, Ordinals]:
    import tantivy

    index = tantivy.Index.open(str(index_dir))
    searcher = index.searcher()

    def search(text: str, k: int) -> object:
        return searcher.search(index.parse_query(text, [FIELD]), k, count=False).hits

    def ordinals(text: str, k: int) -> list[int]:
        hits = searcher.search(index.parse_query(text, [FIELD]), k, count=False).hits
        values = searcher.fast_field_values("ord", [addr for _, addr in hits])
        out = [v for v in values if isinstance(v, int)]
        if len(out) != len(values):
            raise RuntimeError(f"a tantivy hit of {text!r} has no `ord` value")
        return out

    return search, ordinals


BUILDERS: dict[str, Callable[[Path, Path], dict[str, Any]]] = {"ltrr": build_ltrr, "tantivy": build_tantivy}
OPENERS: dict[str, Callable[[Path], tuple[Search, Ordinals]]] = {"ltrr": open_ltrr, "tantivy": open_tantivy}


def memory_mb() -> dict[str, float]:
    """This process's resident set now and at its peak (VmRSS, VmHWM), in MiB."""
    out = {}
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out["rss_mb" if key == "VmRSS" else "peak_rss_mb"] = int(value.split()[0]) / 1024
    return out


class Worker:
    """Answers the driver's commands over one opened index:
    {"op": "time", "k": K, "min_seconds": S}: runs every query at top-K, the whole list again
        until S seconds have passed -> {"queries": n, "seconds": s};
    {"op": "warm", "ks": [K, ...]}: every query once at each K (not timed) -> {"seconds": s};
    {"op": "top", "k": K} -> {"ordinals": [[corpus positions, best first] per query]};
    {"op": "memory"} -> memory_mb()."""

    def __init__(self, search: Search, ordinals: Ordinals, queries: list[str]) -> None:
        self.search = search
        self.ordinals = ordinals
        self.queries = queries

    def handle(self, cmd: dict[str, Any]) -> dict[str, Any]:
        op = cmd["op"]
        if op == "time":
            return self.timed(int(cmd["k"]), float(cmd["min_seconds"]))
        if op == "warm":
            started = time.perf_counter()
            for k in cmd["ks"]:
                for q in self.queries:
                    self.search(q, int(k))
            return {"seconds": time.perf_counter() - started}
        if op == "top":
            return {"ordinals": [self.ordinals(q, int(cmd["k"])) for q in self.queries]}
        if op == "memory":
            return memory_mb()
        raise ValueError(f"`op` must be one of time, warm, top, memory, but got {op!r}")

    def timed(self, k: int, min_seconds: float) -> dict[str, Any]:
        search, queries = self.search, self.queries
        done = 0
        started = time.perf_counter()
        while True:
            for q in queries:
                search(q, k)
            done += len(queries)
            elapsed = time.perf_counter() - started
            if elapsed >= min_seconds:
                return {"queries": done, "seconds": elapsed}


def serve(engine: str, index_dir: Path, queries_path: Path, proto: IO[str]) -> None:
    queries = json.loads(queries_path.read_text())
    before = memory_mb()["rss_mb"]
    started = time.perf_counter()
    search, ordinals = OPENERS[engine](index_dir)
    ready = {"load_seconds": time.perf_counter() - started, "rss_before_load_mb": before,
             "rss_after_load_mb": memory_mb()["rss_mb"]}
    _send(proto, ready)
    worker = Worker(search, ordinals, queries)
    for line in sys.stdin:
        _send(proto, worker.handle(json.loads(line)))


def _send(proto: IO[str], obj: dict[str, Any]) -> None:
    proto.write(json.dumps(obj) + "\n")
    proto.flush()


def main(argv: list[str]) -> int:
    proto = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout = sys.stderr  # only protocol lines on the real stdout
    usage = "usage: build ENGINE CORPUS INDEX_DIR | serve ENGINE INDEX_DIR QUERIES_JSON"
    if len(argv) != 4 or argv[0] not in ("build", "serve") or argv[1] not in BUILDERS:
        print(usage, file=sys.stderr)
        return 2
    command, engine, a, b = argv
    if command == "build":
        figures = BUILDERS[engine](Path(a), Path(b))
        figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        _send(proto, figures)
    else:
        serve(engine, Path(a), Path(b), proto)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
