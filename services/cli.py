"""The `ltrr` command line. Flags and environment variables are read here and nowhere else."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.errors import LtrrError
from core.policy.policies import PolicyConfig

DEFAULT_DEMO_DIR = Path("indexes") / "demo"
DEMO_FIELDS = "title^2,artist^1.5,album^0.5"
DEMO_QUERIES = ("bohemian rhapsody", "taylor swift love", "dance monkey", "beyonce", "summer hits 2019")


def _options(pairs: Sequence[str], *, scoped: bool) -> dict[str, Any]:
    """["k1=1.2"] -> {"k1": "1.2"}; scoped: ["lexical.k1=1.2"] -> {"lexical": {"k1": "1.2"}}."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: --option expects {'STRATEGY.' if scoped else ''}KEY=VALUE, got {pair!r}")
        if scoped:
            scope, dot, name = key.partition(".")
            if not dot:
                raise SystemExit(f"error: --option expects STRATEGY.KEY=VALUE, got {pair!r}")
            out.setdefault(scope, {})[name] = value
        else:
            out[key] = value
    return out


def cmd_index(args: argparse.Namespace) -> int:
    from core.catalog import load_catalog
    from core.indexing import build_index
    from core.strategy import REGISTRY, entry_for

    entry_for("lexical")  # fills the registry
    strategies = args.strategies.split(",") if args.strategies else sorted(k.value for k in REGISTRY)
    options = _options(args.option, scoped=True)
    if args.fields:
        options.setdefault("lexical", {})["fields"] = args.fields
    started = time.perf_counter()
    entities = load_catalog(args.catalog, args.format)
    print(f"catalog {args.catalog}: {len(entities):,} entities")
    build_index(entities, args.out, strategies, options)
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
                         options=_options(args.option, scoped=False), delay_ms=args.test_delay_ms,
                         noop=args.noop)

    def listening(address: str) -> None:
        print(f"ltrr shard {args.strategy} listening on {address}", flush=True)

    return uvloop.run(serve(config, on_listening=listening))


def cmd_retrieve(args: argparse.Namespace) -> int:
    from core.query import Filter
    from services.client import ShardClient

    filters = []
    for spec in args.filter:
        name, _, values = spec.partition("=")
        filters.append(Filter(field=name, values=tuple(values.split("|"))))
    with ShardClient(args.target) as client:
        response = client.retrieve(args.text, args.quota, filters=filters)
    print(f"{response.strategy}: {len(response.candidates)} of {response.total_matches} matches "
          f"in {response.took_ms:.2f} ms")
    for c in response.candidates:
        print(f"{c.rank:4d}  {c.score:9.4f}  {c.entity_id}")
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    from google.protobuf import json_format

    from services.client import ShardClient

    with ShardClient(args.target) as client:
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


POLICY_KEYS = {"budget": int, "exploration_floor": float, "epsilon": float, "ucb_alpha": float, "noise": float,
               "cost_per_candidate": float, "cost_per_ms": float, "propensity_samples": int}


def broker_config(args: argparse.Namespace) -> Any:
    from core.catalog import load_catalog
    from services.broker import BrokerConfig

    settings = _options(args.set, scoped=False)
    policy = PolicyConfig(kind=settings.pop("policy", "thompson"),
                          **{k: POLICY_KEYS[k](settings.pop(k)) for k in list(settings) if k in POLICY_KEYS})
    shards = dict(pair.split("=", 1) for pair in args.shard)
    ranker = settings.pop("ranker", "lambdamart")  # RRF until `ltrr train-ranker` writes the model
    seed = int(settings.pop("seed", 0))
    if settings:
        known = ", ".join(["policy", "ranker", "seed", *POLICY_KEYS])
        raise ValueError(f"unknown --set keys {sorted(settings)}; known: {known}")
    model = Path(args.state) / "ranker.txt"
    return BrokerConfig(shards=shards, state_dir=args.state, entities=tuple(load_catalog(args.catalog)),
                        policy=policy, ranker=ranker, ranker_model=str(model), seed=seed)


def cmd_broker(args: argparse.Namespace) -> int:
    import uvloop

    from services.broker import serve

    config = broker_config(args)

    def listening(address: str) -> None:
        print(f"ltrr broker listening on {address}", flush=True)

    return uvloop.run(serve(config, args.host, args.port, on_listening=listening))


