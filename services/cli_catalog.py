"""`ltrr catalog upsert|delete|status`: the live catalog's client commands (ltrr.v1.Catalog on the broker).

upsert reads canonical JSONL (core.catalog; `.jsonl.gz` or `-` for stdin) and sends it in batches
of --batch writes (the bulk path: a catalog refresh streams in batch after batch, with a progress
bar on stderr for big inputs and a summary line with the measured writes/s). Each item prints one
line: "<id> applied v<version> @<position>", "<id> stale v<version> (a newer version is written)"
or "<id> error: ...". A bad line (not JSON, not an entity) is reported as FILE:LINE and nothing of
its batch is sent; a batch the broker refuses (INVALID_ARGUMENT naming writes[i]) writes nothing
either. The exit code is 1 when any item failed (or, with --wait, a batch did not become visible
in time), else 0.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import grpc

from core.catalog import Entity, entity_from_json, open_text
from core.catalog_log import MAX_WRITES_PER_BATCH
from core.errors import CatalogError
from ltrr.v1 import catalog_pb2, catalog_pb2_grpc
from services.cli_common import DEFAULT_BROKER_PORT, add_security_flags, security_from_args
from services.convert_catalog import write_to_proto
from services.security import open_channel

DEFAULT_BATCH = 500
DEFAULT_TIMEOUT_S = 60.0
PROGRESS_BYTES = 1 << 20  # inputs above this get a progress bar


@dataclass
class Tally:
    applied: int = 0
    stale: int = 0
    failed: int = 0
    invisible: int = 0  # batches not visible when --wait gave up

    @property
    def ok(self) -> bool:
        return not (self.failed or self.invisible)


Item = tuple[str, Entity | str | CatalogError]  # where (FILE:LINE or the id), what to write


def _open(source: str) -> IO[str]:
    if source == "-":
        return sys.stdin
    return open_text(Path(source))


def read_entities(source: str) -> Iterator[Item]:
    """(FILE:LINE, the entity or the CatalogError that line gives) of every non-empty line."""
    name = "<stdin>" if source == "-" else source
    f = _open(source)
    try:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{name}:{n}"
            try:
                yield where, entity_from_json(json.loads(line), where)
            except json.JSONDecodeError as err:
                yield where, CatalogError(f"{where}: not valid JSON ({err.msg})")
            except CatalogError as err:
                yield where, err
    finally:
        if f is not sys.stdin:
            f.close()


def _batches(items: Iterator[Item], size: int) -> Iterator[list[Item]]:
    batch: list[Item] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _label(item: Item) -> str:
    what = item[1]
    return what.id if isinstance(what, Entity) else what if isinstance(what, str) else item[0]


def send(stub: Any, batch: list[Item], args: argparse.Namespace, tally: Tally) -> None:
    """Send one batch (unless a line of it is bad) and print one line per item."""
    bad = [(where, what) for where, what in batch if isinstance(what, CatalogError)]
    if bad:
        for _, err in bad:
            print(f"error: {err}")
        first = bad[0][0]
        for item in batch:
            if not isinstance(item[1], CatalogError):
                print(f"{_label(item)} error: not written: its batch holds a bad line ({first})")
        tally.failed += len(batch)
        return
    writes = [write_to_proto(what) for _, what in batch if not isinstance(what, CatalogError)]
    request = catalog_pb2.CatalogWriteRequest(writes=writes, wait=args.wait, wait_timeout_ms=args.wait_timeout_ms)
    try:
        response = stub.Write(request, timeout=args.timeout)
    except grpc.RpcError as err:
        for item in batch:
            print(f"{_label(item)} error: {err.code().name}: {err.details()}")
        tally.failed += len(batch)
        return
    for r in response.results:
        if r.outcome == catalog_pb2.CatalogWriteResult.OUTCOME_APPLIED:
            tally.applied += 1
            print(f"{r.id} applied v{r.version} @{r.position}")
        else:
            tally.stale += 1
            print(f"{r.id} stale v{r.version} (a newer or equal version is written)")
    if args.wait and not response.visible:
        tally.invisible += 1
        print(f"error: position {response.position} not visible on every replica within "
              f"{args.wait_timeout_ms or 10000} ms (it is durable and becomes visible later)")


def _write_all(args: argparse.Namespace, items: Iterator[Item], total_bytes: int) -> int:
    if not 1 <= args.batch <= MAX_WRITES_PER_BATCH:
        raise ValueError(f"`--batch` must be in [1, {MAX_WRITES_PER_BATCH}], but got {args.batch}")
    tally, started = Tally(), time.perf_counter()
    bar = None
    if (total_bytes > PROGRESS_BYTES and sys.stderr.isatty()) or args.progress:
        from tqdm import tqdm

        bar = tqdm(unit=" writes", file=sys.stderr, desc="catalog")
    with open_channel(args.target, security_from_args(args)) as channel:
        stub = catalog_pb2_grpc.CatalogStub(channel)
        for batch in _batches(items, args.batch):
            send(stub, batch, args, tally)
            if bar is not None:
                bar.update(len(batch))
    if bar is not None:
        bar.close()
    elapsed = time.perf_counter() - started
    n = tally.applied + tally.stale + tally.failed
    print(f"{n} writes: {tally.applied} applied, {tally.stale} stale, {tally.failed} failed in {elapsed:.2f}s "
          f"({n / elapsed if elapsed > 0 else 0.0:,.0f} writes/s)")
    return 0 if tally.ok else 1


def cmd_upsert(args: argparse.Namespace) -> int:
    size = 0 if args.file == "-" else Path(args.file).stat().st_size if Path(args.file).exists() else 0
    return _write_all(args, read_entities(args.file), size)


def cmd_delete(args: argparse.Namespace) -> int:
    return _write_all(args, ((entity_id, entity_id) for entity_id in args.ids), 0)


def cmd_status(args: argparse.Namespace) -> int:
    with open_channel(args.target, security_from_args(args)) as channel:
        try:
            status = catalog_pb2_grpc.CatalogStub(channel).Status(catalog_pb2.CatalogStatusRequest(),
                                                                  timeout=args.timeout)
        except grpc.RpcError as err:
            print(f"error: {err.code().name}: {err.details()}")
            return 1
    print(f"log position {status.log_position}; visibility bound {status.visibility_bound_ms} ms")
    for r in status.replicas:
        where = f"{r.strategy}[{r.partition}] {r.address}".strip() if r.address else r.strategy
        print(f"{where}: " + (f"error: {r.error}" if r.error else
                              f"applied @{r.applied_position}, {r.pending_entities} pending entities"))
    return 1 if any(r.error and "UNIMPLEMENTED" not in r.error for r in status.replicas) else 0


def _common(p: argparse.ArgumentParser, *, writes: bool) -> None:
    p.add_argument("--target", default=f"127.0.0.1:{DEFAULT_BROKER_PORT}", help="the broker's address")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per call")
    if writes:
        p.add_argument("--batch", type=int, default=DEFAULT_BATCH,
                       help=f"writes per request (1..{MAX_WRITES_PER_BATCH})")
        p.add_argument("--wait", action="store_true", help="return only once the writes are visible on every replica")
        p.add_argument("--wait-timeout-ms", type=int, default=0, help="bound on each wait (0 = 10000)")
        p.add_argument("--progress", action="store_true", help="show the progress bar whatever the input's size")
    add_security_flags(p, server=False)


def add_catalog_commands(sub: Any) -> None:
    catalog = sub.add_parser("catalog", help="write to the live catalog through the broker (upsert, delete, status)")
    commands = catalog.add_subparsers(dest="catalog_command", required=True)
    p = commands.add_parser("upsert", help="insert or replace entities from canonical JSONL (`-`: stdin)")
    p.add_argument("file", help="canonical JSONL, .jsonl.gz, or - for stdin")
    _common(p, writes=True)
    p.set_defaults(func=cmd_upsert)
    p = commands.add_parser("delete", help="delete entities by id")
    p.add_argument("ids", nargs="+", metavar="ID")
    _common(p, writes=True)
    p.set_defaults(func=cmd_delete)
    p = commands.add_parser("status", help="how far the broker and every shard replica applied the catalog log")
    _common(p, writes=False)
    p.set_defaults(func=cmd_status)

