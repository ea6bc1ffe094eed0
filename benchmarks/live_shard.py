"""Live shards on the demo catalog, in process (core.live_shard, no gRPC): start-up, the time to
apply one batch of catalog records (a search waits at most that long: batches are applied under
the lock searches read under), and a lexical merge.

    python -m benchmarks.live_shard [--index DIR] [--writes 1000] [--batch 5]

1,000 new tracks (copies of demo tracks under new ids and titles) are applied in batches of 5 (100
writes/s read every 0.05 s); then 200 changes and 200 deletes. Pin threads: NUMBA_NUM_THREADS=1.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from benchmarks.common import run_info
from core.catalog import Entity, demo_catalog_path, load_jsonl, write_jsonl
from core.catalog_log import CatalogRecord, CatalogWrite
from core.indexing import build_index
from core.live import Delete, Upsert, Write
from core.live_shard import LiveShard, LiveShardConfig, catch_up, open_live_shard
from core.query import make_query

STRATEGIES = ("lexical", "semantic", "attribute", "memory")


def writes(catalog: list[Entity], n: int) -> list[Write]:
    rng = np.random.default_rng(0)
    picks = rng.choice(len(catalog), size=n, replace=False)
    new = [dataclasses.replace(e, id=f"live-{k}", fields={**e.fields, "title": f"release {k} {e.fields['title']}"})
           for k, e in enumerate(catalog[int(i)] for i in picks)]
    out: list[Write] = [Upsert(e) for e in new]
    out += [Upsert(dataclasses.replace(e, fields={**e.fields, "title": f"changed {e.id}"})) for e in new[:200]]
    out += [Delete(e.id) for e in new[200:400]]
    return out


def as_records(stream: list[Write]) -> list[CatalogRecord]:
    """The log of `stream`: position = version = 1, 2, ..."""
    return [CatalogRecord(p, CatalogWrite(w.entity_id, p) if isinstance(w, Delete)
                          else CatalogWrite(w.entity.id, p, w.entity)) for p, w in enumerate(stream, start=1)]


def records_after(records: list[CatalogRecord]) -> Callable[[int, int], list[CatalogRecord]]:
    """catalog_after over `records` (positions 1..n in order)."""
    return lambda position, limit: records[position:position + limit]


def run(shard: LiveShard, records: list[CatalogRecord], batch: int) -> tuple[list[float], list[float]]:
    """Apply `records` `batch` at a time; the milliseconds each batch took, and held the lock
    searches wait on."""
    took, locked = [], []
    for i in range(0, len(records), batch):
        started = time.perf_counter()
        shard.apply(records[i:i + batch])
        took.append((time.perf_counter() - started) * 1000)
        locked.append(shard.last_locked_s * 1000)
    return took, locked


def demo_setup(index: str, strategies: Sequence[str], prefix: str) -> tuple[list[Entity], Path, Path]:
    """The demo catalog, a new work directory holding it as catalog.jsonl, and the index at `index`
    ("" = build one of `strategies` in the work directory)."""
    catalog = load_jsonl(demo_catalog_path())
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    write_jsonl(catalog, tmp / "catalog.jsonl")
    root = Path(index) if index else tmp / "index"
    if not index:
        started = time.perf_counter()
        build_index(catalog, root, list(strategies), {s: {"progress": False} for s in strategies})
        print(f"built the demo index ({len(catalog)} entities) in {time.perf_counter() - started:.1f}s")
    return catalog, tmp, root


def shard_config(name: str, index: Path, tmp: Path, live_dir: Path) -> LiveShardConfig:
    """A live shard of strategy `name` over `index` and demo_setup's catalog (merges on request only)."""
    options = {"state_dir": str(tmp / "memory")} if name == "memory" else {}
    return LiveShardConfig(strategy=name, index=str(index), catalog=str(tmp / "catalog.jsonl"),
                           live_dir=str(live_dir), options=options, merge_entities=0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--index", default="", help="a demo index of every strategy (default: build one in a temp dir)")
    p.add_argument("--writes", type=int, default=1000)
    p.add_argument("--batch", type=int, default=5)
    p.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated (default: all four)")
    args = p.parse_args()
    catalog, tmp, index = demo_setup(args.index, STRATEGIES, "live-shard-")
    print(run_info())
    stream = writes(catalog, args.writes)
    for name in args.strategies.split(","):
        config = shard_config(name, index, tmp, tmp / "live" / name)
        started = time.perf_counter()
        shard = open_live_shard(config)
        shard.strategy.warm_up()
        opened = time.perf_counter() - started
        records = as_records(stream)
        took, locked = run(shard, records, args.batch)
        p50, p99 = np.percentile(took, [50, 99])
        line = (f"{name:9s} start {opened:5.2f}s  apply per batch of {args.batch}: p50 {p50:6.2f} ms  "
                f"p99 {p99:6.2f} ms  max {max(took):6.2f} ms; under the lock p50 {np.percentile(locked, 50):5.2f} "
                f"p99 {np.percentile(locked, 99):5.2f} max {max(locked):6.2f} ms ({len(stream)} writes)")
        if name == "lexical":
            with shard.reading() as s:
                s.retrieve(make_query("release"), 10, None)
            started = time.perf_counter()
            shard.merge()
            line += f"  merge {time.perf_counter() - started:.2f}s"
            restarted = time.perf_counter()
            catch_up(open_live_shard(config), records_after(records))
            line += f"  restart from the merged base {time.perf_counter() - restarted:.2f}s"
        print(line, flush=True)
        shard.close()


if __name__ == "__main__":
    main()
