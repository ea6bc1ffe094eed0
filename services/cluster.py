"""A local cluster from one TOML file: every strategy shard and the broker as separate processes.

    ltrr up [--config FILE]

All keys are optional (defaults in parentheses):

    catalog = ""                    # catalog file (the bundled demo music catalog)
    index = "indexes/demo"          # index directory; missing components are built first
    state = "indexes/demo-state"    # broker state: event log, policy snapshot, ranker model
    host = "127.0.0.1"              # where every process binds
    port = 50050                    # broker port; shards take free ports
    metrics_port = "auto"           # Prometheus /metrics of every process: "auto" = each on a free
                                    # port (`ltrr up` prints where), 0 = off, N = broker on N and the
                                    # shards on N+1, N+2, ... in `strategies` order
    log_format = "text"             # every process's logs: text or json (`ltrr --log-format` overrides)
    log_level = "INFO"              # every process's log level (`ltrr --log-level` overrides)
    strategies = ["lexical", "semantic", "attribute", "memory"]

    [build.lexical]                 # `ltrr index` options per strategy
    fields = "title^2,artist^1.5,album^0.5"
    [run.memory]                    # shard run-time options per strategy
    snapshot_every = 1000
    [shards]                        # `ltrr shard` flags for every shard
    max_queue = 4                   # searches queued or running per shard (services/admission.py)
    [broker]                        # policy, ranking and admission
    max_in_flight = 6               # searches in flight at the broker (services/admission.py)
    max_wait_ms = 10                # how long a search may wait for one of them
    lag_target_ms = 5.0             # refuse searches while its event loop runs this late (0 = off)
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
from core.storage import MANIFEST
from services.process import ServerProcess, shard_args, spawn

DEFAULT_STRATEGIES = ("lexical", "semantic", "attribute", "memory")
DEFAULT_BUILD = {"lexical": {"fields": "title^2,artist^1.5,album^0.5"}}
RANKER_FILE = "ranker.txt"
SHARD_KEYS = ("max_queue", "threads")  # the [shards] table's keys: `ltrr shard` flags


@dataclass(frozen=True, kw_only=True)
class ClusterConfig:
    catalog: str = ""
    index: str = "indexes/demo"
    state: str = "indexes/demo-state"
    host: str = "127.0.0.1"
    port: int = 50050
    strategies: tuple[str, ...] = DEFAULT_STRATEGIES
    build: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: DEFAULT_BUILD)
    run: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    broker: Mapping[str, Any] = field(default_factory=dict)
    metrics_port: int | str = "auto"
    log_format: str = "text"
    log_level: str = "INFO"
    shards: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if unknown := sorted(set(self.shards) - set(SHARD_KEYS)):
            raise ValueError(f"`shards` must hold only {list(SHARD_KEYS)}, but got {unknown}")
        port = self.metrics_port
        if port != "auto" and not (isinstance(port, int) and 0 <= port <= 65535 - len(self.strategies)):
            raise ValueError(f"`metrics_port` must be \"auto\" or a port in [0, {65535 - len(self.strategies)}], "
                             f"but got {port!r}")
        if self.log_format not in ("text", "json"):
            raise ValueError(f"`log_format` must be text or json, but got {self.log_format!r}")

    def metrics_ports(self) -> tuple[str, dict[str, str]]:
        """`--metrics-port` of the broker and of each shard (module docstring)."""
        if self.metrics_port == "auto" or self.metrics_port == 0:
            return str(self.metrics_port), {name: str(self.metrics_port) for name in self.strategies}
        base = int(self.metrics_port)
        return str(base), {name: str(base + 1 + i) for i, name in enumerate(self.strategies)}

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
    """Build the index components the cluster needs and does not have yet."""
    missing = [s for s in config.strategies if not (Path(config.index) / s / MANIFEST).exists()]
    if missing or not (Path(config.index) / "collection" / MANIFEST).exists():
        print(f"building {', '.join(missing) or 'collection'} in {config.index} from {config.catalog_path} ...",
              flush=True)
        build_index(load_catalog(config.catalog_path), config.index, missing or ["lexical"], config.build)


def broker_args(config: ClusterConfig, shards: Mapping[str, str], port: int) -> list[str]:
    args = ["broker", "--state", config.state, "--catalog", str(config.catalog_path), "--host", config.host,
            "--port", str(port)]
    for name, address in shards.items():
        args += ["--shard", f"{name}={address}"]
    for key, value in config.broker.items():
        args += ["--set", f"{key}={value}"]
    return args


class Cluster:
    """Shard processes and the broker; stop() ends them in reverse order."""

    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self.shards: dict[str, ServerProcess] = {}
        self.broker: ServerProcess | None = None

    def start(self, broker_port: int | None = None, shard_flags: Sequence[str] = ()) -> str:
        """Start everything and wait until all serve; returns the broker's address.
        shard_flags: extra `ltrr shard` flags for every shard (e.g. --noop)."""
        c = self.config
        logs = ["--log-format", c.log_format, "--log-level", c.log_level]
        broker_metrics, shard_metrics = c.metrics_ports()
        try:
            for name in c.strategies:
                flags = ["--host", c.host, "--metrics-port", shard_metrics[name], *c.shard_flags, *shard_flags]
                self.shards[name] = spawn([*logs, *shard_args(name, c.index, c.run.get(name), flags)])
            port = c.port if broker_port is None else broker_port
            args = broker_args(c, {n: s.address for n, s in self.shards.items()}, port)
            self.broker = spawn([*logs, *args, "--metrics-port", broker_metrics])
        except BaseException:
            self.stop()
            raise
        return self.broker.address

    def stop(self) -> None:
        if self.broker is not None:
            self.broker.stop()
        for shard in reversed(list(self.shards.values())):
            shard.stop()
