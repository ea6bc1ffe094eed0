"""services.topology: the broker's strategy -> partitions -> replicas, from config and flags."""

from __future__ import annotations

import pytest

from services.broker import BrokerConfig
from services.topology import describe_topology, normalise_shards, parse_shard_flags


def test_flags_give_partitions_in_order_with_their_replicas() -> None:
    got = parse_shard_flags(["lexical/1=h3:1", "lexical/0=h1:1,h2:1", "memory=m:1", "semantic/0=s:1"])
    assert got == {"lexical": (("h1:1", "h2:1"), ("h3:1",)), "memory": (("m:1",),), "semantic": (("s:1",),)}


@pytest.mark.parametrize(("flags", "match"), [
    (["lexical"], "must be STRATEGY"),
    (["=h:1"], "must be STRATEGY"),
    (["lexical/x=h:1"], "must be STRATEGY"),
    (["lexical/1=h:1"], "partitions 0..P-1 without gaps, but got \\[1\\]"),
    (["lexical/0=h:1", "lexical/2=h:2"], "without gaps, but got \\[0, 2\\]"),
    (["lexical=h:1", "lexical/0=h:2"], "partition 0 once"),
    (["lexical=h:1,,h:2"], "non-empty replica addresses"),
    (["lexical=h:1,h:1"], "must not repeat a replica address"),
])
def test_bad_flags_are_refused_with_what_is_wrong(flags: list[str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_shard_flags(flags)


def test_a_plain_address_is_one_partition_with_one_replica() -> None:
    assert normalise_shards({"lexical": "h:1", "memory": [["a:1", "b:1"], ["c:1"]]}) == {
        "lexical": (("h:1",),), "memory": (("a:1", "b:1"), ("c:1",))}


@pytest.mark.parametrize(("shards", "match"), [
    ({"lexical": []}, "one or more partitions"),
    ({"lexical": ["h:1"]}, "a sequence of replica addresses, but got the string"),
    ({"lexical": [[]]}, "one or more non-empty replica addresses"),
])
def test_bad_shards_are_refused(shards: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        normalise_shards(shards)  # type: ignore[arg-type]


def test_broker_config_normalises_and_orders_the_topology(tmp_path: object) -> None:
    config = BrokerConfig(shards={"memory": [["m0:1"], ["m1:1", "m1:2"]], "lexical": "l:1"}, state_dir=str(tmp_path))
    assert config.strategies == ("lexical", "memory")
    assert config.topology == {"lexical": (("l:1",),), "memory": (("m0:1",), ("m1:1", "m1:2"))}
    with pytest.raises(ValueError, match="`topk_probability` must be in"):
        BrokerConfig(shards={"lexical": "l:1"}, state_dir=str(tmp_path), topk_probability=0.2)


def test_describe_topology_names_how_each_strategy_is_split() -> None:
    got = describe_topology({"lexical": (("a:1", "b:1"), ("c:1",)), "memory": (("m:1",),)})
    assert [(t.strategy, t.partitioned_by) for t in got] == [("lexical", "documents"), ("memory", "queries")]
    assert [(p.partition, list(p.replicas)) for p in got[0].partitions] == [(0, ["a:1", "b:1"]), (1, ["c:1"])]