def cmd_up(args: argparse.Namespace) -> int:
    import signal

    from services.cluster import Cluster, ClusterConfig, build_missing

    config = ClusterConfig.from_toml(args.config)
    build_missing(config)
    cluster = Cluster(config)
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    try:
        address = cluster.start(args.port)
        for name, shard in cluster.shards.items():
            print(f"  {name:9s} shard on {shard.address} (pid {shard.process.pid})")
        print(f"ltrr cluster up: broker on {address}; try: ltrr search --target {address} \"dance monkey\"", flush=True)
        if args.examples:
            run_examples(address, config)
        while not stop and not args.once:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
        print("ltrr cluster stopped")
    return 0


def run_examples(address: str, config: Any) -> None:
    from core.catalog import load_catalog
    from services.client import BrokerClient

    names = {e.id: f"{e.fields.get('title')} — {e.fields.get('artist')}" for e in load_catalog(config.catalog_path)}
    with BrokerClient(address) as client:
        for query in DEMO_QUERIES:
            response = client.search(query, k=5, budget_ms=200)
            calls = ", ".join(f"{r.strategy}:{r.quota}" for r in response.strategies if r.quota)
            flag = "; degraded" if response.degraded else ""
            print(f"\n{query!r}  ({response.took_ms:.1f} ms; quotas {calls}{flag})")
            for r in response.results:
                print(f"  {r.rank}. {names.get(r.entity_id, r.entity_id)}  [{', '.join(r.strategies)}]")
            if response.results:
                fb = client.feedback(response.decision_id, response.results[0].entity_id, "click")
                print(f"  clicked #1: reward {fb.reward:.3f}")


def cmd_search(args: argparse.Namespace) -> int:
    from services.client import BrokerClient

    context = _options(args.context, scoped=False)
    with BrokerClient(args.target) as client:
        response = client.search(args.text, k=args.k, budget_ms=args.budget_ms, context=context)
    print(f"decision {response.decision_id}: {len(response.results)} results in {response.took_ms:.1f} ms"
          f"{' (degraded)' if response.degraded else ''}")
    for r in response.strategies:
        print(f"  {r.strategy:9s} quota {r.quota:4d}  returned {r.returned:4d}  status {r.status}  "
              f"{r.latency_ms:6.1f} ms  p={r.propensity:.3f}")
    for r in response.results:
        print(f"{r.rank:4d}  {r.score:8.4f}  {r.entity_id}  [{', '.join(r.strategies)}]")
    return 0


def cmd_feedback(args: argparse.Namespace) -> int:
    from services.client import BrokerClient

    with BrokerClient(args.target) as client:
        response = client.feedback(args.decision_id, args.entity_id, args.type, value=args.value)
    print(f"{'duplicate' if response.duplicate else 'recorded'}; reward {response.reward:.4f}")
    return 0


def cmd_train_ranker(args: argparse.Namespace) -> int:
    from core.catalog import load_catalog
    from core.eventlog import EventLog
    from core.ranking import EntityTable, train_lambdamart

    out = Path(args.out or Path(args.state) / "ranker.txt")
    table = EntityTable.from_entities(load_catalog(args.catalog))
    with EventLog(Path(args.state) / "events.sqlite") as log:
        report = train_lambdamart(log.training_groups(), out, table=table)
    print(f"trained LambdaMART on {report.train_groups} searches ({report.rows} candidates), "
          f"held out {report.valid_groups}: nDCG@10 {report.ndcg_at_10:.4f} (RRF {report.rrf_ndcg_at_10:.4f})")
    print(f"model: {report.model_path} (the broker serves it from its next start)")
    return 0


