"""`ltrr up`'s config: brokers, partitions, replicas and the event store (no processes started)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.catalog import Entity, write_jsonl
from core.partitioning import read_partitions
from services.cluster import ClusterConfig, broker_args, build_missing, shard_flags


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cluster.toml"
    path.write_text(text)
    return path


def test_scale_out_keys_are_read(tmp_path: Path) -> None:
    c = ClusterConfig.from_toml(write(tmp_path, 'brokers = 2\npartitions = 2\nreplicas = 2\nmetrics_port = 9000\n'
                                                'strategies = ["lexical", "memory"]\n[store]\nurl = "postgres"\n'))
    assert (c.brokers, c.partitions, c.replicas, c.store_url) == (2, 2, 2, "postgres")
    assert c.placements()[:3] == [("lexical", 0, 0), ("lexical", 0, 1), ("lexical", 1, 0)]
    assert len(c.placements()) == 8 and c.processes == 10
    brokers, shards = c.metrics_ports()
    assert brokers == ["9000", "9001"] and shards[0] == "9002" and shards[-1] == "9009"
    assert c.shard_index("lexical", 1) == Path(c.index) / "part-1"
    assert c.shard_index("memory", 0) == Path(c.index) / "memory-0"
    # every memory replica keeps its own feedback state; other strategies get no state_dir
    states = {c.shard_run_options("memory", p, r)["state_dir"] for p in (0, 1) for r in (0, 1)}
    assert len(states) == 4
    assert "state_dir" not in c.shard_run_options("lexical", 0, 1)
    given = ClusterConfig(replicas=2, run={"memory": {"state_dir": "/m"}})
    assert given.shard_run_options("memory", 0, 1)["state_dir"] == "/m/p0-r1"


def test_one_partition_keeps_todays_layout() -> None:
    c = ClusterConfig()
    assert c.shard_index("memory", 0) == Path(c.index)
    assert c.shard_run_options("memory", 0, 0) == {}
    assert c.metrics_ports() == (["auto"], ["auto"] * 4)


@pytest.mark.parametrize(("text", "message"), [
    ("brokers = 2\n", "needs a shared event store"),
    ("partitions = 0\n", "`partitions` must be an int in \\[1, 64\\]"),
    ("replicas = true\n", "`replicas` must be an int"),
    ('[store]\nurl = "mysql://x"\n', "`store.url` must be"),
    ('[store]\nuri = "postgres"\n', "`store` must hold only"),
])
def test_bad_scale_out_keys_are_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ClusterConfig.from_toml(write(tmp_path, text))


def test_broker_flags_name_partitions_and_replicas() -> None:
    assert shard_flags({"lexical": "h:1"}) == ["--shard", "lexical=h:1"]
    assert shard_flags({"lexical": [["h:1", "h:2"], ["h:3"]]}) == ["--shard", "lexical/0=h:1,h:2",
                                                                  "--shard", "lexical/1=h:3"]
    args = broker_args(ClusterConfig(), {"memory": [["h:9"]]}, 0, "postgresql://u@h:5/db")
    assert args[args.index("--store") + 1] == "postgresql://u@h:5/db"
    assert "--store" not in broker_args(ClusterConfig(), {"memory": "h:9"}, 0)


def test_partitioned_index_is_built_once(tmp_path: Path, catalog: list[Entity]) -> None:
    write_jsonl(catalog, tmp_path / "catalog.jsonl")
    c = ClusterConfig(catalog=str(tmp_path / "catalog.jsonl"), index=str(tmp_path / "index"), partitions=2,
                      strategies=("lexical", "memory"), build={"lexical": {"fields": "title^2,artist",
                                                                           "progress": False}})
    build_missing(c)
    layout = read_partitions(c.index)
    assert layout is not None and layout.partitions == 2 and layout.entities == len(catalog)
    assert all((c.shard_index(s, p) / s / "manifest.json").exists() for s in c.strategies for p in (0, 1))
    stamp = (tmp_path / "index" / "partitions.json").stat().st_mtime_ns
    build_missing(c)  # complete: nothing rebuilt
    assert (tmp_path / "index" / "partitions.json").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="holds 2 partitions but the config asks for 3"):
        build_missing(ClusterConfig(catalog=c.catalog, index=c.index, partitions=3, strategies=("lexical",)))


def test_default_ports_lie_below_the_ephemeral_range() -> None:
    """Regression: at 50050 the demo broker once failed to bind, the port held by some socket's
    ephemeral end right after the test suite. Every local default must stay below Linux's range."""
    from services.cli import build_parser
    from services.cli_common import DEFAULT_BROKER_PORT, DEFAULT_SHARD_PORT

    ranges = Path("/proc/sys/net/ipv4/ip_local_port_range")
    low = int(ranges.read_text().split()[0]) if ranges.exists() else 32768  # Linux's default
    parser = build_parser()
    defaults = [ClusterConfig().port, parser.parse_args(["shard", "lexical", "--index", "x"]).port,
                parser.parse_args(["broker", "--shard", "lexical=127.0.0.1:1", "--state", "s", "--catalog", "c"]).port]
    targets = [parser.parse_args(argv).target.rsplit(":", 1)[1] for argv in
               (["retrieve", "q"], ["describe"], ["search", "q"], ["catalog", "status"])]
    assert defaults == [DEFAULT_BROKER_PORT, DEFAULT_SHARD_PORT, DEFAULT_BROKER_PORT]
    assert all(0 < int(p) < low for p in [*defaults, *targets])
