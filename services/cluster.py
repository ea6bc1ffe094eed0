"""A local cluster from one TOML file: every strategy shard and the broker as separate processes.

    ltrr up [--config FILE]

All keys are optional (defaults in parentheses):

    catalog = ""                    # catalog file (the bundled demo music catalog)
    index = "indexes/demo"          # index directory; missing components are built first
    state = "indexes/demo-state"    # broker state: event log, policy snapshot, ranker model
    host = "127.0.0.1"              # where every process binds
    port = 7050                     # broker port; shards take free ports
    metrics_port = "auto"           # Prometheus /metrics of every process: "auto" = each on a free
                                    # port (`ltrr up` prints where), 0 = off, N = broker on N and the
                                    # shards on N+1, N+2, ... in `strategies` order
    log_format = "text"             # every process's logs: text or json (`ltrr --log-format` overrides)
    log_level = "INFO"              # every process's log level (`ltrr --log-level` overrides)
    strategies = ["lexical", "semantic", "attribute", "memory"]
    brokers = 1                     # broker processes, on port, port+1, ...; more than 1 needs a shared
                                    # event store ([store] url) so that they learn as one
    partitions = 1                  # partitions of every strategy: documents for lexical, semantic and
                                    # attribute, query keys for memory (`ltrr index --partitions`)
    replicas = 1                    # shard processes serving each partition
    live = true                     # a live catalog: every shard applies the catalog writes of the
                                    # event store (`ltrr catalog upsert/delete`), merging into bases
                                    # under `state`/live. Default: on when partitions = 1; true with
                                    # partitions > 1 serves them live (core.live_partition: costs and
                                    # limits there). false: static shards

    [store]                         # the brokers' event store (decisions, feedback, policy snapshots)
    url = ""                        # "": SQLite in `state` (one broker); "postgres": a private
                                    # PostgreSQL started from the installed server binaries in
                                    # `state`/postgres and stopped with the cluster; any
                                    # postgresql://... URL: that server

    [build.lexical]                 # `ltrr index` options per strategy
    fields = "title^2,artist^1.5,album^0.5"
    [run.memory]                    # shard run-time options per strategy
    snapshot_every = 1000
    [shards]                        # `ltrr shard` flags for every shard
    max_queue = 4                   # searches queued or running per shard (services/admission.py)
    background_nice = 10            # live shards: added to the merge thread's nice value (0: encoding not idle)
    [broker]                        # policy, ranking and admission
    max_in_flight = 8               # searches in flight at the broker (services/admission.py)
    max_wait_ms = 40                # how long a search may wait for one of them
    lag_target_ms = 5.0             # refuse searches while its event loop, or the waits, run this late (0 = off)
    policy = "thompson"             # thompson, linucb, epsilon-greedy, static
    budget = 200                    # candidates per search, all strategies together
    levels = [0, 50, 100, 200]      # the quotas a strategy can be given
    static_quotas = []              # policy "static": one quota per strategy, in order (empty: equal split)
    ranker = "lambdamart"           # served once `ltrr train-ranker` wrote state/ranker.txt; RRF until then
    seed = 0
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.catalog import demo_catalog_path, load_catalog
from core.indexing import build_index
from core.partitioning import build_partitioned, read_partitions
from core.storage import MANIFEST
from services.broker_config import default_store
from services.cli_common import DEFAULT_BROKER_PORT
from services.process import ServerProcess, shard_args, spawn
from services.topology import ShardAddresses, shard_flags

DEFAULT_STRATEGIES = ("lexical", "semantic", "attribute", "memory")
STORE_KEYS = ("url",)  # the [store] table's keys
PRIVATE_POSTGRES = "postgres"  # [store] url that starts a private server
DEFAULT_BUILD = {"lexical": {"fields": "title^2,artist^1.5,album^0.5"}}
RANKER_FILE = "ranker.txt"
# the [shards] table's keys: `ltrr shard` flags
SHARD_KEYS = ("max_queue", "threads", "merge_entities", "background_nice")


@dataclass(frozen=True, kw_only=True)
class ClusterConfig:
    catalog: str = ""
    index: str = "indexes/demo"
    state: str = "indexes/demo-state"
    host: str = "127.0.0.1"
    port: int = DEFAULT_BROKER_PORT
    strategies: tuple[str, ...] = DEFAULT_STRATEGIES
    build: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: DEFAULT_BUILD)
    run: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    broker: Mapping[str, Any] = field(default_factory=dict)
    metrics_port: int | str = "auto"
    log_format: str = "text"
    log_level: str = "INFO"
    shards: Mapping[str, Any] = field(default_factory=dict)
    brokers: int = 1
    partitions: int = 1
    replicas: int = 1
    store: Mapping[str, Any] = field(default_factory=dict)
    live: bool | None = None

    def __post_init__(self) -> None:
        if unknown := sorted(set(self.shards) - set(SHARD_KEYS)):
            raise ValueError(f"`shards` must hold only {list(SHARD_KEYS)}, but got {unknown}")
        if unknown := sorted(set(self.store) - set(STORE_KEYS)):
            raise ValueError(f"`store` must hold only {list(STORE_KEYS)}, but got {unknown}")
        for name in ("brokers", "partitions", "replicas"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 64:
                raise ValueError(f"`{name}` must be an int in [1, 64], but got {value!r}")
        url = self.store_url
        if url and url != PRIVATE_POSTGRES and not url.startswith(("postgresql://", "postgres://")):
            raise ValueError(f"`store.url` must be \"\", \"{PRIVATE_POSTGRES}\" or a postgresql:// URL, but got "
                             f"{url!r}")
        if self.brokers > 1 and not url:
            raise ValueError(f"`brokers` = {self.brokers} needs a shared event store: set [store] url (e.g. "
                             f"\"{PRIVATE_POSTGRES}\"); the default SQLite log serves one broker")
        port, top = self.metrics_port, 65535 - self.processes
        if port != "auto" and not (isinstance(port, int) and 0 <= port <= top):
            raise ValueError(f"`metrics_port` must be \"auto\" or a port in [0, {top}], but got {port!r}")
        if self.live is not None and not isinstance(self.live, bool):
            raise ValueError(f"`live` must be true or false, but got {self.live!r}")
        if self.log_format not in ("text", "json"):
            raise ValueError(f"`log_format` must be text or json, but got {self.log_format!r}")

    @property
    def store_url(self) -> str:
        return str(self.store.get("url", ""))

    @property
    def processes(self) -> int:
        """Server processes: brokers, then every replica of every partition of every strategy."""
        return self.brokers + len(self.strategies) * self.partitions * self.replicas

    def placements(self) -> list[tuple[str, int, int]]:
        """(strategy, partition, replica) of every shard process, in start order."""
        return [(name, p, r) for name in self.strategies for p in range(self.partitions) for r in range(self.replicas)]

    def metrics_ports(self) -> tuple[list[str], list[str]]:
        """`--metrics-port` of each broker and of each shard in placements() order (module docstring:
        a number N gives the brokers N, N+1, ... and the shards the ports after them)."""
        shards = len(self.placements())
        if self.metrics_port == "auto" or self.metrics_port == 0:
            return [str(self.metrics_port)] * self.brokers, [str(self.metrics_port)] * shards
        base = int(self.metrics_port)
        return ([str(base + i) for i in range(self.brokers)],
                [str(base + self.brokers + j) for j in range(shards)])

    def shard_index(self, name: str, partition: int) -> Path:
        """The index directory a shard of `name` serves for `partition` (core.partitioning layout)."""
        root = Path(self.index)
        if self.partitions == 1:
            return root
        return root / (f"memory-{partition}" if name == "memory" else f"part-{partition}")

    def shard_run_options(self, name: str, partition: int, replica: int) -> dict[str, Any]:
        """[run.NAME] options of one shard process; every memory replica keeps its own feedback state."""
        options = dict(self.run.get(name) or {})
        if name == "memory" and (self.partitions > 1 or self.replicas > 1):
            base = Path(options.get("state_dir") or Path(self.state) / "memory")
            options["state_dir"] = str(base / f"p{partition}-r{replica}")
        return options

    @property
    def serves_live(self) -> bool:
        return self.partitions == 1 if self.live is None else self.live

    def live_flags(self, name: str, partition: int, replica: int, store_url: str) -> list[str]:
        """`ltrr shard` flags of a live catalog (none when `live` is off): the catalog log's store, the
        catalog the index was built from and the replica's own directory for merged bases."""
        if not self.serves_live:
            return []
        live_dir = Path(self.state) / "live" / (f"{name}-r{replica}" if self.partitions == 1 else
                                                f"{name}-p{partition}-r{replica}")
        return ["--store", store_url, "--catalog", str(self.catalog_path), "--live-dir", str(live_dir)]

    @property
    def shard_flags(self) -> list[str]:
        """The [shards] table as `ltrr shard` flags (max_queue = 4 -> --max-queue 4)."""
        return [f for key, value in self.shards.items() for f in (f"--{key.replace('_', '-')}", str(value))]

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str] | None) -> ClusterConfig:
        if path is None:
            return cls()
        try:
            raw = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise ValueError(f"{path}: cannot read the cluster config ({err})") from None
        known = set(cls.__dataclass_fields__)
        if unknown := sorted(set(raw) - known):
            raise ValueError(f"{path}: unknown keys {unknown}; known: {sorted(known)}")
        if "strategies" in raw:
            raw["strategies"] = tuple(raw["strategies"])
        if "build" in raw:
            raw["build"] = {**DEFAULT_BUILD, **raw["build"]}
        return cls(**raw)

    @property
    def catalog_path(self) -> Path:
        return Path(self.catalog) if self.catalog else demo_catalog_path()


