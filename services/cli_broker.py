"""The `ltrr` commands of the cluster: broker, up, search, feedback, train-ranker, evaluate-policy."""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import time
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.policy.policies import PolicyConfig
from core.storage import write_file_atomic
from services.cli_common import (
    DEFAULT_BROKER_PORT,
    DEMO_QUERIES,
    add_security_flags,
    parse_options,
    security_from_args,
)
from services.metrics import port_arg


def name_tuple(text: str) -> tuple[str, ...]:
    """A list of names, "hour_sin,weekend" or a TOML array's text "['hour_sin', 'weekend']", as a
    tuple; "" or "[]" is the empty tuple."""
    return tuple(v.strip(" '\"") for v in text.strip("[]() ").split(",") if v.strip(" '\""))


def int_tuple(text: str) -> tuple[int, ...]:
    """A list of integers, "0,10,25" or a TOML array's text "[0, 10, 25]", as a tuple."""
    return tuple(int(v) for v in name_tuple(text))


def switch(text: str) -> bool:
    """"true"/"on"/"1" or "false"/"off"/"0" (any case) as a bool; ValueError otherwise."""
    value = {"true": True, "on": True, "1": True, "false": False, "off": False, "0": False}.get(text.strip().lower())
    if value is None:
        raise ValueError(f"must be true or false, but got {text!r}")
    return value


# the broker's own `--set` keys, beside the policy's: services.broker.BrokerConfig, the event
# log's retention (core.eventlog.RetentionConfig) and the replicas' (services.replicas.ReplicaConfig),
# with their parsers
REPLICA_KEYS: dict[str, Callable[[str], Any]] = {
    "failover": switch, "hedging": switch, "hedge_percentile": float, "hedge_min_delay_ms": float,
    "hedge_min_samples": int}
BROKER_KEYS: dict[str, Callable[[str], Any]] = {
    "ranker": str, "seed": int, "recent_bytes": int, "understood_stale_ms": float, "keep_lists_s": float,
    "max_age_s": float, "max_bytes": int,
    "max_in_flight": int, "max_wait_ms": float, "lag_target_ms": float, "topk_probability": float, **REPLICA_KEYS}
POLICY_KIND_KEY = "policy"  # `--set policy=...` sets PolicyConfig.kind: the key of cluster configs and scripts


@dataclass(frozen=True)
class PolicyKey:
    """How one `--set` key reaches PolicyConfig: the field it sets, the parser of its text (a
    ValueError for bad text) and what the text must be, for the error message."""

    field: str
    parse: Callable[[str], Any]
    expects: str


def _policy_key(name: str, kind: Any) -> PolicyKey:
    """The PolicyKey of field `name` of type `kind` (ints, floats, enums, tuples of ints or names)."""
    if kind is int:
        return PolicyKey(name, int, "an integer")
    if kind is float:
        return PolicyKey(name, float, "a number")
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return PolicyKey(name, kind, f"one of {', '.join(str(m.value) for m in kind)}")
    if kind == tuple[int, ...]:
        return PolicyKey(name, int_tuple, "a list of integers (0,50,100 or [0, 50, 100])")
    if kind == tuple[str, ...]:
        return PolicyKey(name, name_tuple, "a list of names (a,b or ['a', 'b'])")
    raise TypeError(f"PolicyConfig.{name} has type {kind}, which `--set` cannot parse: add it to _policy_key")


def _policy_keys() -> dict[str, PolicyKey]:
    """`--set` key -> PolicyKey for every PolicyConfig field, in field order, from the dataclass."""
    hints = typing.get_type_hints(PolicyConfig)
    return {POLICY_KIND_KEY if f.name == "kind" else f.name: _policy_key(f.name, hints[f.name])
            for f in dataclasses.fields(PolicyConfig)}


POLICY_KEYS = _policy_keys()


