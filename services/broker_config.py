"""The broker's configuration (services.broker serves it; services.cli_broker reads it from flags)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from core.catalog import Entity
from core.eventlog import RetentionConfig
from core.eventstore import parse_store_url
from core.partitions import DEFAULT_TOPK_PROBABILITY
from core.policy.policies import PolicyConfig
from core.policy.warmstart import WarmStartConfig
from core.query import Limits
from core.types import StrategyKind
from services.admission import DEFAULT_BROKER_MAX_IN_FLIGHT, DEFAULT_BROKER_MAX_WAIT_MS, DEFAULT_LAG_TARGET_MS
from services.decisions import WriterConfig
from services.learning import DEFAULT_TAIL_INTERVAL_S
from services.outbox import OutboxConfig
from services.replicas import ReplicaConfig
from services.security import NO_SECURITY, SecurityConfig
from services.topology import Topology, normalise_shards

# A decision record is ~20 KB at 200 candidates (core.pipeline.decision_bytes): 256 MiB keeps the
# last ~13,000 searches (~100 s at 128 searches/s, where most feedback arrives) in memory; older
# ones are read back from the event log. The whole broker stays well under its 2 GiB pod limit.
DEFAULT_RECENT_BYTES = 256 * 2**20
# How far the broker's cached query understanding may lag a live catalog (services.broker): the
# readings feed only the policy's features (which strategies to ask, how many candidates), never
# what a strategy retrieves, and the policy itself learns over minutes of feedback; clearing the
# cache on every catalog write instead made every search under a write stream ask the attribute
# shard first (the demo stream repeats 21% of its texts within 5 s, 28% within 10 s).
DEFAULT_UNDERSTOOD_STALE_MS = 10_000
EVENTS_FILE = "events.sqlite"


def default_store(store: str, state_dir: str | Path) -> str:
    """The event store's URL: `store`, or the SQLite file in `state_dir` ("" = the default)."""
    return store or str(Path(state_dir) / EVENTS_FILE)



@dataclass(frozen=True, kw_only=True)
class BrokerConfig:
    """shards: strategy name -> its shard's address, or its partitions' replica addresses
    (partitions -> replicas; services.topology; any subset of the strategies); replicas: balancing,
    failover and hedging among a partition's replicas (services.replicas); topk_probability: how
    much each document partition is asked for (core.partitions.partition_quota); state_dir: event log
    and policy snapshot; entities: the catalog (ranking features, entity-id checks); reserve_ms: part
    of the budget kept for merge and ranking; understand_fraction: share of the budget the query
    understanding call may take before allocation; save_every: policy snapshot every N updates;
    recent_bytes: the recent-decision cache's bound (DEFAULT_RECENT_BYTES); understood_stale_ms:
    how old a cached query understanding may be once the live catalog has changed since it was read
    (DEFAULT_UNDERSTOOD_STALE_MS; 0 = never used after a change); retention: the event
    log's (core.eventlog.RetentionConfig); writer: decision group commit and retries; outbox: the
    memory shard's; warm_start: the event log of the plan this broker replaces ("" = none), which
    the policy learns from once, before it serves (core.warmstart), weighted as warm_start_config says;
    max_in_flight: searches served at once, beyond which they are refused (0 = unbounded;
    services.admission.DEFAULT_BROKER_MAX_IN_FLIGHT); max_wait_ms: how long a search may wait for
    one of them before it is refused (part of its budget); lag_target_ms: new searches are refused while
    the event loop has run callbacks later than this for 100 ms (services.admission.LoopLag), and a
    search finding every place taken is refused at once while the waits for one have stood above it
    for 100 ms (services.admission.StandingDelay; 0 = both off);
    security: TLS and the write token, both towards clients and towards the shards (services.security);
    store: the event store's URL (core.eventstore: a SQLite path or sqlite:///, or postgresql://
    shared by several brokers; "" = state_dir/events.sqlite); tail_interval_s: how often the
    broker applies feedback other brokers stored (services.learning)."""

    shards: Mapping[str, str | Sequence[Sequence[str]]]
    state_dir: str
    replicas: ReplicaConfig = field(default_factory=ReplicaConfig)
    topk_probability: float = DEFAULT_TOPK_PROBABILITY
    entities: tuple[Entity, ...] = ()
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    ranker: str = "lambdamart"
    ranker_model: str | None = None
    reserve_ms: float = 3.0
    understand_fraction: float = 0.2
    save_every: int = 200
    seed: int = 0
    limits: Limits = field(default_factory=Limits)
    recent_bytes: int = DEFAULT_RECENT_BYTES
    understood_stale_ms: float = DEFAULT_UNDERSTOOD_STALE_MS
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    writer: WriterConfig = field(default_factory=WriterConfig)
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    warm_start: str = ""
    warm_start_config: WarmStartConfig = field(default_factory=WarmStartConfig)
    max_in_flight: int = DEFAULT_BROKER_MAX_IN_FLIGHT
    max_wait_ms: float = DEFAULT_BROKER_MAX_WAIT_MS
    lag_target_ms: float = DEFAULT_LAG_TARGET_MS
    security: SecurityConfig = NO_SECURITY
    store: str = ""
    tail_interval_s: float = DEFAULT_TAIL_INTERVAL_S

    def __post_init__(self) -> None:
        order = [k.value for k in StrategyKind]
        unknown = [s for s in self.shards if s not in order]
        if unknown or not self.shards:
            raise ValueError(f"`shards` must name some of {order}, but got {list(self.shards)}")
        topology = normalise_shards(self.shards)
        object.__setattr__(self, "shards", {s: topology[s] for s in order if s in topology})
        if not 0.5 <= self.topk_probability <= 1:
            raise ValueError(f"`topk_probability` must be in [0.5, 1], but got {self.topk_probability}")
        if not 0 <= self.understand_fraction < 1 or self.reserve_ms < 0 or self.save_every < 1:
            raise ValueError("`understand_fraction` must be in [0, 1), `reserve_ms` >= 0, `save_every` >= 1")
        if self.recent_bytes < 0:
            raise ValueError(f"`recent_bytes` must be >= 0, but got {self.recent_bytes}")
        if not self.understood_stale_ms >= 0:
            raise ValueError(f"`understood_stale_ms` must be >= 0, but got {self.understood_stale_ms}")
        if self.max_in_flight < 0:
            raise ValueError(f"`max_in_flight` must be >= 0 (0 = unbounded), but got {self.max_in_flight}")
        if self.max_wait_ms < 0:
            raise ValueError(f"`max_wait_ms` must be >= 0, but got {self.max_wait_ms}")
        if self.lag_target_ms < 0:
            raise ValueError(f"`lag_target_ms` must be >= 0 (0 = off), but got {self.lag_target_ms}")
        if not self.tail_interval_s > 0:
            raise ValueError(f"`tail_interval_s` must be > 0, but got {self.tail_interval_s}")
        if self.store:
            parse_store_url(self.store)  # ValueError naming `url` for another scheme

    @property
    def store_url(self) -> str:
        """The event store's URL: `store`, or the SQLite file in state_dir."""
        return default_store(self.store, self.state_dir)

    @property
    def strategies(self) -> tuple[str, ...]:
        return tuple(self.shards)

    @property
    def topology(self) -> Topology:
        """strategy -> partitions -> replica addresses (`shards`, normalised)."""
        return cast(Topology, dict(self.shards))  # __post_init__ normalised every value
