"""Live lexical index benchmark: writes into the delta segment, search latency with a delta, merge.

    python -m benchmarks.live_lexical [--json FILE] [--queries N] [--delta 0,1000,10000]

On the demo catalog: the base is the catalog without its last max(--delta) tracks, which are then
added through LiveLexicalIndex.add, as new releases would be. Reported: add throughput (documents
per second, analysis included); search latency (exact-title queries, top 10, single thread, p50
and p99) of the plain base LexicalIndex and of the live index with each delta size, and with one
write before every search (each search then rebuilds the view: statistics, block bounds); the
merge time; and quality beside speed: the share of queries whose live top 10 (ids and float32
scores) equals that of one fresh offline build of base + delta, and the same after the merge.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import pin_threads, print_table, run_info, write_json

TOP = 10


def percentiles(seconds: list[float]) -> tuple[float, float]:
    import numpy as np

    ms = np.array(seconds) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def timed(searches: list[Any], texts: list[str]) -> tuple[list[list[Any]], list[list[float]]]:
    """Each text searched by each system in turn (so that CPU contention on a shared machine hits
    them alike), after 20 warm-up searches: per system (results, seconds per search). The objects
    alive before are frozen out of the garbage collector (gc.freeze, as a server does after loading)."""
    for text in texts[:20]:
        for search in searches:
            search(text)
    gc.collect()
    gc.freeze()
    results: list[list[Any]] = [[] for _ in searches]
    took: list[list[float]] = [[] for _ in searches]
    for text in texts:
        for i, search in enumerate(searches):
            t0 = time.perf_counter()
            results[i].append(search(text))
            took[i].append(time.perf_counter() - t0)
    return results, took


def agreement(got: list[Any], fresh: Any, texts: list[str]) -> float:
    """Share of queries whose live (ids, hits) equal the fresh build's top 10: ids and float32 scores."""
    import numpy as np

    from core.query import Query

    same = []
    for (ids, hits), text in zip(got, texts, strict=True):
        want = fresh.retrieve(Query(text=text), TOP, None)
        same.append(ids == [fresh.collection.ids[o] for o in want.ordinals]
                    and np.array_equal(hits.scores, want.scores))
    return float(np.mean(same))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--delta", default="0,1000,10000")
    args = parser.parse_args()
    pin_threads()
    import numpy as np

    from core.catalog import demo_catalog_path, load_catalog
    from core.collection import Collection
    from core.lexical.index import LexicalConfig, LexicalIndex, write_index
    from core.lexical.live import LiveLexicalIndex
    from core.query import Query

    catalog = load_catalog(demo_catalog_path())
    sizes = [int(s) for s in args.delta.split(",")]
    base_entities, new = catalog[:len(catalog) - max(sizes)], catalog[len(catalog) - max(sizes):]
    config = LexicalConfig.from_options({}, sorted({n for e in catalog for n in e.fields}))
    rng = np.random.default_rng(0)
    texts = [catalog[i].fields.get("title", "") for i in rng.choice(len(catalog), args.queries, replace=False)]
    rows: list[list[Any]] = []
    result: dict[str, Any] = {"run": run_info(), "base_documents": len(base_entities), "queries": len(texts)}
    with tempfile.TemporaryDirectory() as tmp:
        write_index(base_entities, config, f"{tmp}/base", progress=False)

        def open_base() -> LexicalIndex:
            index = LexicalIndex.load(f"{tmp}/base", Collection.build(base_entities))
            index.warm_up()
            return index

        plain = open_base()
        live = LiveLexicalIndex(open_base())

        def base_search(text: str) -> Any:
            return plain.retrieve(Query(text=text), TOP, None)

        def live_search(text: str) -> Any:
            return live.retrieve_ids(Query(text=text), TOP)

        def measure(name: str, delta: int, search: Any, fresh_catalog: list[Any] | None, **extra: Any) -> None:
            """Time `search` and the base in turn; rows and result[name]; agreement with a fresh build."""
            (_, got), (base_took, took) = timed([base_search, search], texts)
            b, p = percentiles(base_took), percentiles(took)
            same = float("nan")
            if fresh_catalog is not None:
                write_index(fresh_catalog, config, f"{tmp}/fresh", progress=False)
                same = agreement(got, LexicalIndex.load(f"{tmp}/fresh", Collection.build(fresh_catalog)), texts)
            rows.append([name, delta, f"{p[0]:.3f}", f"{p[1]:.3f}", f"{b[0]:.3f}", f"{b[1]:.3f}",
                         f"{p[1] / b[1]:.2f}", f"{extra.get('adds_per_s', float('nan')):,.0f}", f"{same:.3f}"])
            result[name] = {"delta_documents": delta, "search_p50_ms": p[0], "search_p99_ms": p[1],
                            "base_p50_ms": b[0], "base_p99_ms": b[1], "same_top10_as_fresh_build": same, **extra}

        added = 0
        for size in sizes:
            t0 = time.perf_counter()
            for e in new[added:size]:
                live.add(e)
            rate = (size - added) / (time.perf_counter() - t0) if size > added else float("nan")
            added = max(added, size)
            measure(f"live, delta {added}", added, live_search, base_entities + new[:added], adds_per_s=rate)
        upserted = new[:len(texts) + 20]
        extra = iter(upserted)  # upserts of delta tracks: one write before each search
        measure(f"live, delta {added}, 1 upsert + search", added,
                lambda t: (live.add(next(extra)), live_search(t)), None)
        t0 = time.perf_counter()
        live.merge(f"{tmp}/merged")
        merge_s = time.perf_counter() - t0
        final = base_entities + new[len(upserted):added] + upserted  # an upsert moves a track to the end
        measure("live after merge", 0, live_search, final, merge_seconds=merge_s, merged_documents=len(final))
    print_table(rows, ["index", "delta docs", "p50 ms", "p99 ms", "base p50 ms", "base p99 ms", "p99 ratio",
                       "adds/s", "same top 10"])
    print(f"merge of {len(final):,} documents: {merge_s:.2f} s; base {len(base_entities):,} documents; "
          f"{len(texts)} exact-title queries, top {TOP}; threads 1; commit {result['run']['commit']}")
    write_json(args.json, result)


if __name__ == "__main__":
    main()