def policy_config_from_settings(settings: dict[str, str], *, other_keys: Sequence[str] = ()) -> PolicyConfig:
    """The PolicyConfig that `--set` pairs (parse_options(..., scoped=False)) describe, PolicyConfig's
    defaults for the keys not given. Pops every policy key from `settings`, leaving only the
    command's own `other_keys`. ValueError for any other key (one message for every command, listing
    the known keys), for text a key cannot parse, or a config PolicyConfig rejects."""
    unknown = sorted(k for k in settings if k not in POLICY_KEYS and k not in other_keys)
    if unknown:
        raise ValueError(f"unknown --set keys {unknown}; known: {', '.join([*POLICY_KEYS, *other_keys])}")
    values = {}
    for key in [k for k in settings if k in POLICY_KEYS]:
        spec, text = POLICY_KEYS[key], settings.pop(key)
        try:
            values[spec.field] = spec.parse(text)
        except ValueError:
            raise ValueError(f"`--set {key}` must be {spec.expects}, but got {text!r}") from None
    return PolicyConfig(**values)


def policy_settings(config: PolicyConfig) -> dict[str, str]:
    """`--set` text of every PolicyConfig field, which policy_config_from_settings reads back as `config`."""
    out = {}
    for key, spec in POLICY_KEYS.items():
        value = getattr(config, spec.field)
        out[key] = (",".join(str(v) for v in value) if isinstance(value, tuple)
                    else str(value.value) if isinstance(value, enum.Enum) else str(value))
    return out


def broker_config(args: argparse.Namespace) -> Any:
    from core.catalog import load_catalog
    from core.eventlog import RetentionConfig
    from core.partitions import DEFAULT_TOPK_PROBABILITY
    from services.admission import DEFAULT_BROKER_MAX_IN_FLIGHT, DEFAULT_BROKER_MAX_WAIT_MS, DEFAULT_LAG_TARGET_MS
    from services.broker_config import DEFAULT_RECENT_BYTES, DEFAULT_UNDERSTOOD_STALE_MS, BrokerConfig
    from services.replicas import ReplicaConfig
    from services.topology import parse_shard_flags

    settings = parse_options(args.set, scoped=False)
    policy = policy_config_from_settings(settings, other_keys=tuple(BROKER_KEYS))
    try:
        own = {k: BROKER_KEYS[k](v) for k, v in settings.items()}
    except ValueError as e:
        raise ValueError(f"--set: {e}") from None
    shards = parse_shard_flags(args.shard)
    replicas = ReplicaConfig(**{k: own.pop(k) for k in REPLICA_KEYS if k in own})
    retention = RetentionConfig(**{k: own.pop(k) for k in ("keep_lists_s", "max_age_s", "max_bytes") if k in own})
    model = Path(args.state) / "ranker.txt"
    return BrokerConfig(shards=shards, replicas=replicas, state_dir=args.state,
                        topk_probability=own.get("topk_probability", DEFAULT_TOPK_PROBABILITY),
                        entities=tuple(load_catalog(args.catalog)),
                        policy=policy, ranker=own.get("ranker", "lambdamart"),  # RRF until train-ranker writes it
                        ranker_model=str(model), seed=own.get("seed", 0),
                        recent_bytes=own.get("recent_bytes", DEFAULT_RECENT_BYTES), retention=retention,
                        understood_stale_ms=own.get("understood_stale_ms", DEFAULT_UNDERSTOOD_STALE_MS),
                        max_in_flight=own.get("max_in_flight", DEFAULT_BROKER_MAX_IN_FLIGHT),
                        lag_target_ms=own.get("lag_target_ms", DEFAULT_LAG_TARGET_MS),
                        max_wait_ms=own.get("max_wait_ms", DEFAULT_BROKER_MAX_WAIT_MS),
                        # getattr: callers that build the namespace by hand may leave the optional flags out
                        warm_start=getattr(args, "warm_start", None) or "", store=getattr(args, "store", None) or "",
                        security=security_from_args(args))


def cmd_broker(args: argparse.Namespace) -> int:
    import uvloop

    from services.broker import serve

    config = broker_config(args)

    def listening(address: str) -> None:
        print(f"ltrr broker listening on {address}", flush=True)

    return uvloop.run(serve(config, args.host, args.port, on_listening=listening, metrics_port=args.metrics_port,
                            health_port=args.health_port))


