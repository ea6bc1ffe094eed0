"""The wire contract passes `buf lint` (protos/buf.yaml), and its breaking-change check catches a
wire-breaking edit. buf is the npm package @bufbuild/buf, installed by `make buf` (CI: `make test`)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ROOT / "protos"


def _buf_check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("buf_check", PROTOS / "buf_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def buf() -> str:
    found = _buf_check().find_buf()
    if found is None:
        pytest.skip("buf is not installed: `make buf` installs it from npm (@bufbuild/buf) into .buf/")
    return str(found)


def test_protos_pass_buf_lint(buf: str) -> None:
    result = subprocess.run([buf, "lint"], cwd=PROTOS, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def _copy_contract(into: Path) -> Path:
    shutil.copytree(PROTOS / "ltrr", into / "ltrr", ignore=shutil.ignore_patterns("*.py", "*.pyi", "__pycache__"))
    shutil.copy(PROTOS / "buf.yaml", into / "buf.yaml")
    return into


def test_breaking_check_passes_for_the_same_contract(buf: str, tmp_path: Path) -> None:
    previous = _copy_contract(tmp_path)
    result = subprocess.run([buf, "breaking", "--against", str(previous)], cwd=PROTOS, capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("old", "new", "finding"), [
    # a field renumbered: old clients' bytes decode into the wrong field
    ("string decision_id = 1;", "string decision_id = 99;", "decision_id"),
    # the service renamed: every method's path changes, old clients get UNIMPLEMENTED
    ("service Broker {", "service BrokerService {", "Broker"),
])
def test_breaking_check_catches_a_wire_breaking_edit(buf: str, tmp_path: Path, old: str, new: str,
                                                     finding: str) -> None:
    edited = _copy_contract(tmp_path / "edited")
    proto = edited / "ltrr" / "v1" / "broker.proto"
    text = proto.read_text()
    assert old in text
    proto.write_text(text.replace(old, new, 1))
    result = subprocess.run([buf, "breaking", "--against", str(PROTOS)], cwd=edited, capture_output=True,
                            text=True, check=False)
    assert result.returncode != 0
    assert finding in result.stdout
