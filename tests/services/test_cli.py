"""The `ltrr` command line, run as a user would."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from core.indexing import open_strategy
from core.query import make_query
from services.cli_common import parse_options
from services.process import shard_args, spawn
from tests.services.conftest import ltrr


def test_index_retrieve_delete(catalog_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "index"
    built = ltrr("index", "--catalog", str(catalog_file), "--out", str(out), "--strategies", "lexical",
                 "--fields", "title^2,artist", "--option", "lexical.popularity_weight=0.1")
    assert built.returncode == 0, built.stderr
    assert "300 entities" in built.stdout and "lexical: analysing" in built.stderr  # progress bar
    top = open_strategy(out, "lexical").retrieve(make_query("love"), 1, None)
    victim = open_strategy(out, "lexical").collection.ids[int(top.ordinals[0])]

    deleted = ltrr("delete", "--index", str(out), victim)
    assert deleted.returncode == 0 and "1 entities newly deleted" in deleted.stdout
    server = spawn(shard_args("lexical", out))
    try:
        answer = ltrr("retrieve", "love", "--target", server.address, "--quota", "1000")
        assert answer.returncode == 0, answer.stderr
        assert answer.stdout.startswith("lexical: ") and victim not in answer.stdout
        described = ltrr("describe", "--target", server.address)
        assert '"numDeleted": "1"' in described.stdout
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize(("args", "message"), [
    (["index", "--catalog", "/nonexistent/catalog.jsonl", "--out", "/tmp/x"], "no such catalog file"),
    (["index", "--catalog", "{catalog}", "--out", "{tmp}", "--strategies", "magic"], "unknown strategy 'magic'"),
    (["index", "--catalog", "{catalog}", "--out", "{tmp}", "--option", "k1"], "STRATEGY.KEY=VALUE"),
    (["shard", "lexical", "--index", "{tmp}/missing", "--port", "0"], "missing index component"),
])
def test_errors_are_one_clear_line(catalog_file: Path, tmp_path: Path, args: list[str], message: str) -> None:
    result = ltrr(*(a.format(catalog=catalog_file, tmp=tmp_path) for a in args))
    assert result.returncode != 0
    assert message in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_demo_indexes_the_bundled_catalog_and_answers(tmp_path: Path) -> None:
    result = ltrr("demo", "--once", "--port", "0", "--index", str(tmp_path / "demo"))
    assert result.returncode == 0, result.stderr
    assert "lexical shard serving on 127.0.0.1:" in result.stdout
    assert "1. Dance Monkey — Tones and I" in result.stdout


def test_broker_settings_reach_the_policy_config(catalog_file: Path) -> None:
    import argparse

    from services.cli_broker import broker_config

    args = argparse.Namespace(shard=["lexical=127.0.0.1:1", "semantic=127.0.0.1:2"], state="/tmp/unused",
                              catalog=str(catalog_file),
                              set=["policy=static", "levels=0,10,25,50,100,200", "static_quotas=[100, 100]",
                                   "budget=200", "ranker=blend", "seed=3"])
    config = broker_config(args)
    assert config.policy.kind == "static" and config.policy.levels == (0, 10, 25, 50, 100, 200)
    assert config.policy.static_quotas == (100, 100) and config.ranker == "blend" and config.seed == 3


def test_broker_partitions_replicas_and_their_settings_from_the_command_line(catalog_file: Path) -> None:
    import argparse

    from services.cli_broker import broker_config

    args = argparse.Namespace(shard=["lexical/1=h:3", "lexical/0=h:1,h:2", "memory=m:1"], state="/tmp/unused",
                              catalog=str(catalog_file),
                              set=["hedging=false", "hedge_percentile=99", "hedge_min_samples=5", "failover=off",
                                   "topk_probability=0.999"])
    config = broker_config(args)
    assert config.topology == {"lexical": (("h:1", "h:2"), ("h:3",)), "memory": (("m:1",),)}
    assert not config.replicas.hedging and not config.replicas.failover
    assert (config.replicas.hedge_percentile, config.replicas.hedge_min_samples) == (99.0, 5)
    assert config.topk_probability == 0.999
    bad = argparse.Namespace(**{**vars(args), "shard": ["lexical/1=h:3"], "set": []})
    with pytest.raises(ValueError, match="without gaps"):
        broker_config(bad)
    with pytest.raises(ValueError, match="must be true or false, but got 'maybe'"):
        broker_config(argparse.Namespace(**{**vars(args), "set": ["hedging=maybe"]}))


@pytest.mark.parametrize(("value", "expected"), [
    ("", ()), ("[]", ()), ("hour_sin,weekend", ("hour_sin", "weekend")),
    ("['hour_sin', 'weekend']", ("hour_sin", "weekend")),
])
def test_ignored_features_from_the_command_line(catalog_file: Path, value: str, expected: tuple[str, ...]) -> None:
    """A TOML array rendered by `ltrr up`, a comma list, or empty (the policy sees every feature)."""
    import argparse

    from services.cli_broker import broker_config

    args = argparse.Namespace(shard=["lexical=127.0.0.1:1"], state="/tmp/unused", catalog=str(catalog_file),
                              set=[f"ignored_features={value}"])
    assert broker_config(args).policy.ignored_features == expected


def _non_default_config() -> Any:
    """A PolicyConfig with every field away from its default (the test fails when a field is added
    without a value here, so the round trip below covers every field)."""
    from core.policy.models import ModelKind
    from core.policy.policies import PolicyConfig, PolicyKind

    config = PolicyConfig(kind=PolicyKind.LINUCB, levels=(0, 25, 75, 150), budget=150, exploration_floor=0.03,
                          epsilon=0.2, ucb_alpha=0.5, noise=0.15, prior_precision=7.5, propensity_samples=128,
                          cost_per_candidate=0.00025, cost_per_ms=0.002, latency_decay=0.3,
                          static_quotas=(25, 0, 75, 0), prior_hit_rate=0.8, model=ModelKind.INDEPENDENT,
                          ignored_features=("weekend", "hour_sin"), satisfied_fraction=0.25)
    same = [f.name for f in dataclasses.fields(PolicyConfig) if getattr(config, f.name) == getattr(PolicyConfig(),
                                                                                                    f.name)]
    assert same == [], f"give these fields a non-default value: {same}"
    return config


def test_every_policy_field_parses_from_set_text() -> None:
    from core.policy.models import ModelKind
    from core.policy.policies import PolicyKind
    from services.cli_broker import policy_config_from_settings

    settings = parse_options(["policy=linucb", "levels=[0, 25, 75, 150]", "budget=150", "exploration_floor=0.03",
                              "epsilon=0.2", "ucb_alpha=0.5", "noise=0.15", "prior_precision=7.5",
                              "propensity_samples=128", "cost_per_candidate=0.00025", "cost_per_ms=0.002",
                              "latency_decay=0.3", "static_quotas=25,0,75,0", "prior_hit_rate=0.8",
                              "model=independent", "ignored_features=['weekend', 'hour_sin']",
                              "satisfied_fraction=0.25", "seed=4"],
                             scoped=False)
    config = policy_config_from_settings(settings, other_keys=("seed",))
    assert settings == {"seed": "4"}  # what the policy used is popped, the command's own keys are left
    assert config == _non_default_config()
    assert config.kind is PolicyKind.LINUCB and config.model is ModelKind.INDEPENDENT


def test_policy_settings_round_trip_every_field() -> None:
    from core.policy.policies import PolicyConfig
    from services.cli_broker import POLICY_KEYS, policy_config_from_settings, policy_settings

    config = _non_default_config()
    text = policy_settings(config)
    assert set(text) == set(POLICY_KEYS) and text["policy"] == "linucb" and text["levels"] == "0,25,75,150"
    assert policy_config_from_settings(dict(text)) == config
    assert policy_config_from_settings(policy_settings(PolicyConfig())) == PolicyConfig()
    assert policy_config_from_settings({}) == PolicyConfig()
    assert {spec.field for spec in POLICY_KEYS.values()} == {f.name for f in dataclasses.fields(PolicyConfig)}


@pytest.mark.parametrize(("pair", "message"), [
    ("budget=lots", "`--set budget` must be an integer, but got 'lots'"),
    ("noise=high", "`--set noise` must be a number, but got 'high'"),
    ("policy=magic", "`--set policy` must be one of thompson, linucb, epsilon-greedy, static, but got 'magic'"),
    ("levels=0,ten", "`--set levels` must be a list of integers"),
    ("exploration_floor=2", "`exploration_floor` must be in [0, 1], but got 2.0"),
])
def test_bad_policy_values_name_the_key(pair: str, message: str) -> None:
    from services.cli_broker import policy_config_from_settings

    with pytest.raises(ValueError) as err:
        policy_config_from_settings(parse_options([pair], scoped=False))
    assert message in str(err.value)


def test_unknown_set_keys_are_rejected_by_every_command_the_same_way(catalog_file: Path, tmp_path: Path) -> None:
    """`ltrr evaluate-policy` used to drop unknown --set keys silently while `ltrr broker` rejected them."""
    from services.cli_broker import BROKER_KEYS, POLICY_KEYS

    broker = ltrr("broker", "--shard", "lexical=127.0.0.1:1", "--state", str(tmp_path), "--catalog",
                  str(catalog_file), "--set", "budget=100", "--set", "bogus=1", "--set", "bugdet=100")
    evaluate = ltrr("evaluate-policy", "--state", str(tmp_path), "--set", "budget=100", "--set", "bogus=1",
                    "--set", "bugdet=100")
    policy_keys = ", ".join(POLICY_KEYS)
    for result, own in ((broker, "".join(f", {k}" for k in BROKER_KEYS)), (evaluate, "")):
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert result.stderr.strip() == f"error: unknown --set keys ['bogus', 'bugdet']; known: {policy_keys}{own}"


def test_a_policy_field_of_a_type_the_command_line_cannot_parse_fails_at_import() -> None:
    """So a new PolicyConfig field cannot silently be left out of `--set`."""
    from services.cli_broker import _policy_key

    with pytest.raises(TypeError, match=r"PolicyConfig\.weights has type"):
        _policy_key("weights", dict[str, float])