def cmd_up(args: argparse.Namespace) -> int:
    import signal

    from services.cluster import Cluster, ClusterConfig, build_missing

    config = ClusterConfig.from_toml(args.config)
    given = {k: v for k, v in (("log_format", args.log_format), ("log_level", args.log_level)) if v}
    config = dataclasses.replace(config, **given)
    build_missing(config)
    cluster = Cluster(config)
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    try:
        address = cluster.start(args.port)
        for placed in cluster.placed:
            where = f"/{placed.partition} replica {placed.replica}" if config.partitions * config.replicas > 1 else ""
            shard, name = placed.server, placed.strategy + where
            print(f"  {name:9s} shard on {shard.address} (pid {shard.process.pid}){_metrics_at(shard)}")
        for broker in cluster.brokers:
            print(f"  broker          on {broker.address} (pid {broker.process.pid}){_metrics_at(broker)}")
        if cluster.postgres is not None:
            print(f"  event store     {cluster.store_url}")
        if args.status_json:
            write_file_atomic(Path(args.status_json), json.dumps(cluster.status(), indent=2).encode())
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


def _metrics_at(server: Any) -> str:
    return f"; metrics http://{server.metrics_address}/metrics" if server.metrics_address else ""


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

    context = parse_options(args.context, scoped=False)
    with BrokerClient(args.target, security=security_from_args(args)) as client:
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

    with BrokerClient(args.target, security=security_from_args(args)) as client:
        response = client.feedback(args.decision_id, args.entity_id, args.type, value=args.value)
    print(f"{'duplicate' if response.duplicate else 'recorded'}; reward {response.reward:.4f}")
    return 0


def _open_store(args: argparse.Namespace) -> Any:
    """The event store of --store, else STATE/events.sqlite (core.eventstore)."""
    from core.eventstore import open_store
    from services.broker_config import default_store

    return open_store(default_store(getattr(args, "store", None) or "", args.state))


def cmd_train_ranker(args: argparse.Namespace) -> int:
    from core.catalog import load_catalog
    from core.ranking import EntityTable
    from core.ranking_train import train_lambdamart

    out = Path(args.out or Path(args.state) / "ranker.txt")
    table = EntityTable.from_entities(load_catalog(args.catalog))
    log = _open_store(args)
    try:
        report = train_lambdamart(log.training_groups(), out, table=table)
    finally:
        log.close()
    print(f"trained LambdaMART on {report.train_groups} searches ({report.rows} candidates), "
          f"held out {report.valid_groups}: nDCG@10 {report.ndcg_at_10:.4f} (RRF {report.rrf_ndcg_at_10:.4f})")
    print(f"model: {report.model_path} (the broker serves it from its next start)")
    return 0


def cmd_evaluate_policy(args: argparse.Namespace) -> int:
    from core.policy.evaluate import evaluate_policy
    from core.policy.features import DIM
    from core.policy.policies import BanditPolicy

    policy_config = policy_config_from_settings(parse_options(args.set, scoped=False))
    log = _open_store(args)
    try:
        feedback = log.bandit_feedback(policy=args.logged_policy or None)
    finally:
        log.close()
    policy = BanditPolicy(feedback.strategies, DIM, policy_config)
    if args.policy_state:
        policy.load(args.policy_state)
    estimates = evaluate_policy(feedback, policy, seed=args.seed)
    print(f"{len(feedback.action)} logged decisions; candidate policy {policy_config.kind.value}; "
          f"logged mean reward {feedback.reward.mean():.4f}")
    for name, e in estimates.items():
        print(f"  {name.name:5s} {e.value:.4f}  95% CI [{e.lower:.4f}, {e.upper:.4f}]")
    return 0


