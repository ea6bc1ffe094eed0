"""Building and opening whole index directories: the shared collection plus one component per strategy."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from core.catalog import Entity
from core.collection import Collection
from core.partitioning import refuse_partitioned
from core.strategies import entry_for
from core.types import Strategy


def build_index(entities: Sequence[Entity], root: str | os.PathLike[str], strategies: Sequence[str],
                options: Mapping[str, Mapping[str, Any]] | None = None) -> Collection:
    """Write the collection and each named strategy's component under `root`.

    options: per strategy name, that strategy's build options (see each strategy's config).
    Each component is published atomically; a failure leaves earlier components in place.
    A partitioned index directory (core.partitioning) is refused: it is rebuilt with its partitions.
    """
    if not entities:
        raise ValueError("the catalog is empty: nothing to index")
    refuse_partitioned(root, "built")
    entries = [entry_for(name) for name in strategies]
    collection = Collection.build(entities)
    collection.save(root)
    for kind, entry in entries:
        entry.build(entities, collection, root, (options or {}).get(kind.value, {}))
    return collection


def open_strategy(root: str | os.PathLike[str], name: str, options: Mapping[str, Any] | None = None) -> Strategy:
    """Load the collection and the named strategy's component from `root` (verifying checksums).
    options: the strategy's run-time settings. A partitioned index directory is refused (serve
    its partitions' directories, core.partitioning)."""
    _, entry = entry_for(name)
    refuse_partitioned(root, "served")
    return entry.load(root, Collection.load(root), options or {})
