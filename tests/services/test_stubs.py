"""The committed stubs in protos/ltrr/v1 are exactly what protos/generate.py makes from the .proto files."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_committed_stubs_are_current(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("generate", ROOT / "protos" / "generate.py")
    assert spec is not None and spec.loader is not None
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    fresh = generate.generate(tmp_path)
    assert fresh, "protoc produced nothing"
    for path in fresh:
        committed = ROOT / "protos" / path.relative_to(tmp_path)
        assert committed.exists(), f"{committed} is missing: run python protos/generate.py"
        assert committed.read_bytes() == path.read_bytes(), f"{committed} is stale: run python protos/generate.py"
