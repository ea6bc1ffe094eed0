"""Writes applied while searches run, in every live strategy sharing one LiveCollection: no search
fails, none returns an entity deleted before it started, and every write is found at the end."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import numpy as np

from core.attribute.index import AttributeStrategy
from core.attribute.live import LiveAttribute
from core.catalog import Entity, demo_catalog_path, load_jsonl
from core.indexing import build_index, open_strategy
from core.live import Delete, LiveCollection, SupportsWrite, Upsert, Write, apply_writes
from core.memory.index import MemoryStrategy
from core.memory.live import LiveMemory
from core.query import make_query
from core.semantic.index import SemanticStrategy
from core.semantic.live import LiveSemantic
from core.types import Strategy


def open_live(entities: list[Entity], root: Path) -> tuple[LiveCollection, list[Strategy], list[SupportsWrite]]:
    build_index(entities, root, ["semantic", "attribute", "memory"],
                {"semantic": {"encoder": "hashing", "cache": "off", "progress": False, "exact_below": 0}})
    semantic = open_strategy(root, "semantic")
    attribute = open_strategy(root, "attribute")
    memory = open_strategy(root, "memory", {"state_dir": str(root / "state")})
    assert isinstance(semantic, SemanticStrategy) and isinstance(attribute, AttributeStrategy)
    assert isinstance(memory, MemoryStrategy)
    live = LiveCollection(entities, semantic.collection)
    for s in (semantic, attribute, memory):
        s.collection = live
    return live, [semantic, attribute, memory], [LiveSemantic(semantic), LiveAttribute(attribute), LiveMemory(memory)]


def renamed(b: int) -> str:
    """A distinctive new title for batch `b` (two made-up words, so every strategy can tell them apart)."""
    rng = np.random.default_rng(1000 + b)
    return " ".join("".join(rng.choice(list("bcdfghklmnprstvz"), 7)) for _ in range(2))


def batches(base: list[Entity], extra: list[Entity], rng: np.random.Generator) -> list[list[Write]]:
    """40 batches: 3 new tracks (fresh ids), 1 delete of a base track, 1 title change each."""
    out = []
    for b in range(40):
        writes: list[Write] = [Upsert(dataclasses.replace(extra[3 * b + i], id=f"new-{b}-{i}")) for i in range(3)]
        writes.append(Delete(base[b].id))
        victim = base[100 + b]
        writes.append(Upsert(dataclasses.replace(victim, fields={**victim.fields, "title": renamed(b)})))
        out.append(writes)
    rng.shuffle(out)
    return out


def test_writes_while_searching(tmp_path: Path) -> None:
    music = load_jsonl(demo_catalog_path())
    base, extra = music[:600], music[600:720]
    live, strategies, writers = open_live(base, tmp_path)
    plan = batches(base, extra, np.random.default_rng(5))
    texts = [e.fields["title"] for e in base[:80:3]] + [e.fields["artist"] for e in extra[::4]]
    failures: list[BaseException] = []
    stale: list[str] = []
    done = threading.Event()

    def search(strategy: Strategy) -> None:
        while not done.is_set():
            for text in texts:
                deleted = live.deleted  # deletions before this search started
                try:
                    hits = strategy.retrieve(make_query(text), 20, live.allowed([]))
                except BaseException as e:  # every failure is the finding
                    failures.append(e)
                    return
                stale.extend(live.ids[o] for o in hits.ordinals.tolist() if o in deleted)

    def write() -> None:
        try:
            for writes in plan:
                apply_writes(live, writers, writes)
        finally:
            done.set()

    threads = [threading.Thread(target=search, args=(s,)) for s in strategies] + [threading.Thread(target=write)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not failures and not stale
    for s in strategies:
        for b in (0, 17, 39):
            ids = [live.ids[o] for o in s.retrieve(make_query(renamed(b)), 5, live.allowed([])).ordinals.tolist()]
            assert base[100 + b].id in ids, (s.kind, renamed(b))
            title = extra[3 * b + 1].fields["title"]
            ids = [live.ids[o] for o in s.retrieve(make_query(title), 20, live.allowed([])).ordinals.tolist()]
            assert f"new-{b}-1" in ids or any(e.fields["title"] == title for e in base), (s.kind, title)
