"""Durable state of the memory store: an fsync'd write-ahead log plus atomic snapshots.

Write-ahead log (`wal.log`): records appended back to back, each
    <uint32 little-endian payload length> <uint32 CRC-32 of the payload> <payload: UTF-8 JSON>
and fsync'd before `append` returns, so a record that was acknowledged survives a crash (SIGKILL,
power loss on a disk honouring fsync). A crash during an append leaves a torn last record; `replay`
stops at the first record whose length or CRC does not check out and truncates the file there,
so later appends are not hidden behind garbage (the torn record was never acknowledged).

Snapshot (`snapshot.json`): "<sha256 hex of the JSON>\n<JSON>", replaced atomically (temporary
file, fsync, rename, fsync of the directory). It records the sequence number of the last log
record it includes; after a snapshot the log is emptied, and records with a sequence number at
or below the snapshot's are skipped on replay (a crash between the two steps is harmless). Its
"version" must be one of SNAPSHOT_VERSIONS.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import zlib
from pathlib import Path
from typing import IO, Any

from core.errors import IndexFormatError
from core.storage import fsync_dir, write_file_atomic

WAL_NAME = "wal.log"
SNAPSHOT_NAME = "snapshot.json"
_HEADER = struct.Struct("<II")
MAX_RECORD_BYTES = 1 << 30
SNAPSHOT_VERSIONS = (1, 2)  # the layouts core.memory.index reads (its module docstring)
log = logging.getLogger(__name__)


class WriteAheadLog:
    """The log at `directory`/wal.log. Call `replay()` once, then `append` records."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / WAL_NAME
        self.file: IO[bytes] | None = None

    def replay(self) -> list[dict[str, Any]]:
        """Every intact record in order; a torn or corrupted tail is cut off (and logged)."""
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        records: list[dict[str, Any]] = []
        offset = 0
        while offset + _HEADER.size <= len(data):
            length, crc = _HEADER.unpack_from(data, offset)
            payload = data[offset + _HEADER.size:offset + _HEADER.size + length]
            if length > MAX_RECORD_BYTES or len(payload) != length or zlib.crc32(payload) != crc:
                break
            try:
                records.append(json.loads(payload))
            except (json.JSONDecodeError, UnicodeDecodeError):
                break
            offset += _HEADER.size + length
        if offset != len(data):
            log.warning("%s: cutting %d bytes of torn or corrupted log tail", self.path, len(data) - offset)
            with self.path.open("r+b") as f:
                f.truncate(offset)
                f.flush()
                os.fsync(f.fileno())
        return records

    def _open(self) -> IO[bytes]:
        if self.file is None:
            created = not self.path.exists()
            self.file = self.path.open("ab")
            if created:
                os.fsync(self.file.fileno())
                fsync_dir(self.path.parent)
        return self.file

    def append(self, record: dict[str, Any]) -> None:
        """Write one record and fsync it; returns only once it is durable."""
        payload = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()
        f = self._open()
        f.write(_HEADER.pack(len(payload), zlib.crc32(payload)) + payload)
        f.flush()
        os.fsync(f.fileno())

    def reset(self) -> None:
        """Empty the log (after a snapshot has made its records redundant)."""
        self.close()
        write_file_atomic(self.path, b"")

    def size(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def write_snapshot(directory: Path, state: dict[str, Any]) -> None:
    """Replace `directory`/snapshot.json with `state` atomically."""
    data = json.dumps(state, ensure_ascii=False, separators=(",", ":")).encode()
    write_file_atomic(directory / SNAPSHOT_NAME, hashlib.sha256(data).hexdigest().encode() + b"\n" + data)


def read_snapshot(directory: Path) -> dict[str, Any] | None:
    """The snapshot's state, None when there is none; IndexFormatError naming the file when it is
    damaged (refused rather than silently losing acknowledged feedback)."""
    path = directory / SNAPSHOT_NAME
    if not path.exists():
        return None
    digest, _, data = path.read_bytes().partition(b"\n")
    if hashlib.sha256(data).hexdigest().encode() != digest:
        raise IndexFormatError(path, "snapshot checksum mismatch (corrupted); restore it or move it away")
    try:
        state = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise IndexFormatError(path, f"snapshot is not valid JSON ({err})") from None
    if not isinstance(state, dict) or state.get("version") not in SNAPSHOT_VERSIONS:
        version = state.get("version") if isinstance(state, dict) else None
        raise IndexFormatError(path, f"unsupported snapshot version {version!r}, expected one of {SNAPSHOT_VERSIONS}")
    return state
