"""What the shared event store costs: PostgreSQL against SQLite, in the same run.

    python -m benchmarks.event_store [--decisions N] [--feedback N] [--json FILE]

1. Decision commit cost, store level: `record_decisions` (the broker's group commit) of batches of
   1 and 32 realistic decisions (4 strategy lists of 100 ids each), ms per commit and us per
   decision, on a SQLite file (WAL, synchronous=FULL) and on a private PostgreSQL server
   (services.postgres; synchronous_commit on, fsync on), both on this machine's disk.
2. Feedback latency, end to end: a real broker process over a lexical shard (the bundled catalog),
   once with its SQLite store and once on PostgreSQL; every search answered, then one Feedback per
   decision, sent one after another (closed loop: the cost of one call, not a load test), ms
   percentiles. A Feedback stores the event (the judged reward read and written in one
   transaction), then applies every stored event up to it (services.learning) before answering.
Ratios are PostgreSQL / SQLite. Threads pinned to 1.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import pin_threads, print_table, run_info, write_json
from core.catalog import demo_catalog_path
from core.eventlog import DecisionRecord
from core.eventstore import open_store
from core.indexing import build_index
from core.merge import StrategyList
from services.client import BrokerClient
from services.postgres import PostgresServer
from services.process import spawn

NAMES = ("lexical", "semantic", "attribute", "memory")


def _decision(rng: np.random.Generator) -> DecisionRecord:
    lists = tuple(StrategyList(s, [f"spotify:track:{rng.integers(10**12):022d}" for _ in range(100)],
                               np.sort(rng.random(100).astype(np.float32))[::-1]) for s in NAMES)
    return DecisionRecord(decision_id=uuid.uuid4().hex, ts=time.time(), query_text="dance monkey",
                          context={"device": "mobile"}, features=rng.random(24), strategies=NAMES,
                          quotas=(100, 100, 100, 100), allocation=7, propensity=0.3, marginals=(0.5,) * 4,
                          policy="thompson", lists=lists, final=tuple(lists[0].entity_ids[:10]), latency_ms=12.0)


def commit_cost(url: str, n: int, batch: int, seed: int = 0) -> dict[str, float]:
    """ms per record_decisions commit of `batch` decisions, over n decisions in all."""
    rng = np.random.default_rng(seed)
    records = [_decision(rng) for _ in range(n)]
    store = open_store(url)
    try:
        store.record_decisions(records[:batch])  # warm-up: connection, tables, caches
        times = []
        for i in range(batch, n - batch + 1, batch):
            t = time.perf_counter()
            store.record_decisions(records[i:i + batch])
            times.append((time.perf_counter() - t) * 1000)
    finally:
        store.close()
    ms = np.array(times)
    return {"p50_ms": float(np.median(ms)), "p99_ms": float(np.percentile(ms, 99)),
            "us_per_decision": float(ms.mean() * 1000 / batch)}


def feedback_latency(shard: str, catalog: Path, state: Path, store: str, n: int) -> dict[str, float]:
    """ms percentiles of n Feedback calls on a broker over `shard` with event store `store`."""
    broker = spawn(["broker", "--state", str(state), "--catalog", str(catalog), "--port", "0",
                    "--shard", f"lexical={shard}", "--store", store, "--set", "policy=static"])
    try:
        with BrokerClient(broker.address) as client:
            queries = ["dance monkey", "blinding lights", "shape of you", "bad guy", "levitating"]
            decisions = [client.search(queries[i % len(queries)], k=5, budget_ms=2000) for i in range(n + 20)]
            times = []
            for i, d in enumerate(decisions):
                entity = d.results[0].entity_id if d.results else ""
                t = time.perf_counter()
                client.feedback(d.decision_id, entity, "click" if entity else "reformulate", event_id=f"b{i}")
                if i >= 20:  # the first 20 warm up
                    times.append((time.perf_counter() - t) * 1000)
    finally:
        broker.stop()
    ms = np.array(times)
    return {"p50_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decisions", type=int, default=640, help="decisions stored per backend and batch size")
    parser.add_argument("--feedback", type=int, default=300, help="Feedback calls per backend")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    pin_threads()
    root = Path(tempfile.mkdtemp(prefix="ltrr-bench-store-"))
    pg = PostgresServer(root / "pg")
    urls = {"sqlite": str(root / "events.sqlite"), "postgresql": pg.start()}
    result: dict[str, Any] = {"run": run_info(), "commit": {}, "feedback": {}}
    try:
        rows = []
        for batch in (1, 32):
            got = {kind: commit_cost(url, args.decisions, batch) for kind, url in urls.items()}
            result["commit"][batch] = got
            rows.append([f"commit of {batch}", *(got[k]["p50_ms"] for k in urls), *(got[k]["us_per_decision"]
                                                                                   for k in urls),
                         f"{got['postgresql']['p50_ms'] / got['sqlite']['p50_ms']:.2f}x"])
        catalog = demo_catalog_path()
        build_index_for(catalog, root / "index")
        shard = spawn(["shard", "lexical", "--index", str(root / "index"), "--port", "0"])
        try:
            stores = {"sqlite": str(root / "broker-sqlite.sqlite"), "postgresql": urls["postgresql"]}
            got = {kind: feedback_latency(shard.address, catalog, root / f"state-{kind}", url, args.feedback)
                   for kind, url in stores.items()}
        finally:
            shard.stop()
        result["feedback"] = got
        print_table(rows, ["decisions", "sqlite p50 ms", "pg p50 ms", "sqlite us/decision", "pg us/decision",
                           "pg/sqlite"])
        print()
        ratio = {p: got["postgresql"][f"{p}_ms"] / got["sqlite"][f"{p}_ms"] for p in ("p50", "p90", "p99")}
        print_table([[f"Feedback {p}", got["sqlite"][f"{p}_ms"], got["postgresql"][f"{p}_ms"], f"{r:.2f}x"]
                     for p, r in ratio.items()], ["Feedback RPC", "sqlite ms", "pg ms", "pg/sqlite"])
        print(f"\n{result['run']}")
    finally:
        pg.remove()
    write_json(args.json, result)
    return 0


def build_index_for(catalog: Path, out: Path) -> None:
    from core.catalog import load_catalog

    build_index(load_catalog(catalog), out, ["lexical"], {"lexical": {"fields": "title^2,artist", "progress": False}})


if __name__ == "__main__":
    raise SystemExit(main())