def cmd_evaluate_policy(args: argparse.Namespace) -> int:
    from core.eventlog import EventLog
    from core.policy.evaluate import evaluate_policy
    from core.policy.features import DIM
    from core.policy.policies import BanditPolicy

    settings = _options(args.set, scoped=False)
    policy_config = PolicyConfig(kind=settings.pop("policy", "thompson"),
                                 **{k: POLICY_KEYS[k](v) for k, v in settings.items() if k in POLICY_KEYS})
    with EventLog(Path(args.state) / "events.sqlite") as log:
        feedback = log.bandit_feedback(policy=args.logged_policy or None)
    policy = BanditPolicy(feedback.strategies, DIM, policy_config)
    if args.policy_state:
        policy.load(args.policy_state)
    estimates = evaluate_policy(feedback, policy, seed=args.seed)
    print(f"{len(feedback.action)} logged decisions; candidate policy {policy_config.kind.value}; "
          f"logged mean reward {feedback.reward.mean():.4f}")
    for name, e in estimates.items():
        print(f"  {name.name:5s} {e.value:.4f}  95% CI [{e.lower:.4f}, {e.upper:.4f}]")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ltrr", description="Learning-to-rank-and-retrieve search cluster.")
    parser.add_argument("--log-level", default="INFO", help="logging level (default: %(default)s)")
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
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("shard", help="serve one strategy of an index over gRPC")
    p.add_argument("strategy", help="lexical, semantic, attribute or memory")
    p.add_argument("--index", required=True, help="index directory built by `ltrr index`")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    p.add_argument("--port", type=int, default=50051, help="port; 0 picks a free one (default: %(default)s)")
    p.add_argument("--max-quota", type=int, default=1000, help="largest accepted quota (default: %(default)s)")
    p.add_argument("--max-query-chars", type=int, default=1024, help="longest accepted query (default: %(default)s)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a run-time strategy option, e.g. k1=1.2 (repeatable)")
    p.add_argument("--threads", type=int, default=1, help="compute threads (numba, torch) (default: %(default)s)")
    p.add_argument("--test-delay-ms", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--noop", action="store_true", help="serve a no-op strategy under this name (benchmark floor)")
    p.set_defaults(func=cmd_shard)

    p = sub.add_parser("retrieve", help="ask a shard for candidates")
    p.add_argument("text")
    p.add_argument("--target", default="127.0.0.1:50051", help="shard address (default: %(default)s)")
    p.add_argument("--quota", type=int, default=10)
    p.add_argument("--filter", action="append", default=[], metavar="FIELD=V1|V2", help="hard filter (repeatable)")
    p.set_defaults(func=cmd_retrieve)

    p = sub.add_parser("describe", help="show what a shard serves")
    p.add_argument("--target", default="127.0.0.1:50051")
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
    p.add_argument("--port", type=int, default=50051, help="shard port (default: %(default)s)")
    p.add_argument("--once", action="store_true", help="stop after the examples instead of serving on")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("broker", help="serve the broker over running shards")
    p.add_argument("--shard", action="append", default=[], required=True, metavar="STRATEGY=HOST:PORT")
    p.add_argument("--state", required=True, help="directory for the event log and the policy snapshot")
    p.add_argument("--catalog", required=True, help="the catalog the shards were built from")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=50050)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="policy (thompson|linucb|epsilon-greedy|static), ranker (rrf|blend|lambdamart), seed, "
                        "budget, exploration_floor, cost_per_candidate, cost_per_ms, ...")
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser("up", help="start a local cluster (every shard + the broker) from one TOML config")
    p.add_argument("--config", help="cluster config (see services/cluster.py; default: the bundled catalog)")
    p.add_argument("--port", type=int, help="broker port (overrides the config)")
    p.add_argument("--examples", action="store_true", help="run example searches with feedback once up")
    p.add_argument("--once", action="store_true", help="stop after start-up (and the examples)")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("search", help="search through the broker")
    p.add_argument("text")
    p.add_argument("--target", default="127.0.0.1:50050")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--budget-ms", type=int, default=100)
    p.add_argument("--context", action="append", default=[], metavar="KEY=VALUE", help="e.g. device=mobile, hour=21")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("feedback", help="report a user action on a search result")
    p.add_argument("decision_id")
    p.add_argument("entity_id")
    p.add_argument("--type", default="click", choices=["click", "play", "like", "favorite", "skip"])
    p.add_argument("--value", type=float, default=0.0)
    p.add_argument("--target", default="127.0.0.1:50050")
    p.set_defaults(func=cmd_feedback)

    p = sub.add_parser("train-ranker", help="train the LambdaMART ranker from the broker's event log")
    p.add_argument("--state", required=True, help="the broker's state directory")
    p.add_argument("--catalog", required=True)
    p.add_argument("--out", help="model file (default: STATE/ranker.txt, where the broker looks)")
    p.set_defaults(func=cmd_train_ranker)

    p = sub.add_parser("evaluate-policy", help="estimate a candidate policy's value from the event log (IPS, "
                       "SNIPS, DR)")
    p.add_argument("--state", required=True, help="the broker's state directory")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="candidate policy settings")
    p.add_argument("--policy-state", help="learned state for the candidate (a policy.npz)")
    p.add_argument("--logged-policy", default="", help="only decisions logged by this policy kind")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_evaluate_policy)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    try:
        return int(args.func(args))
    except (LtrrError, ValueError) as err:  # core validates input with precise ValueErrors
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
