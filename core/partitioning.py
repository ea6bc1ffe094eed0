"""Partitioned index directories: `ltrr index --partitions P` and what callers need to serve them.

Layout of a partitioned index directory DIR (P >= 2; P = 1 is the plain layout of core.indexing):
- DIR/partitions.json (PartitionLayout): format and version, P, the catalog's entity count, each
  document partition's entity count, the strategies built and how each is partitioned;
- DIR/part-<p>/ for p in 0..P-1: a complete index directory over the entities e with
  core.partitions.document_partition(e.id, P) == p, in catalog order, with the document-partitioned
  strategies (lexical, semantic, attribute). The lexical and attribute components store the
  whole catalog's statistics and query-understanding vocabulary (core.lexical.stats,
  core.attribute.index), so an entity scores the same in its partition as in one index over the
  whole catalog; the collection knows every filter value of the catalog (an empty bitmap where
  the partition has none), so a filter valid for the catalog is valid in every partition; its
  component "partition" records p, P and positions.npy (int64: each entity's catalog position,
  ascending), which break ties between partitions (core.partitions.merge_partitions);
- DIR/memory-<p>/: the collection of the whole catalog and the memory component whose predicted
  queries are those whose key k has core.partitions.query_partition(k, P) == p.
`ltrr shard NAME --index DIR/part-<p>` (or DIR/memory-<p>) serves a partition as any index.

The catalog is analysed, encoded and predicted once; each partition is then cut from the result.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pyroaring import BitMap
from tqdm import tqdm

from core.attribute.index import attribute_tables, partition_tables, write_tables
from core.catalog import Entity
from core.collection import COMPONENT as COLLECTION
from core.collection import Collection
from core.errors import IndexFormatError, NotFoundError
from core.lexical.build import analyse
from core.lexical.config import LexicalConfig, parse_flag
from core.lexical.index import write_postings
from core.lexical.stats import CorpusStats, partition_postings
from core.memory.index import write_predicted
from core.memory.predict import DEFAULT_MAX_PER_QUERY, predict
from core.partitions import document_partition, query_partition
from core.semantic.index import embed_catalog, write_vectors
from core.storage import ComponentReader, ComponentWriter, write_file_atomic
from core.strategies import entry_for

PARTITIONS_FILE = "partitions.json"
FORMAT = "ltrr-partitions"
FORMAT_VERSION = 1
DOCUMENT_STRATEGIES = ("lexical", "semantic", "attribute")
QUERY_STRATEGIES = ("memory",)
DOCUMENT_DIR = "part-{}"
QUERY_DIR = "memory-{}"
PARTITION_COMPONENT = "partition"


@dataclass(frozen=True, kw_only=True)
class PartitionLayout:
    """partitions: P >= 2; entities: the catalog's; counts: entities per document partition (P);
    strategies: those built, sorted."""

    partitions: int
    entities: int
    counts: tuple[int, ...]
    strategies: tuple[str, ...]

    def __post_init__(self) -> None:
        if isinstance(self.partitions, bool) or not isinstance(self.partitions, int) or self.partitions < 2:
            raise ValueError(f"`partitions` must be an int >= 2, but got {self.partitions!r}")
        if len(self.counts) != self.partitions or sum(self.counts) != self.entities:
            raise ValueError(f"`counts` must hold {self.partitions} counts summing to {self.entities}, "
                             f"but got {list(self.counts)}")
        unknown = sorted(set(self.strategies) - {*DOCUMENT_STRATEGIES, *QUERY_STRATEGIES})
        if unknown or not self.strategies:
            raise ValueError(f"`strategies` must be a non-empty subset of "
                             f"{[*DOCUMENT_STRATEGIES, *QUERY_STRATEGIES]}, but got {list(self.strategies)}")

    def dirs(self, root: str | os.PathLike[str], strategy: str) -> list[Path]:
        """The P index directories serving `strategy`, partition by partition."""
        if strategy not in self.strategies:
            raise ValueError(f"`strategy` must be one of those built ({', '.join(self.strategies)}), "
                             f"but got {strategy!r}")
        pattern = QUERY_DIR if strategy in QUERY_STRATEGIES else DOCUMENT_DIR
        return [Path(root) / pattern.format(p) for p in range(self.partitions)]

    def to_json(self) -> dict[str, Any]:
        document = [s for s in self.strategies if s in DOCUMENT_STRATEGIES]
        query = [s for s in self.strategies if s in QUERY_STRATEGIES]
        return {"format": FORMAT, "version": FORMAT_VERSION, "partitions": self.partitions,
                "entities": self.entities, "counts": list(self.counts), "strategies": list(self.strategies),
                "document": {"strategies": document, "dirs": DOCUMENT_DIR.format("<p>"),
                             "by": "core.partitions.document_partition(entity id, partitions)"},
                "query": {"strategies": query, "dirs": QUERY_DIR.format("<p>"),
                          "by": "core.partitions.query_partition(query text, partitions)"}}


def read_partitions(root: str | os.PathLike[str]) -> PartitionLayout | None:
    """The layout of a partitioned index directory; None for a plain one (no partitions.json)."""
    path = Path(root) / PARTITIONS_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise IndexFormatError(path, f"not valid JSON ({err})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != FORMAT_VERSION:
        raise IndexFormatError(path, f"not an {FORMAT} file of version {FORMAT_VERSION}")
    try:
        return PartitionLayout(partitions=data["partitions"], entities=data["entities"],
                               counts=tuple(data["counts"]), strategies=tuple(data["strategies"]))
    except (KeyError, TypeError, ValueError) as err:
        raise IndexFormatError(path, f"bad partition layout ({err})") from None


def partition_dirs(root: str | os.PathLike[str], strategy: str) -> list[Path]:
    """The index directories serving `strategy` in `root`: [root] for a plain index directory,
    the P partition directories (PartitionLayout.dirs) for a partitioned one."""
    layout = read_partitions(root)
    return [Path(root)] if layout is None else layout.dirs(root, strategy)


def refuse_partitioned(root: str | os.PathLike[str], doing: str) -> None:
    """IndexFormatError when `root` is a partitioned index directory, which cannot be `doing` as a plain one."""
    layout = read_partitions(root)
    if layout is not None:
        raise IndexFormatError(Path(root), f"is a partitioned index ({layout.partitions} partitions, "
                               f"{PARTITIONS_FILE}) and cannot be {doing} as one index: use "
                               f"{DOCUMENT_DIR.format('<p>')} (lexical, semantic, attribute) or "
                               f"{QUERY_DIR.format('<p>')} (memory) under it, or `ltrr index --partitions "
                               f"{layout.partitions}` to rebuild it")


@dataclass(frozen=True)
class PartitionInfo:
    """What a document partition's directory says of itself: partition p of `partitions`, cut from
    a catalog of `catalog_entities`."""

    partition: int
    partitions: int
    catalog_entities: int


def partition_info(index: str | os.PathLike[str]) -> PartitionInfo | None:
    """The partition an index directory holds (its "partition" component); None for an index of
    a whole catalog (a plain index, or a memory partition, whose collection is the whole catalog)."""
    if not (Path(index) / PARTITION_COMPONENT).is_dir():
        return None
    params = ComponentReader(index, PARTITION_COMPONENT, verify=False).params
    return PartitionInfo(int(params["partition"]), int(params["partitions"]), int(params["catalog_entities"]))


def catalog_positions(root: str | os.PathLike[str]) -> dict[str, int]:
    """Entity id -> catalog position (0-based) of every entity of a partitioned index directory
    with document partitions, read from their "partition" components."""
    layout = read_partitions(root)
    if layout is None:
        raise IndexFormatError(Path(root), f"has no {PARTITIONS_FILE}: not a partitioned index")
    out: dict[str, int] = {}
    for p in range(layout.partitions):
        part = Path(root) / DOCUMENT_DIR.format(p)
        positions = ComponentReader(part, PARTITION_COMPONENT).read_array("positions.npy", mmap=False)
        out.update(zip(Collection.load(part).ids, positions.tolist(), strict=True))
    return out


# -- building -----------------------------------------------------------------------------------


def partition_collection(collection: Collection, ordinals: np.ndarray) -> Collection:
    """The collection of the entities at `ordinals` (int64, ascending), renumbered in that order,
    with every filter field and value of `collection` (empty bitmaps where none of them has it)."""
    members = BitMap(ordinals.astype(np.uint32))

    def local(bits: BitMap) -> BitMap:
        return BitMap(np.searchsorted(ordinals, (bits & members).to_array()).astype(np.uint32))

    bitmaps = {name: {value: local(bits) for value, bits in values.items()}
               for name, values in collection.bitmaps.items()}
    deleted = local(collection.deleted)
    return Collection([collection.ids[o] for o in ordinals.tolist()], collection.popularity[ordinals], deleted,
                      bitmaps)


def build_partitioned(entities: Sequence[Entity], root: str | os.PathLike[str], strategies: Sequence[str],
                      options: Mapping[str, Mapping[str, Any]] | None = None, *, partitions: int,
                      progress: bool = True) -> PartitionLayout:
    """Write the partitioned index directory (module docstring) of `entities` under `root`.

    options: per strategy name, its build options, as core.indexing.build_index takes them.
    partitions.json is removed first and written last: an interrupted build leaves none.
    """
    if not entities:
        raise ValueError("the catalog is empty: nothing to index")
    if (Path(root) / COLLECTION).exists():
        raise IndexFormatError(Path(root), f"holds a plain index: build {partitions} partitions in another "
                               "directory, or remove it first")
    for name in strategies:
        entry_for(name)
    layout_strategies = tuple(sorted(set(strategies)))
    assign = np.array([document_partition(e.id, partitions) for e in entities], dtype=np.int64)
    parts = [np.flatnonzero(assign == p) for p in range(partitions)]
    layout = PartitionLayout(partitions=partitions, entities=len(entities), counts=tuple(p.size for p in parts),
                             strategies=layout_strategies)
    out = Path(root)
    out.mkdir(parents=True, exist_ok=True)
    (out / PARTITIONS_FILE).unlink(missing_ok=True)
    _remove_stale(out, partitions)
    collection = Collection.build(entities)
    opts = options or {}
    document = [s for s in layout_strategies if s in DOCUMENT_STRATEGIES]
    if document:
        for p, ordinals in enumerate(parts):
            partition_collection(collection, ordinals).save(out / DOCUMENT_DIR.format(p))
            params = {"partition": p, "partitions": partitions, "catalog_entities": len(entities)}
            with ComponentWriter(out / DOCUMENT_DIR.format(p), PARTITION_COMPONENT, params) as w:
                w.write_array("positions.npy", ordinals.astype(np.int64))
    builders = {"lexical": _build_lexical, "semantic": _build_semantic, "attribute": _build_attribute,
                "memory": _build_memory}
    for name in layout_strategies:
        builders[name](entities, collection, out, parts, dict(opts.get(name, {})), progress)
    write_file_atomic(out / PARTITIONS_FILE, json.dumps(layout.to_json(), indent=1).encode())
    return layout


def _remove_stale(root: Path, partitions: int) -> None:
    """Remove partition directories of an earlier build with more partitions."""
    for pattern in (DOCUMENT_DIR, QUERY_DIR):
        p = partitions
        while (root / pattern.format(p) / COLLECTION).is_dir():
            shutil.rmtree(root / pattern.format(p))
            p += 1


def _each(parts: list[np.ndarray], desc: str, progress: bool) -> Iterable[tuple[int, np.ndarray]]:
    return tqdm(list(enumerate(parts)), desc=desc, unit="partition", disable=not progress)


def _build_lexical(entities: Sequence[Entity], collection: Collection, root: Path, parts: list[np.ndarray],
                   options: dict[str, Any], progress: bool) -> None:
    config = LexicalConfig.from_options(options, sorted({name for e in entities for name in e.fields}))
    show = progress and parse_flag(options.get("progress", True))
    postings = analyse(entities, config.fields, config.groups(), progress=show,
                       workers=int(options.get("workers", 1)))
    stats = CorpusStats.of_lengths(postings.lengths, config.groups())
    for p, ordinals in _each(parts, "lexical: writing partitions", show):
        sliced, df = partition_postings(postings, ordinals)
        write_postings(sliced, config, root / DOCUMENT_DIR.format(p), progress=False, corpus=(stats, df))


def _build_semantic(entities: Sequence[Entity], collection: Collection, root: Path, parts: list[np.ndarray],
                    options: dict[str, Any], progress: bool) -> None:
    show = progress and parse_flag(options.get("progress", True))
    config, encoder, keys, vecs = embed_catalog(entities, {**options, "progress": show})
    local = np.full(len(entities), -1, dtype=np.int64)
    for ordinals in parts:
        local[ordinals] = np.arange(ordinals.size)
    owner = np.empty(len(entities), dtype=np.int64)
    for p, ordinals in enumerate(parts):
        owner[ordinals] = p
    for p, _ in _each(parts, "semantic: indexing partitions", show):
        held = owner[keys] == p
        write_vectors(root / DOCUMENT_DIR.format(p), config, encoder, local[keys[held]], vecs[held])


def _build_attribute(entities: Sequence[Entity], collection: Collection, root: Path, parts: list[np.ndarray],
                     options: dict[str, Any], progress: bool) -> None:
    tables = attribute_tables(entities, collection)
    top = float(collection.popularity.max())
    for p, ordinals in _each(parts, "attribute: writing partitions", progress):
        members = BitMap(ordinals.astype(np.uint32))
        write_tables(partition_tables(tables, collection, members), root / DOCUMENT_DIR.format(p),
                     entities=ordinals.size, members=members, max_popularity=top)


def _build_memory(entities: Sequence[Entity], collection: Collection, root: Path, parts: list[np.ndarray],
                  options: dict[str, Any], progress: bool) -> None:
    pairs = predict(entities, collection.popularity, int(options.get("max_per_query", DEFAULT_MAX_PER_QUERY)))
    owner = {key: query_partition(key, len(parts)) for key in pairs}
    for p, _ in _each(parts, "memory: writing partitions", progress):
        collection.save(root / QUERY_DIR.format(p))
        write_predicted(root / QUERY_DIR.format(p), {k: v for k, v in pairs.items() if owner[k] == p},
                        len(entities))


# -- maintenance --------------------------------------------------------------------------------


def delete_partitioned(root: str | os.PathLike[str], entity_ids: Iterable[str]) -> int:
    """Mark entities deleted in a partitioned index directory: in the document partition holding
    each and in every memory partition (whose collection is the whole catalog). Returns how many
    were newly deleted; an id in no partition raises NotFoundError before anything is written."""
    layout = read_partitions(root)
    if layout is None:
        raise IndexFormatError(Path(root), f"has no {PARTITIONS_FILE}: not a partitioned index")
    ids = list(dict.fromkeys(entity_ids))
    by_part: dict[int, list[str]] = {}
    for eid in ids:
        by_part.setdefault(document_partition(eid, layout.partitions), []).append(eid)
    dirs = [Path(root) / DOCUMENT_DIR.format(p) for p in range(layout.partitions)]
    touched: list[tuple[Path, Collection, list[str]]] = []
    if any(s in DOCUMENT_STRATEGIES for s in layout.strategies):
        for p, part_ids in sorted(by_part.items()):
            touched.append((dirs[p], Collection.load(dirs[p]), part_ids))
    if any(s in QUERY_STRATEGIES for s in layout.strategies):
        touched += [(d, Collection.load(d), ids) for d in layout.dirs(root, QUERY_STRATEGIES[0])]
    for _, collection, part_ids in touched:
        missing = [eid for eid in part_ids if eid not in collection.ordinal]
        if missing:
            raise NotFoundError(f"entity {missing[0]!r} is not in the index")
    newly = {eid for _, c, part_ids in touched for eid in part_ids if c.ordinal[eid] not in c.deleted}
    for path, collection, part_ids in touched:
        collection.delete(part_ids)
        collection.save(path)
    return len(newly)