def build_missing(config: ClusterConfig) -> None:
    """Build the index the cluster needs when it lacks a component (`partitions` > 1: the whole
    partitioned index, when it lacks partitions.json or a strategy; a directory partitioned another
    way is an error naming it)."""
    if config.partitions > 1:
        _build_partitioned(config)
        return
    missing = [s for s in config.strategies if not (Path(config.index) / s / MANIFEST).exists()]
    if missing or not (Path(config.index) / "collection" / MANIFEST).exists():
        print(f"building {', '.join(missing) or 'collection'} in {config.index} from {config.catalog_path} ...",
              flush=True)
        build_index(load_catalog(config.catalog_path), config.index, missing or ["lexical"], config.build)


def _build_partitioned(config: ClusterConfig) -> None:
    layout = read_partitions(config.index)
    if layout is not None and layout.partitions != config.partitions:
        raise ValueError(f"{config.index} holds {layout.partitions} partitions but the config asks for "
                         f"{config.partitions}: point `index` at another directory")
    if layout is not None and set(config.strategies) <= set(layout.strategies):
        return
    print(f"building {config.partitions} partitions of {', '.join(config.strategies)} in {config.index} from "
          f"{config.catalog_path} ...", flush=True)
    build_partitioned(load_catalog(config.catalog_path), config.index, config.strategies, config.build,
                      partitions=config.partitions)


