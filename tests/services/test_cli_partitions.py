"""`ltrr index --partitions P` run as a user would: the layout, a partition served by `ltrr shard`,
and a partitioned directory refused where one index is expected (issue 14)."""

from __future__ import annotations

import json
from pathlib import Path

from core.catalog import Entity
from core.partitions import document_partition
from services.process import shard_args, spawn
from tests.services.conftest import ltrr


def test_index_partitions_2_serves_each_partition_and_refuses_the_root(catalog_file: Path, catalog: list[Entity],
                                                                       tmp_path: Path) -> None:
    out = tmp_path / "index"
    built = ltrr("index", "--catalog", str(catalog_file), "--out", str(out), "--partitions", "2",
                 "--strategies", "lexical,attribute,memory,semantic", "--fields", "title^2,artist",
                 "--option", "semantic.encoder=hashing", "--option", f"semantic.cache={tmp_path / 'cache'}")
    assert built.returncode == 0, built.stderr
    layout = json.loads((out / "partitions.json").read_text())
    counts = [sum(document_partition(e.id, 2) == p for e in catalog) for p in range(2)]
    assert layout["partitions"] == 2 and layout["entities"] == len(catalog) and layout["counts"] == counts
    assert f"entities per partition: {counts[0]}, {counts[1]}" in built.stdout
    for p in range(2):
        assert {d.name for d in (out / f"part-{p}").iterdir()} >= {"collection", "lexical", "attribute", "semantic"}
        assert {d.name for d in (out / f"memory-{p}").iterdir()} >= {"collection", "memory"}

    server = spawn(shard_args("lexical", out / "part-1"))
    try:
        answer = ltrr("retrieve", "love", "--target", server.address, "--quota", "1000")
        assert answer.returncode == 0, answer.stderr
        held = {e.id for e in catalog if document_partition(e.id, 2) == 1}
        returned = [line.split()[-1] for line in answer.stdout.splitlines()[1:]]
        assert returned and set(returned) <= held
    finally:
        assert server.stop() == 0

    refused = ltrr("shard", "lexical", "--index", str(out), "--port", "0")
    assert refused.returncode != 0 and "is a partitioned index (2 partitions" in refused.stderr
    rebuilt = ltrr("index", "--catalog", str(catalog_file), "--out", str(out), "--strategies", "lexical")
    assert rebuilt.returncode == 2 and "cannot be built as one index" in rebuilt.stderr
    deleted = ltrr("delete", "--index", str(out), catalog[0].id)
    assert deleted.returncode == 0 and "1 entities newly deleted" in deleted.stdout


def test_partitions_must_be_positive(catalog_file: Path, tmp_path: Path) -> None:
    result = ltrr("index", "--catalog", str(catalog_file), "--out", str(tmp_path / "x"), "--partitions", "0")
    assert result.returncode == 2 and "`--partitions` must be >= 1, but got 0" in result.stderr
