"""core.live_dir's entities files: a new base copies the lines of the entities the last one held
(the same objects) and encodes only the others, with the same bytes as encoding every entity; a
damaged or mismatched last file costs only speed."""

from __future__ import annotations

import dataclasses
import gzip
import zlib
from pathlib import Path

import pytest

from core import live_dir
from core.catalog import Entity
from core.live_dir import ENTITIES, EntityLines, inflate, read_entities, write_entities
from tests.conftest import synthetic_catalog
from tests.core.live_writes import count_encodes


def encoded_file(entities: list[Entity]) -> bytes:
    """The file's text as an encoding of every entity gives it."""
    return b"".join(live_dir.encode_entity(e) + b"\n" for e in entities)


def test_the_next_file_encodes_only_entities_the_last_did_not_hold(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    old = synthetic_catalog(200, seed=3)
    known = EntityLines()
    (tmp_path / "a").mkdir()
    write_entities(tmp_path / "a", old, known)
    changed = dataclasses.replace(old[7], popularity=old[7].popularity + 1)  # equal id, other content
    added = [dataclasses.replace(e, id=f"new-{e.id}") for e in synthetic_catalog(5, seed=4)]
    new = [*old[:7], *old[8:150], changed, *added]
    encoded = count_encodes(monkeypatch)
    (tmp_path / "b").mkdir()
    write_entities(tmp_path / "b", new, known)
    assert sorted(encoded) == sorted([changed.id, *(e.id for e in new[-5:])])
    assert gzip.decompress((tmp_path / "b" / ENTITIES).read_bytes()) == encoded_file(new)
    assert read_entities(tmp_path / "b") == new and known.path == tmp_path / "b" / ENTITIES


def test_entities_read_back_are_copied_by_the_next_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a restart the file read is the one copied from."""
    (tmp_path / "a").mkdir()
    write_entities(tmp_path / "a", synthetic_catalog(50, seed=5))
    known = EntityLines()
    entities = read_entities(tmp_path / "a", known)
    encoded = count_encodes(monkeypatch)
    (tmp_path / "b").mkdir()
    write_entities(tmp_path / "b", entities[::-1], known)
    assert encoded == [] and read_entities(tmp_path / "b") == entities[::-1]
    assert gzip.decompress((tmp_path / "b" / ENTITIES).read_bytes()) == encoded_file(entities[::-1])


@pytest.mark.parametrize("damage", ["truncated", "missing", "fewer lines", "other lines, as many", "empty"])
def test_a_damaged_or_mismatched_last_file_is_not_copied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         damage: str) -> None:
    old = synthetic_catalog(60, seed=6)
    known = EntityLines()
    (tmp_path / "a").mkdir()
    write_entities(tmp_path / "a", old, known)
    path = tmp_path / "a" / ENTITIES
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:-30])
    elif damage == "missing":
        path.unlink()
    elif damage == "fewer lines":
        path.write_bytes(gzip.compress(encoded_file(old[:59])))
    elif damage == "other lines, as many":  # another file that happens to have as many lines
        path.write_bytes(gzip.compress(encoded_file(synthetic_catalog(60, seed=7))))
    else:
        path.write_bytes(b"")
    encoded = count_encodes(monkeypatch)
    (tmp_path / "b").mkdir()
    write_entities(tmp_path / "b", old, known)
    assert len(encoded) == len(old) and read_entities(tmp_path / "b") == old


def test_inflate_reads_one_whole_gzip_member_in_steps() -> None:
    data = bytes(range(256)) * 5000
    assert inflate(gzip.compress(data, mtime=0), step=4096) == data
    assert inflate(gzip.compress(b"", mtime=0)) == b""
    with pytest.raises(zlib.error):
        inflate(gzip.compress(data)[:-10], step=4096)
    with pytest.raises(zlib.error):
        inflate(gzip.compress(b"one") + gzip.compress(b"two"))