def broker_args(config: ClusterConfig, shards: ShardAddresses, port: int, store_url: str = "") -> list[str]:
    args = ["broker", "--state", config.state, "--catalog", str(config.catalog_path), "--host", config.host,
            "--port", str(port), *shard_flags(shards)]
    if store_url:
        args += ["--store", store_url]
    for key, value in config.broker.items():
        args += ["--set", f"{key}={value}"]
    return args


@dataclass(frozen=True)
class Placed:
    """One shard process and where it sits: strategy, partition, replica."""

    strategy: str
    partition: int
    replica: int
    server: ServerProcess


class Cluster:
    """Shard processes, the brokers and (with [store] url = "postgres") a private PostgreSQL;
    stop() ends them in reverse order."""

    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self.placed: list[Placed] = []
        self.brokers: list[ServerProcess] = []
        self.store_url = config.store_url
        self.postgres: Any = None

    @property
    def shards(self) -> dict[str, ServerProcess]:
        """Per strategy, the first replica of its partition 0."""
        return {p.strategy: p.server for p in self.placed if p.partition == 0 and p.replica == 0}

    @property
    def broker(self) -> ServerProcess | None:
        return self.brokers[0] if self.brokers else None

    def topology(self) -> dict[str, list[list[str]]]:
        """strategy -> partitions -> replica addresses of the running shards."""
        out: dict[str, list[list[str]]] = {}
        for p in self.placed:
            parts = out.setdefault(p.strategy, [])
            while len(parts) <= p.partition:
                parts.append([])
            parts[p.partition].append(p.server.address)
        return out

    def start(self, broker_port: int | None = None, shard_flags: Sequence[str] = ()) -> str:
        """Start everything and wait until all serve; returns the first broker's address.
        shard_flags: extra `ltrr shard` flags for every shard (e.g. --noop)."""
        c = self.config
        logs = ["--log-format", c.log_format, "--log-level", c.log_level]
        broker_metrics, shard_metrics = c.metrics_ports()
        try:
            self._start_store()
            store = self._create_store()
            for (name, p, r), metrics_port in zip(c.placements(), shard_metrics, strict=True):
                flags = ["--host", c.host, "--metrics-port", metrics_port, *c.shard_flags, *shard_flags,
                         *c.live_flags(name, p, r, store)]
                args = shard_args(name, c.shard_index(name, p), c.shard_run_options(name, p, r), flags)
                self.placed.append(Placed(name, p, r, spawn([*logs, *args])))
            first = c.port if broker_port is None else broker_port
            shards: ShardAddresses = {n: parts[0][0] if c.partitions == c.replicas == 1 else parts
                                for n, parts in self.topology().items()}
            for i, metrics_port in enumerate(broker_metrics):
                args = broker_args(c, shards, first + i if first else 0, self.store_url)
                self.brokers.append(spawn([*logs, *args, "--metrics-port", metrics_port]))
        except BaseException:
            self.stop()
            raise
        return self.brokers[0].address

    def _start_store(self) -> None:
        """A private PostgreSQL in `state`/postgres when [store] url asks for one."""
        if self.config.store_url != PRIVATE_POSTGRES:
            return
        from services.postgres import PostgresServer

        self.postgres = PostgresServer(Path(self.config.state) / "postgres", host=self.config.host)
        self.postgres.start()
        self.store_url = self.postgres.url

    def _create_store(self) -> str:
        """The event store's URL, its schema created (the shards read its catalog log before the
        broker, which otherwise creates it, has started)."""
        from core.eventstore import open_store

        url = default_store(self.store_url, Path(self.config.state).resolve())
        Path(self.config.state).mkdir(parents=True, exist_ok=True)
        open_store(url).close()
        return url

    def status(self) -> dict[str, Any]:
        """What `ltrr up --status-json` writes: every broker, every shard and the store."""
        return {"brokers": [{"address": b.address, "pid": b.process.pid} for b in self.brokers],
                "shards": [{"strategy": p.strategy, "partition": p.partition, "replica": p.replica,
                            "address": p.server.address, "pid": p.server.process.pid} for p in self.placed],
                "store": {"url": self.store_url or f"sqlite:///{default_store('', Path(self.config.state).resolve())}"}}

    def stop(self) -> None:
        for broker in reversed(self.brokers):
            broker.stop()
        for placed in reversed(self.placed):
            placed.server.stop()
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None
