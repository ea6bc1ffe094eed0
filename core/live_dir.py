"""A live shard's directory of bases (one per replica; nothing in it is shared): the files every
kind of base has, whoever writes it (core.live_lexical's merges, core.live_checkpoint's checkpoints).

  CURRENT                  the name of the newest complete base, replaced by rename (atomic)
  base-<position>-<ns>/    the strategy's components (core.storage: fsync'd, checksummed),
                           entities.jsonl.gz (the live entities it holds, for the next start's
                           collection), base.json {"position", "entities", "source_index_id"}
A base is written completely and fsync'd (base.json last, then the directories), then CURRENT is
replaced, then the other bases are removed. A crash before the rename leaves the old base current
(a half-written new one is removed at the next start); after it, the new one.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import time
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from core.catalog import Entity, load_jsonl
from core.errors import IndexFormatError
from core.storage import ComponentReader, fsync_dir, write_file_atomic

CURRENT = "CURRENT"
ENTITIES = "entities.jsonl.gz"
BASE_FILE = "base.json"
BASE_PREFIX = "base-"


def source_index_id(index: str | os.PathLike[str]) -> str:
    """The offline index's id (its collection's content id, from the manifest: the files are
    verified when the strategy loads them), recorded in every base made from it."""
    from core.collection import COMPONENT

    return ComponentReader(index, COMPONENT, verify=False).content_id


def new_base_dir(live_dir: Path, position: int) -> Path:
    """A new, empty base directory for catalog position `position` under live_dir."""
    root = live_dir / f"{BASE_PREFIX}{position:020d}-{time.time_ns()}"
    root.mkdir(parents=True)
    return root


class EntityLines:
    """The entities file a live shard last wrote or read (a base's ENTITIES) and the entities it
    holds, in its order. write_entities copies from it the line of every entity still in the new
    base (the same object: entities are immutable; the line it was encoded to or read from)
    instead of encoding it again, so that a merge or a checkpoint encodes only what was written
    since the last one. Encoding is JSON with sorted keys, holding the GIL: ~0.35 s for the demo
    catalog's 28k tracks, paid by the lexical and the semantic shards at once at every merge while
    they serve (NOTES.md, session 15). Nothing is remembered until a shard writes or reads a base:
    the first merge after a start from the offline index encodes every entity."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self.entities: tuple[Entity, ...] = ()
        self.trailer = b""  # the file's gzip trailer (CRC-32 and size of its text): the same file?

    def remember(self, path: Path, entities: Sequence[Entity], trailer: bytes) -> None:
        self.path, self.entities, self.trailer = path, tuple(entities), trailer

    def lines(self, entities: Sequence[Entity]) -> list[bytes | memoryview]:
        """One JSON line per entity (without its newline), copied where the file holds it."""
        old = self._old_lines()
        if old is None:
            return [encode_entity(e) for e in entities]
        raw, starts, ends = old
        at = {id(e): i for i, e in enumerate(self.entities)}
        return [raw[starts[i]:ends[i]] if (i := at.get(id(e))) is not None else encode_entity(e) for e in entities]

    def _old_lines(self) -> tuple[memoryview, list[int], list[int]] | None:
        """The remembered file's text and each line's start and end; None when there is none, or
        the file is not the one remembered, or it is damaged (then every entity is encoded: the
        same output, only slower). Each step holds the GIL briefly (a split into 28k lines: ~9 ms
        in one call)."""
        if self.path is None:
            return None
        try:
            data = self.path.read_bytes()
            if data[-8:] != self.trailer:
                return None
            raw = inflate(data)
        except (OSError, zlib.error):
            return None
        ends = np.flatnonzero(np.frombuffer(raw, dtype=np.uint8) == ord("\n"))
        if ends.size != len(self.entities) or (ends.size and ends[-1] != len(raw) - 1):
            return None
        starts = np.concatenate([[0], ends[:-1] + 1])
        return memoryview(raw), starts.tolist(), ends.tolist()


def inflate(data: bytes, step: int = 1 << 18) -> bytes:
    """The text of a one-member gzip file, decompressed `step` bytes of input per call (JSON lines
    grow ~5x: a one-shot decompression of 6 MB held the GIL ~8 ms); zlib.error when `data` is not
    one whole member (its CRC-32 is checked at the end)."""
    d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    view = memoryview(data)
    parts = [d.decompress(view[i:i + step]) for i in range(0, len(data), step)]
    if not d.eof or d.unused_data:
        raise zlib.error("not one whole gzip member")
    return b"".join(parts)


def encode_entity(entity: Entity) -> bytes:
    return json.dumps(entity.to_json(), ensure_ascii=False, sort_keys=True).encode()


def write_entities(root: Path, entities: Sequence[Entity], entity_lines: EntityLines | None = None) -> None:
    """`entities` (in order) as root/ENTITIES, gzip'd JSON lines, fsync'd (read back with
    read_entities); entity_lines: the lines to copy (EntityLines), then it remembers this file."""
    lines = (entity_lines or EntityLines()).lines(entities)
    data = gzip.compress(b"\n".join([*lines, b""]), compresslevel=1, mtime=0)  # a newline after each line
    with (root / ENTITIES).open("wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    if entity_lines is not None:
        entity_lines.remember(root / ENTITIES, entities, data[-8:])


def read_entities(root: Path, entity_lines: EntityLines | None = None) -> list[Entity]:
    """The entities of root/ENTITIES, in order; entity_lines: it remembers this file."""
    entities = load_jsonl(root / ENTITIES)
    if entity_lines is not None:
        with (root / ENTITIES).open("rb") as f:
            f.seek(max(f.seek(0, os.SEEK_END) - 8, 0))
            entity_lines.remember(root / ENTITIES, entities, f.read())
    return entities


def finish_base(live_dir: Path, root: Path, position: int, entities: int, source_index_id: str) -> None:
    """Write root's BASE_FILE (what makes a base complete) and fsync root and live_dir; CURRENT is
    not touched (publish_base)."""
    meta = {"position": position, "entities": entities, "source_index_id": source_index_id}
    write_file_atomic(root / BASE_FILE, json.dumps(meta).encode())
    fsync_dir(root)
    fsync_dir(live_dir)


def publish_base(live_dir: Path, root: Path) -> None:
    """Make the complete base `root` current (atomically), then remove every other base."""
    write_file_atomic(live_dir / CURRENT, root.name.encode())
    remove_bases(live_dir, keep=root.name)


def remove_bases(live_dir: Path, keep: str | None) -> None:
    """Remove every base directory but `keep` (old bases, and half-written ones after a crash)."""
    for path in live_dir.glob(f"{BASE_PREFIX}*"):
        if path.name != keep:
            shutil.rmtree(path, ignore_errors=True)


def current_base(live_dir: Path, source_index_id: str) -> tuple[Path, int] | None:
    """(the base CURRENT names, its position), None when there is none or it was made from
    another offline index than `source_index_id`."""
    pointer = live_dir / CURRENT
    if not pointer.is_file():
        return None
    root = live_dir / pointer.read_text().strip()
    meta_file = root / BASE_FILE
    if not meta_file.is_file():
        raise IndexFormatError(meta_file, f"is missing: {pointer} names an incomplete base")
    meta = json.loads(meta_file.read_text())
    if meta.get("source_index_id") != source_index_id:
        return None
    return root, int(meta["position"])


def usable_base(live_dir: Path, source_index_id: str) -> tuple[Path, int] | None:
    """current_base, after removing every other base (half-written ones after a crash); when there
    is none (or it belongs to another offline index), CURRENT and every base are removed."""
    live_dir.mkdir(parents=True, exist_ok=True)
    found = current_base(live_dir, source_index_id)
    if found is None:
        (live_dir / CURRENT).unlink(missing_ok=True)
    remove_bases(live_dir, keep=None if found is None else found[0].name)
    return found
