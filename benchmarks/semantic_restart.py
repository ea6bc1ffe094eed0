"""The restart of a live semantic shard on the demo catalog, without and with a checkpoint
(core.live_checkpoint), in process (core.live_shard, no gRPC).

    python -m benchmarks.semantic_restart [--index DIR] [--writes 5000] [--after 0] [--strategy semantic]

`--writes` catalog writes (new tracks, 200 changes and 200 deletes: benchmarks.live_shard.writes) are
applied; then the shard checkpoints (the time its snapshot holds batches off, searches going on,
and the whole checkpoint) and `--after` more writes follow. Restart: open the shard and replay the log after its
base until caught up, then warm up (what services.shard_live does before SERVING): from the offline
index (no live_dir: every upsert re-encoded) and from the checkpoint, next to a start from the
offline index with an empty log (the floor: the catalog read, the encoder loaded). The index's
encoder (the demo index: MiniLM int8) encodes. `--strategy attribute` or `memory`: the same
restarts of a shard that writes no checkpoint. Threads pinned to 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks.common import pin_threads, run_info

pin_threads()

from benchmarks.live_shard import as_records, demo_setup, records_after, shard_config, writes  # noqa: E402
from core.catalog_log import CatalogRecord  # noqa: E402
from core.live_shard import LiveShard, LiveShardConfig, WriterShard, catch_up, open_live_shard  # noqa: E402
from services.metrics_shard import directory_bytes  # noqa: E402

BATCH = 100  # records per batch while catching up (the tail reads up to DEFAULT_CATALOG_BATCH)


def restart(config: LiveShardConfig, read: Callable[[int, int], Sequence[CatalogRecord]]) -> tuple[LiveShard, float]:
    started = time.perf_counter()
    shard = open_live_shard(config)
    catch_up(shard, read, batch=BATCH)
    shard.strategy.warm_up()
    return shard, time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--index", default="", help="a demo index with a semantic component (default: build one)")
    p.add_argument("--writes", type=int, default=5000, help="writes before the checkpoint (>= 400)")
    p.add_argument("--after", type=int, default=0, help="writes after the checkpoint")
    p.add_argument("--strategy", default="semantic", help="another live strategy: its restart without a checkpoint")
    args = p.parse_args()
    catalog, tmp, index = demo_setup(args.index, [args.strategy], "semantic-restart-")
    print(run_info())
    stream = writes(catalog, args.writes + args.after - 400)
    before, after = stream[:args.writes], stream[args.writes:]
    records = as_records(before + after)
    config = shard_config(args.strategy, index, tmp, tmp / "live")
    shard = open_live_shard(config)
    if not isinstance(shard, WriterShard):
        raise TypeError(f"expected a WriterShard (semantic, attribute, memory), got {type(shard).__name__}")
    catch_up(shard, records_after(records[:len(before)]), batch=BATCH)
    started = time.perf_counter()
    if shard.merge():
        took = time.perf_counter() - started
        size = directory_bytes(Path(config.live_dir))
        print(f"checkpoint at position {shard.base_position}: {took:.2f} s, of which "
              f"{shard.last_snapshot_s * 1000:.1f} ms holding batches off (not searches); {size / 1e6:.1f} MB")
    else:
        print(f"the {args.strategy} shard writes no checkpoint")
    catch_up(shard, records_after(records), batch=BATCH)
    shard.close()
    runs = (("offline index, no log (the floor)", "", records_after([])),
            ("offline index + whole log", "", records_after(records)),
            ("checkpoint + log after it", config.live_dir, records_after(records)))
    for label, live_dir, read in runs:
        again, seconds = restart(dataclasses.replace(config, live_dir=live_dir), read)
        print(f"restart from the {label}: {seconds:.2f} s (base position {again.base_position}, "
              f"{again.applied_position - again.base_position} records replayed)", flush=True)
        again.close()


if __name__ == "__main__":
    main()
