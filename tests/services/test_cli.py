"""The `ltrr` command line, run as a user would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from core.catalog import Entity, write_jsonl
from core.indexing import open_strategy
from core.query import make_query
from services.process import shard_args, spawn


def ltrr(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services.cli", *args], capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL, check=False)


@pytest.fixture(scope="module")
def catalog_file(tmp_path_factory: pytest.TempPathFactory, catalog: list[Entity]) -> Path:
    path = tmp_path_factory.mktemp("catalog") / "catalog.jsonl.gz"
    write_jsonl(catalog, path)
    return path


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
