"""Index files: round trip, and a clear error naming the file for every kind of damage."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.errors import IndexFormatError
from core.indexing import open_strategy
from core.query import make_query
from core.storage import ComponentReader, ComponentWriter, dumps_in_pieces


def test_round_trip(tmp_path: Path) -> None:
    array = np.arange(10, dtype=np.uint32)
    with ComponentWriter(tmp_path, "thing", {"answer": 42}) as w:
        w.write_array("a.npy", array)
        w.write_bytes("b.bin", b"\x00\x01")
        w.write_json("c.json", {"x": [1, 2]})
    r = ComponentReader(tmp_path, "thing")
    assert r.params == {"answer": 42} and r.content_id == w.content_id
    np.testing.assert_array_equal(r.read_array("a.npy"), array)
    assert r.read_bytes("b.bin") == b"\x00\x01"
    assert r.read_json("c.json") == {"x": [1, 2]}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary directories left behind"


def test_rewrite_replaces_whole_component(tmp_path: Path) -> None:
    for value in (b"old", b"new"):
        with ComponentWriter(tmp_path, "thing", {}) as w:
            w.write_bytes("v.bin", value)
    assert ComponentReader(tmp_path, "thing").read_bytes("v.bin") == b"new"


def test_failed_write_leaves_the_old_component(tmp_path: Path) -> None:
    with ComponentWriter(tmp_path, "thing", {}) as w:
        w.write_bytes("v.bin", b"old")
    with pytest.raises(RuntimeError), ComponentWriter(tmp_path, "thing", {}) as w:
        w.write_bytes("v.bin", b"half")
        raise RuntimeError("crash in the middle of a build")
    assert ComponentReader(tmp_path, "thing").read_bytes("v.bin") == b"old"


@pytest.fixture()
def damaged(tmp_path: Path, lexical_index_dir: Path) -> Path:
    copy = tmp_path / "index"
    shutil.copytree(lexical_index_dir, copy)
    return copy


def _flip_byte(path: Path, offset: int = -5) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(("damage", "file", "match"), [
    (lambda p: p.unlink(), "lexical/block_max_tf.npy", "missing index file"),
    (lambda p: p.write_bytes(p.read_bytes()[:-7]), "lexical/words.npy", "truncated"),
    (_flip_byte, "lexical/doc_lengths.npy", "checksum mismatch"),
    (_flip_byte, "collection/ids.txt", "checksum mismatch"),
    (lambda p: p.unlink(), "lexical/manifest.json", "missing manifest"),
    (lambda p: p.write_text("{not json"), "collection/manifest.json", "corrupted manifest"),
    (lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "version": 99})), "lexical/manifest.json",
     "version 99 is not supported"),
])
def test_damage_is_refused_naming_the_file(damaged: Path, damage: Callable[[Path], object], file: str,
                                         match: str) -> None:
    damage(damaged / file)
    with pytest.raises(IndexFormatError, match=match) as err:
        open_strategy(damaged, "lexical")
    assert file in str(err.value)


def test_missing_component_says_how_to_build_it(tmp_path: Path) -> None:
    with pytest.raises(IndexFormatError, match="ltrr index"):
        open_strategy(tmp_path, "lexical")


def test_undamaged_copy_still_answers(damaged: Path) -> None:
    assert len(open_strategy(damaged, "lexical").retrieve(make_query("love"), 5, None)) > 0


@pytest.mark.parametrize("obj", [
    {}, [], "text", 1.5, None, {"b": [1, 2], "a": {"x": [3.5, None, "é"]}},
    {"filters": {f"v{i:03d}": [i, i + 1] for i in range(7)}, "empty": {}, "names": ["z", "ä", "a"]},
    {str(i): {"n": i} for i in range(9)}, list(range(11)), {i: "int keys, sorted as ints" for i in range(12)},
    {"small": {1: "a", 0: "b"}, "large": {i: [i] for i in range(12)}}, [[["deep"] * 5], {"x": list(range(7))}],
])
def test_json_written_in_pieces_is_the_text_of_one_call(obj: Any) -> None:
    assert dumps_in_pieces(obj, piece=2) == json.dumps(obj, ensure_ascii=False, sort_keys=True)