def add_broker_commands(sub: Any) -> None:
    """Register the cluster commands on the `ltrr` sub-command parser."""
    store_help = ("the event store: a SQLite file (path or sqlite:///path) or postgresql://user@host:port/db, "
                  "shared by every broker of a cluster (default: STATE/events.sqlite)")
    p = sub.add_parser("broker", help="serve the broker over running shards")
    p.add_argument("--shard", action="append", default=[], required=True,
                   metavar="STRATEGY[/PARTITION]=HOST:PORT[,HOST:PORT...]",
                   help="a strategy's shard; repeated. With partitions, one flag per partition (0..P-1, no gaps; "
                        "no /PARTITION = 0), its replicas as a comma list (services/topology.py)")
    p.add_argument("--state", required=True, help="directory for the event log and the policy snapshot")
    p.add_argument("--store", metavar="URL", help=store_help)
    p.add_argument("--catalog", required=True, help="the catalog the shards were built from")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=DEFAULT_BROKER_PORT)
    p.add_argument("--metrics-port", type=port_arg, default=0, metavar="PORT|auto",
                   help="serve Prometheus metrics over HTTP on --host at this port (0: off; auto: a free port, "
                        "printed as 'metrics on HOST:PORT') (default: off)")
    p.add_argument("--warm-start", metavar="EVENTS_SQLITE",
                   help="the event log of the plan this broker replaces (its STATE/events.sqlite): the policy "
                        "learns from it once, before serving (core/warmstart.py); a restart with the same flag "
                        "does not learn it again")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="ranker (rrf|blend|lambdamart), seed, recent_bytes (the recent-decision cache's bound), "
                        "understood_stale_ms (how old a cached query understanding may be once the live "
                        "catalog changed; it feeds only the policy's features), "
                        "max_in_flight (searches served at once; beyond it RESOURCE_EXHAUSTED after max_wait_ms; 0 = "
                        "unbounded; services/admission.py), max_wait_ms (how long a search waits for one "
                        "of them), lag_target_ms (refuse new searches while the event "
                        "loop, or the waits for a place, run this late for 100 ms; 0 = off), "
                        "topk_probability (how much each document partition is asked for; core/partitions.py), "
                        "failover, hedging (true|false), hedge_percentile, hedge_min_delay_ms, hedge_min_samples "
                        "(a partition's replicas; services/replicas.py), "
                        "the event log's retention keep_lists_s, max_age_s, max_bytes (core.eventlog.RetentionConfig), "
                        "and the policy's (PolicyConfig in "
                        f"core/policy/policies.py; policy= is its kind): {', '.join(POLICY_KEYS)}. E.g. "
                        "levels=0,50,100,200, static_quotas (one per --shard, in strategy order), "
                        "ignored_features= (empty: the policy sees every feature)")
    add_security_flags(p, server=True)
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser("up", help="start a local cluster (every shard + the broker) from one TOML config")
    p.add_argument("--config", help="cluster config (see services/cluster.py; default: the bundled catalog)")
    p.add_argument("--status-json", metavar="FILE", help="once every process is SERVING, write its brokers, shards "
                   "(strategy, partition, replica, address, pid) and event store URL to FILE as JSON")
    p.add_argument("--port", type=int, help="broker port (overrides the config)")
    p.add_argument("--examples", action="store_true", help="run example searches with feedback once up")
    p.add_argument("--once", action="store_true", help="stop after start-up (and the examples)")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("search", help="search through the broker")
    p.add_argument("text")
    p.add_argument("--target", default=f"127.0.0.1:{DEFAULT_BROKER_PORT}")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--budget-ms", type=int, default=100)
    p.add_argument("--context", action="append", default=[], metavar="KEY=VALUE", help="e.g. device=mobile, hour=21")
    add_security_flags(p, server=False)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("feedback", help="report a user action on a search result")
    p.add_argument("decision_id")
    p.add_argument("entity_id")
    p.add_argument("--type", default="click", choices=["click", "play", "like", "favorite", "skip", "reformulate"])
    p.add_argument("--value", type=float, default=0.0)
    p.add_argument("--target", default=f"127.0.0.1:{DEFAULT_BROKER_PORT}")
    add_security_flags(p, server=False)
    p.set_defaults(func=cmd_feedback)

    p = sub.add_parser("train-ranker", help="train the LambdaMART ranker from the broker's event log")
    p.add_argument("--state", required=True, help="the broker's state directory")
    p.add_argument("--store", metavar="URL", help=store_help)
    p.add_argument("--catalog", required=True)
    p.add_argument("--out", help="model file (default: STATE/ranker.txt, where the broker looks)")
    p.set_defaults(func=cmd_train_ranker)

    p = sub.add_parser("evaluate-policy", help="estimate a candidate policy's value from the event log (IPS, "
                       "SNIPS, DR)")
    p.add_argument("--state", required=True, help="the broker's state directory")
    p.add_argument("--store", metavar="URL", help=store_help)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help=f"candidate policy settings (as `ltrr broker`'s): {', '.join(POLICY_KEYS)}")
    p.add_argument("--policy-state", help="learned state for the candidate (a policy.npz)")
    p.add_argument("--logged-policy", default="", help="only decisions logged by this policy kind")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_evaluate_policy)
