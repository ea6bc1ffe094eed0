"""The broker's topology: strategy -> partitions -> replica addresses.

Every strategy is served by P >= 1 partitions (core.partitions), each by R >= 1 replicas (shard
processes over the same index part; any one can answer). memory is partitioned by query key (only
the partition owning the query is asked); the others by documents (every partition is asked).

A topology is a dict strategy -> tuple of partitions, each a tuple of "host:port" replica
addresses: {"lexical": (("10.0.0.1:7001", "10.0.0.2:7001"), ("10.0.0.3:7001",))} is lexical in two
partitions, the first with two replicas. On the command line, `--shard STRATEGY[/PARTITION]=ADDR[,ADDR...]`,
repeated (no /PARTITION: partition 0).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from core.types import StrategyKind
from ltrr.v1 import broker_pb2

__all__ = [
    "DOCUMENTS",
    "QUERIES",
    "ShardAddresses",
    "Topology",
    "describe_topology",
    "normalise_shards",
    "parse_shard_flags",
    "partitioned_by",
    "shard_flags",
]

Topology = dict[str, tuple[tuple[str, ...], ...]]
# as given: per strategy one address, or per partition its replicas' addresses
ShardAddresses = Mapping[str, str | Sequence[Sequence[str]]]
DOCUMENTS, QUERIES = "documents", "queries"  # BrokerDescribeResponse's StrategyTopology.partitioned_by


def partitioned_by(strategy: str) -> str:
    """QUERIES for memory (split by query key: ask the owner), DOCUMENTS for every other strategy."""
    return QUERIES if strategy == StrategyKind.MEMORY.value else DOCUMENTS


def _replicas(strategy: str, partition: int, addresses: Iterable[str]) -> tuple[str, ...]:
    out = tuple(a.strip() for a in addresses)
    if not out or any(not a for a in out):
        raise ValueError(f"`shards` must give every partition one or more non-empty replica addresses, but got "
                         f"{list(out)} for {strategy} partition {partition}")
    if len(set(out)) != len(out):
        raise ValueError(f"`shards` must not repeat a replica address, but got {list(out)} for {strategy} "
                         f"partition {partition}")
    return out


def normalise_shards(shards: ShardAddresses) -> Topology:
    """Each strategy's value, a plain address (one partition, one replica) or partitions -> replica
    addresses, as a tuple of tuples. ValueError naming the strategy for an empty partition list, an
    empty or repeated address, or a string where a partition's replica list belongs."""
    out: Topology = {}
    for strategy, value in shards.items():
        if isinstance(value, str):
            out[strategy] = (_replicas(strategy, 0, [value]),)
            continue
        if not value:
            raise ValueError(f"`shards` must give {strategy} one or more partitions, but got {value!r}")
        parts = []
        for p, replicas in enumerate(value):
            if isinstance(replicas, str):
                raise ValueError(f"`shards` must give {strategy} partition {p} a sequence of replica addresses, "
                                 f"but got the string {replicas!r}")
            parts.append(_replicas(strategy, p, replicas))
        out[strategy] = tuple(parts)
    return out


def shard_flags(shards: ShardAddresses) -> list[str]:
    """`--shard` flags of a topology (the inverse of parse_shard_flags): per strategy one address,
    or per partition its replicas' addresses (`--shard lexical/1=HOST:PORT,HOST:PORT`)."""
    args = []
    for name, where in shards.items():
        if isinstance(where, str):
            args += ["--shard", f"{name}={where}"]
        else:
            args += [f for p, replicas in enumerate(where) for f in ("--shard", f"{name}/{p}={','.join(replicas)}")]
    return args


def parse_shard_flags(flags: Sequence[str]) -> Topology:
    """`--shard STRATEGY[/PARTITION]=ADDR[,ADDR...]` flags (the comma list: that partition's
    replicas) as a Topology. ValueError for malformed text, a partition given twice, or partitions
    that are not 0..P-1 without gaps."""
    given: dict[str, dict[int, tuple[str, ...]]] = {}
    for flag in flags:
        key, sep, addresses = flag.partition("=")
        strategy, slash, number = key.strip().partition("/")
        if not sep or not strategy or (slash and not number.isdigit()):
            raise ValueError(f"`--shard` must be STRATEGY[/PARTITION]=ADDR[,ADDR...], but got {flag!r}")
        partition = int(number) if slash else 0
        parts = given.setdefault(strategy, {})
        if partition in parts:
            raise ValueError(f"`--shard` must give {strategy} partition {partition} once (its replicas as one "
                             f"comma list), but got it twice")
        parts[partition] = _replicas(strategy, partition, addresses.split(","))
    out: Topology = {}
    for strategy, parts in given.items():
        if sorted(parts) != list(range(len(parts))):
            raise ValueError(f"`--shard` must number {strategy}'s partitions 0..P-1 without gaps, but got "
                             f"{sorted(parts)}")
        out[strategy] = tuple(parts[p] for p in range(len(parts)))
    return out


def describe_topology(topology: Topology) -> list[broker_pb2.StrategyTopology]:
    """BrokerDescribeResponse.strategies: one StrategyTopology per strategy, in `topology`'s order."""
    return [broker_pb2.StrategyTopology(
        strategy=strategy, partitioned_by=partitioned_by(strategy),
        partitions=[broker_pb2.PartitionTopology(partition=p, replicas=list(replicas))
                    for p, replicas in enumerate(parts)])
        for strategy, parts in topology.items()]
