"""The `ltrr` command line. Flags and environment variables are read here and nowhere else."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from core.errors import LtrrError
from core.live_base import DEFAULT_BACKGROUND_NICE, DEFAULT_MERGE_ENTITIES
from services.admission import DEFAULT_SHARD_MAX_QUEUE
from services.cli_broker import add_broker_commands
from services.cli_catalog import add_catalog_commands
from services.cli_common import (
    DEFAULT_SHARD_PORT,
    DEMO_QUERIES,
    add_security_flags,
    parse_options,
    security_from_args,
)
from services.logs import FORMATS
from services.logs import setup as setup_logging
from services.metrics import port_arg

DEFAULT_DEMO_DIR = Path("indexes") / "demo"
DEMO_FIELDS = "title^2,artist^1.5,album^0.5"


def cmd_index(args: argparse.Namespace) -> int:
    from core.catalog import load_catalog
    from core.indexing import build_index
    from core.strategies import REGISTRY, entry_for

    entry_for("lexical")  # fills the registry
    strategies = args.strategies.split(",") if args.strategies else sorted(k.value for k in REGISTRY)
    options = parse_options(args.option, scoped=True)
    if args.fields:
        options.setdefault("lexical", {})["fields"] = args.fields
    started = time.perf_counter()
    if args.partitions < 1:
        raise ValueError(f"`--partitions` must be >= 1, but got {args.partitions}")
    entities = load_catalog(args.catalog, args.format)
    print(f"catalog {args.catalog}: {len(entities):,} entities")
    if args.partitions == 1:
        build_index(entities, args.out, strategies, options)
    else:
        from core.partitioning import build_partitioned

        layout = build_partitioned(entities, args.out, strategies, options, partitions=args.partitions)
        print(f"partitions: {args.partitions}, entities per partition: {', '.join(map(str, layout.counts))}")
    print(f"index {args.out}: {', '.join(strategies)} built in {time.perf_counter() - started:.1f}s")
    return 0


def cmd_shard(args: argparse.Namespace) -> int:
    # Before numba or torch load: one shard, one core's worth of threads unless told otherwise.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import uvloop

    from core.query import Limits
    from services.shard import ShardConfig, serve

    config = ShardConfig(strategy=args.strategy, index=args.index, host=args.host, port=args.port,
                         limits=Limits(max_quota=args.max_quota, max_query_chars=args.max_query_chars),
                         options=parse_options(args.option, scoped=False), delay_ms=args.test_delay_ms,
                         noop=args.noop, max_queue=args.max_queue, security=security_from_args(args),
                         store=args.store, catalog=args.catalog,
                         live_dir=args.live_dir or f"{args.index.rstrip('/')}.live/{args.strategy}-{args.port}",
                         merge_entities=args.merge_entities, background_nice=args.background_nice)

    def listening(address: str) -> None:
        print(f"ltrr shard {args.strategy} listening on {address}", flush=True)

    return uvloop.run(serve(config, on_listening=listening, metrics_port=args.metrics_port,
                            health_port=args.health_port))


def cmd_retrieve(args: argparse.Namespace) -> int:
    from core.query import Filter
    from services.client import ShardClient

    filters = []
    for spec in args.filter:
        name, _, values = spec.partition("=")
        filters.append(Filter(field=name, values=tuple(values.split("|"))))
    with ShardClient(args.target, security=security_from_args(args)) as client:
        response = client.retrieve(args.text, args.quota, filters=filters)
    print(f"{response.strategy}: {len(response.candidates)} of {response.total_matches} matches "
          f"in {response.took_ms:.2f} ms")
    for c in response.candidates:
        print(f"{c.rank:4d}  {c.score:9.4f}  {c.entity_id}")
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    from google.protobuf import json_format

    from services.client import ShardClient

    with ShardClient(args.target, security=security_from_args(args)) as client:
        print(json_format.MessageToJson(client.describe(), always_print_fields_with_no_presence=True))
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from core.catalog import load_catalog, write_jsonl

    entities = load_catalog(args.catalog, args.format)
    write_jsonl(entities, args.out)
    print(f"wrote {len(entities):,} entities to {args.out}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from core.collection import Collection
    from core.partitioning import delete_partitioned, read_partitions

    if read_partitions(args.index) is not None:
        newly = delete_partitioned(args.index, args.ids)
        print(f"{newly} entities newly deleted in the partitions holding them (restart shards to apply)")
        return 0
    collection = Collection.load(args.index)
    newly = collection.delete(args.ids)
    collection.save(args.index)
    print(f"{newly} entities newly deleted; {len(collection.deleted)} deleted in all (restart shards to apply)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from core.catalog import demo_catalog_path, load_catalog
    from core.indexing import build_index
    from services.client import ShardClient
    from services.process import shard_args, spawn

    index = Path(args.index)
    if not (index / "lexical" / "manifest.json").exists():
        print(f"building the demo index in {index} from the bundled catalog ...")
        build_index(load_catalog(demo_catalog_path()), index, ["lexical"], {"lexical": {"fields": DEMO_FIELDS}})
    titles = {e.id: f"{e.fields.get('title')} — {e.fields.get('artist')}" for e in load_catalog(demo_catalog_path())}
    server = spawn(shard_args("lexical", index, extra=["--port", str(args.port)]))
    try:
        print(f"lexical shard serving on {server.address} (pid {server.process.pid})")
        with ShardClient(server.address) as client:
            for query in DEMO_QUERIES:
                response = client.retrieve(query, 5)
                print(f"\n{query!r}: {response.total_matches} matches, {response.took_ms:.2f} ms in the shard")
                for c in response.candidates:
                    print(f"  {c.rank}. {titles.get(c.entity_id, c.entity_id)}  ({c.score:.2f})")
        if args.once:
            return 0
        print(f"\ntry: ltrr retrieve --target {server.address} \"your query\"   (Ctrl-C stops the shard)")
        server.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ltrr", description="Learning-to-rank-and-retrieve search cluster.")
    parser.add_argument("--log-level", default=None, help="logging level (default: INFO)")
    parser.add_argument("--log-format", choices=FORMATS, default=None,
                        help="text (default) or json: one JSON object per line, with the decision id where "
                             "there is one (services/logs.py)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("index", help="build an index directory from a catalog")
    p.add_argument("--catalog", required=True, help="catalog file: canonical JSONL(.gz), BEIR corpus.jsonl or "
                   "the Spotify songs CSV")
    p.add_argument("--format", default="auto", choices=["auto", "jsonl", "beir", "spotify"])
    p.add_argument("--out", required=True, help="index directory (created or updated in place)")
    p.add_argument("--strategies", default="", help="comma-separated strategies (default: every one available)")
    p.add_argument("--fields", default="", help="lexical fields and weights, e.g. 'title^2,artist' "
                   "(default: every text field, weight 1)")
    p.add_argument("--option", action="append", default=[], metavar="STRATEGY.KEY=VALUE",
                   help="a strategy build option, e.g. lexical.k1=1.2 (repeatable)")
    p.add_argument("--partitions", type=int, default=1,
                   help="document partitions (1: one index directory; P > 1: OUT/partitions.json, OUT/part-<p> "
                        "and OUT/memory-<p>, each served as an index; core/partitioning.py) (default: %(default)s)")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("shard", help="serve one strategy of an index over gRPC")
    p.add_argument("strategy", help="lexical, semantic, attribute or memory")
    p.add_argument("--index", required=True, help="index directory built by `ltrr index`")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    p.add_argument("--port", type=int, default=DEFAULT_SHARD_PORT,
                   help="port; 0 picks a free one (default: %(default)s)")
    p.add_argument("--max-quota", type=int, default=1000, help="largest accepted quota (default: %(default)s)")
    p.add_argument("--max-query-chars", type=int, default=1024, help="longest accepted query (default: %(default)s)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a run-time strategy option, e.g. k1=1.2 (repeatable)")
    p.add_argument("--threads", type=int, default=1, help="compute threads (numba, torch) (default: %(default)s)")
    p.add_argument("--test-delay-ms", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--noop", action="store_true", help="serve a no-op strategy under this name (benchmark floor)")
    p.add_argument("--metrics-port", type=port_arg, default=0, metavar="PORT|auto",
                   help="serve Prometheus metrics over HTTP on --host at this port (0: off; auto: a free port, "
                        "printed as 'metrics on HOST:PORT') (default: off)")
    p.add_argument("--max-queue", type=int, default=DEFAULT_SHARD_MAX_QUEUE,
                   help="searches queued or running at once; beyond it RESOURCE_EXHAUSTED at once, "
                        "0 = unbounded (default: %(default)s; services/admission.py)")
    p.add_argument("--store", default="", metavar="URL",
                   help="apply the live catalog log of this event store (the broker's --store URL: sqlite:///path "
                        "or postgresql://...) while serving (default: a static shard); not for partitioned indexes")
    p.add_argument("--catalog", default="", metavar="FILE",
                   help="with --store: the catalog file the index was built from (a live shard rebuilds its "
                        "live state from it; a lexical shard with a merged base no longer needs it)")
    p.add_argument("--live-dir", default="", metavar="DIR",
                   help="with --store: the lexical shard's merged bases and the semantic shard's checkpoints, "
                        "one directory per replica (default: INDEX.live/STRATEGY-PORT; give one with --port 0)")
    p.add_argument("--merge-entities", type=int, default=DEFAULT_MERGE_ENTITIES, metavar="N",
                   help="with --store: merge the lexical delta into a new base once it holds more than N "
                        "documents (semantic: checkpoint after more than N writes), 0 = never (default: %(default)s)")
    p.add_argument("--background-nice", type=int, default=DEFAULT_BACKGROUND_NICE, metavar="N",
                   help="with --store: add N to the nice value of the thread that merges, and run the thread "
                        "that encodes writes under SCHED_IDLE, so searches get the CPU first (0..19, 0 = both at "
                        "the searches' priority; default: %(default)s)")
    add_security_flags(p, server=True)
    p.set_defaults(func=cmd_shard)

    p = sub.add_parser("retrieve", help="ask a shard for candidates")
    p.add_argument("text")
    p.add_argument("--target", default=f"127.0.0.1:{DEFAULT_SHARD_PORT}", help="shard address (default: %(default)s)")
    p.add_argument("--quota", type=int, default=10)
    p.add_argument("--filter", action="append", default=[], metavar="FIELD=V1|V2", help="hard filter (repeatable)")
    add_security_flags(p, server=False)
    p.set_defaults(func=cmd_retrieve)

    p = sub.add_parser("describe", help="show what a shard serves")
    p.add_argument("--target", default=f"127.0.0.1:{DEFAULT_SHARD_PORT}")
    add_security_flags(p, server=False)
    p.set_defaults(func=cmd_describe)

    p = sub.add_parser("convert", help="convert a catalog to canonical JSONL (.jsonl or .jsonl.gz)")
    p.add_argument("--catalog", required=True)
    p.add_argument("--format", default="auto", choices=["auto", "jsonl", "beir", "spotify"])
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("delete", help="mark entities deleted in an index (never returned again)")
    p.add_argument("--index", required=True)
    p.add_argument("ids", nargs="+")
    p.set_defaults(func=cmd_delete)

    p = sub.add_parser("demo", help="index the bundled music catalog, serve it, run example queries")
    p.add_argument("--index", default=str(DEFAULT_DEMO_DIR), help="index directory (default: %(default)s)")
    p.add_argument("--port", type=int, default=DEFAULT_SHARD_PORT, help="shard port (default: %(default)s)")
    p.add_argument("--once", action="store_true", help="stop after the examples instead of serving on")
    p.set_defaults(func=cmd_demo)

    add_broker_commands(sub)
    add_catalog_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        setup_logging(args.log_level or "INFO", args.log_format or "text")
        return int(args.func(args))
    except (LtrrError, ValueError) as err:  # core validates input with precise ValueErrors
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
