"""The bulk write path: a catalog refresh streamed through `ltrr catalog upsert`, writes/s.

    python -m benchmarks.catalog_bulk [--batch 100,500,1000] [--store sqlite|postgresql] [--json FILE]

A real broker process (the bundled demo catalog as its --catalog, over a lexical shard of it) and
the CLI as a separate process, which reads the demo catalog's canonical JSONL (28,356 entities)
and sends it in batches of --batch; each batch is validated, appended to the store's catalog log in
one transaction (durable: SQLite WAL synchronous=FULL, or PostgreSQL synchronous_commit on) and
applied to the broker's live table before the next is sent. The figure is the CLI's own summary
(writes / wall time, start-up excluded). Each batch size gets a fresh store, so every write applies
(none is stale). Threads pinned to 1.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import pin_threads, print_table, run_info, write_json
from benchmarks.event_store import build_index_for
from core.catalog import demo_catalog_path
from services.postgres import PostgresServer
from services.process import spawn

SUMMARY = re.compile(r"^(\d+) writes: (\d+) applied, (\d+) stale, (\d+) failed in ([\d.]+)s")


def refresh(broker: str, catalog: Path, batch: int) -> dict[str, float]:
    """Run the CLI over `catalog` against `broker`; its summary as numbers."""
    out = subprocess.run([sys.executable, "-m", "services.cli", "catalog", "upsert", str(catalog), "--target", broker,
                          "--batch", str(batch)], capture_output=True, text=True, check=False)
    line = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr
    match = SUMMARY.match(line)
    if match is None:
        raise RuntimeError(f"the CLI failed ({out.returncode}): {line}")
    n, applied, stale, failed, seconds = (float(g) for g in match.groups())
    return {"batch": batch, "writes": n, "applied": applied, "stale": stale, "failed": failed, "seconds": seconds,
            "writes_per_s": n / seconds}


def run(batches: list[int], store: str, root: Path) -> list[dict[str, Any]]:
    catalog = demo_catalog_path()
    build_index_for(catalog, root / "index")
    shard = spawn(["shard", "lexical", "--index", str(root / "index"), "--port", "0"])
    pg = PostgresServer(str(root / "pg")) if store == "postgresql" else None
    if pg is not None:
        pg.start()
    results = []
    try:
        for batch in batches:
            url = pg.create_database(f"bulk{batch}") if pg is not None else str(root / f"events-{batch}.sqlite")
            broker = spawn(["broker", "--state", str(root / f"state-{batch}"), "--catalog", str(catalog),
                            "--port", "0", "--shard", f"lexical={shard.address}", "--store", url,
                            "--set", "policy=static"])
            try:
                results.append({"store": store, **refresh(broker.address, catalog, batch)})
            finally:
                broker.stop()
    finally:
        shard.stop()
        if pg is not None:
            pg.remove()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", default="100,500,1000", help="batch sizes to measure, comma-separated")
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    pin_threads()
    with tempfile.TemporaryDirectory(prefix="ltrr-bulk-") as tmp:
        results = run([int(b) for b in args.batch.split(",")], args.store, Path(tmp))
    print_table([[r["store"], r["batch"], r["writes"], r["failed"], r["seconds"], r["writes_per_s"]] for r in results],
                ["store", "batch", "writes", "failed", "seconds", "writes/s"])
    write_json(args.json, {"run": run_info(), "results": results})


if __name__ == "__main__":
    main()
