"""Versioned, checksummed, atomically written index components.

An index directory (`ltrr index --out DIR`) holds one sub-directory per component
("collection", "lexical", ...). Each component directory holds data files and a `manifest.json`::

    {"format": "ltrr-index", "version": 1, "component": "lexical", "params": {...},
     "files": {"postings.bin": {"bytes": 1234, "sha256": "..."}, ...}}

Writing: every file goes to a fresh temporary directory beside the target and is fsync'd; the
manifest is written last; the temporary directory then replaces the old component with renames, so
a reader sees the old component or the new one, never a mix. Reading: the manifest is checked
first, then every file's size and SHA-256; any mismatch raises IndexFormatError naming the file,
so a damaged index is refused instead of answering wrongly.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import IndexFormatError

FORMAT = "ltrr-index"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_CHUNK = 1 << 20


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def fsync_dir(path: Path) -> None:
    """fsync a directory, so that renames and new files in it survive a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data`: temp file, fsync, rename, fsync of the directory."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


JSON_PIECE = 1000  # entries of a large dict or list encoded per C call (dumps_in_pieces)


def dumps_in_pieces(obj: Any, piece: int = JSON_PIECE) -> str:
    """json.dumps(obj, ensure_ascii=False, sort_keys=True), the same text, made `piece` entries of
    a large dict or list at a time: one C call over a large object holds the GIL throughout (a
    collection's filter directory, 28k demo tracks: ~20 ms, during which a live shard's searches,
    which write bases while they serve, cannot run). A large container's members are encoded
    whole, `piece` at a time; a small one holding a large container is split around it."""
    def dumps(o: Any) -> str:
        return json.dumps(o, ensure_ascii=False, sort_keys=True)

    if isinstance(obj, dict) and len(obj) > piece:
        items = sorted(obj.items())
        return "{" + ", ".join(dumps(dict(items[i:i + piece]))[1:-1] for i in range(0, len(items), piece)) + "}"
    if isinstance(obj, list) and len(obj) > piece:
        return "[" + ", ".join(dumps(obj[i:i + piece])[1:-1] for i in range(0, len(obj), piece)) + "]"
    if not holds_large(obj, piece):
        return dumps(obj)
    if isinstance(obj, list):
        return "[" + ", ".join(dumps_in_pieces(v, piece) for v in obj) + "]"
    if not all(isinstance(k, str) for k in obj):  # json's own key conversion and ordering
        return dumps(obj)
    return "{" + ", ".join(f"{dumps(k)}: {dumps_in_pieces(v, piece)}" for k, v in sorted(obj.items())) + "}"


def holds_large(obj: Any, piece: int) -> bool:
    """Does the (small) dict or list `obj` hold, at any depth, a dict or list of more than `piece` entries?"""
    if not isinstance(obj, dict | list):
        return False
    members = obj.values() if isinstance(obj, dict) else obj
    return any(isinstance(v, dict | list) and (len(v) > piece or holds_large(v, piece)) for v in members)


def content_id(files: dict[str, dict[str, Any]]) -> str:
    """A component's id: a digest of its files' names and checksums (the manifest's "files")."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(f"{name}:{files[name]['sha256']};".encode())
    return digest.hexdigest()[:16]


class ComponentWriter:
    """Collects the files of one component, then publishes them atomically with `commit()`;
    content_id: the id a ComponentReader of it will report."""

    def __init__(self, root: str | os.PathLike[str], component: str, params: dict[str, Any]) -> None:
        self.final = Path(root) / component
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.component = component
        self.params = params
        self.tmp = self.final.parent / f".{component}.tmp-{uuid.uuid4().hex[:8]}"
        self.tmp.mkdir()
        self.files: dict[str, dict[str, Any]] = {}

    def _add(self, name: str, data: bytes) -> None:
        if name == MANIFEST or "/" in name or name in self.files:
            raise ValueError(f"bad or repeated file name {name!r}")
        path = self.tmp / name
        with path.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        self.files[name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    def write_bytes(self, name: str, data: bytes) -> None:
        self._add(name, data)

    def write_json(self, name: str, obj: Any) -> None:
        self._add(name, dumps_in_pieces(obj).encode())

    def write_array(self, name: str, array: np.ndarray) -> None:
        """Stores a NumPy array (.npy layout) so that readers can memory-map it."""
        if array.dtype == object:
            raise ValueError(f"{name}: object arrays cannot be stored")
        path = self.tmp / name
        with path.open("wb") as f:
            np.save(f, np.ascontiguousarray(array), allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        self.files[name] = {"bytes": path.stat().st_size, "sha256": _sha256(path)}

    @property
    def content_id(self) -> str:
        return content_id(self.files)

    def commit(self) -> Path:
        manifest = {"format": FORMAT, "version": FORMAT_VERSION, "component": self.component,
                    "params": self.params, "files": self.files}
        write_file_atomic(self.tmp / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True).encode())
        fsync_dir(self.tmp)
        old = None
        if self.final.exists():
            old = self.final.parent / f".{self.component}.old-{uuid.uuid4().hex[:8]}"
            os.replace(self.final, old)
        os.replace(self.tmp, self.final)
        fsync_dir(self.final.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.final

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> ComponentWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


class ComponentReader:
    """Opens a component directory, verifying manifest, version and every file before use."""

    def __init__(self, root: str | os.PathLike[str], component: str, *, verify: bool = True) -> None:
        self.dir = Path(root) / component
        manifest_path = self.dir / MANIFEST
        if not self.dir.is_dir():
            raise IndexFormatError(self.dir, f"missing index component {component!r} (run `ltrr index`)")
        if not manifest_path.is_file():
            raise IndexFormatError(manifest_path, "missing manifest: not an ltrr index or an interrupted build")
        try:
            manifest = json.loads(manifest_path.read_bytes())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise IndexFormatError(manifest_path, f"corrupted manifest ({err})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise IndexFormatError(manifest_path, "not an ltrr index manifest")
        if manifest.get("version") != FORMAT_VERSION:
            raise IndexFormatError(manifest_path, f"format version {manifest.get('version')} is not supported "
                                   f"(this ltrr reads version {FORMAT_VERSION}); rebuild with `ltrr index`")
        if manifest.get("component") != component:
            raise IndexFormatError(manifest_path, f"holds component {manifest.get('component')!r}, "
                                   f"expected {component!r}")
        self.params: dict[str, Any] = manifest["params"]
        self.files: dict[str, dict[str, Any]] = manifest["files"]
        if verify:
            for name in self.files:
                self._verify(name)
        self.content_id = content_id(self.files)

    def _verify(self, name: str) -> Path:
        path = self.dir / name
        meta = self.files[name]
        if not path.is_file():
            raise IndexFormatError(path, "missing index file")
        size = path.stat().st_size
        if size != meta["bytes"]:
            raise IndexFormatError(path, f"expected {meta['bytes']} bytes, found {size} (truncated or overwritten)")
        if _sha256(path) != meta["sha256"]:
            raise IndexFormatError(path, "checksum mismatch (corrupted)")
        return path

    def path(self, name: str) -> Path:
        if name not in self.files:
            raise IndexFormatError(self.dir / name, "file not listed in the manifest")
        return self.dir / name

    def read_bytes(self, name: str) -> bytes:
        return self.path(name).read_bytes()

    def read_json(self, name: str) -> Any:
        try:
            return json.loads(self.read_bytes(name))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise IndexFormatError(self.path(name), f"not valid JSON ({err})") from None

    def read_array(self, name: str, *, mmap: bool = True) -> np.ndarray:
        try:
            return np.load(self.path(name), mmap_mode="r" if mmap else None, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise IndexFormatError(self.path(name), f"not a readable array ({err})") from None
