"""Live shards (services.shard with a catalog log, core.live_shard) served in process with a test
log: every strategy finds an upsert, finds a change's new text and not the old, never finds a
deleted entity, and filters on a new value right after the write; the lexical shard merges while
searches run, restarts from its merged base, and its merged base is a fresh build of the catalog."""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from core.catalog import Entity
from core.indexing import build_index, open_strategy
from core.live import Delete, Upsert, Write
from core.live_dir import CURRENT
from core.query import Filter, make_query
from core.storage import ComponentReader
from services import shard_live
from services.metrics_shard import ShardCollector
from services.shard import ShardConfig
from services.shard_live import lower_priority
from tests.core.live_writes import append_order, final_catalog, random_writes, same_lists
from tests.services.live_shard_server import ListLog, LiveServer, track

Serve = Callable[..., LiveServer]  # serve(strategy, log, **ShardConfig fields): a started live shard
ALL = ("lexical", "semantic", "attribute", "memory")
OPTIONS = {"lexical": {"fields": "title^2,artist", "progress": False},
           "semantic": {"encoder": "hashing", "progress": False, "cache": "off"}}


def config(built: Path, strategy: str, live_dir: Path, **kwargs: object) -> ShardConfig:
    options = {"state_dir": str(live_dir / "memory")} if strategy == "memory" else {}
    return ShardConfig(strategy=strategy, index=str(built / "index"), catalog=str(built / "catalog.jsonl"),
                       live_dir=str(live_dir / "bases"), options=options, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def serve(built: Path, tmp_path: Path) -> Iterator[Serve]:
    servers: list[LiveServer] = []

    def start(strategy: str, log: ListLog, **kwargs: object) -> LiveServer:
        servers.append(LiveServer(config(built, strategy, tmp_path, **kwargs), log))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


@pytest.mark.parametrize("strategy", ALL)
def test_upsert_change_delete_and_filter(serve: Serve, strategy: str, catalog: list[Entity]) -> None:
    log = ListLog()
    shard = serve(strategy, log)
    assert shard.position().applied_position == 0
    shard.wait_applied(log.append([Upsert(track("n1", "quixotic zeppelin", catalog[0], genre=("zydecore",)))]))
    assert shard.ids("quixotic zeppelin")[:1] == ["n1"]
    assert shard.ids("quixotic zeppelin", filters=[Filter(field="genre", values=("zydecore",))]) == ["n1"]
    shard.wait_applied(log.append([Upsert(track("n1", "marmalade harbour", catalog[0]))]))
    assert shard.ids("marmalade harbour")[:1] == ["n1"]
    # semantic ranks every entity: the old text must no longer bring n1 near the top
    assert "n1" not in shard.ids("quixotic zeppelin", 5 if strategy == "semantic" else 300)
    shard.wait_applied(log.append([Delete("n1"), Delete(catalog[5].id)]))
    for text in ("marmalade harbour", "quixotic zeppelin", catalog[5].fields["title"]):
        assert not {"n1", catalog[5].id} & set(shard.ids(text, 300))
    described = shard.client.describe().params
    assert described["catalog.applied_position"] == "4" and described["live_entities"] == str(len(catalog) - 1)


def test_a_new_artist_is_understood_with_one_typo(serve: Serve, catalog: list[Entity]) -> None:
    log = ListLog()
    shard = serve("attribute", log)
    name = "Zorblatt Quimby"
    entity = track("a1", "Glass Orchard", catalog[0], artist=name)
    entity = Entity(id="a1", type="track", fields={"title": "Glass Orchard", "artist": name},
                    attributes={**entity.attributes, "artist": name}, popularity=50.0)
    before = shard.client.understand("zorblat quimby").interpretations  # cached by the strategy
    assert all(s.value != name for i in before for s in i.slots)
    shard.wait_applied(log.append([Upsert(entity)]))
    top = shard.client.understand("zorblat quimby").interpretations[0]
    assert [(s.field, s.value) for s in top.slots] == [("artist", name)]
    assert shard.ids("zorblat quimby")[:1] == ["a1"]


def writes_for(catalog: list[Entity], n: int, seed: int) -> list[Write]:
    fresh = [track(f"f{i}", e.fields["title"] + " extra", e) for i, e in enumerate(catalog[:60])]
    return random_writes(catalog, fresh, n, seed)


QUERIES = ["love", "night dance", "artist 3", "gold city", "blue moon summer", "extra"]


def answers(shard: LiveServer) -> list[list[tuple[str, float]]]:
    out = []
    for q in QUERIES:
        out.append([(c.entity_id, c.score) for c in shard.client.retrieve(q, 20).candidates])
        out.append([(c.entity_id, c.score) for c in shard.client.retrieve(
            q, 20, filters=[Filter(field="decade", values=("1990s",))]).candidates])
    return out


@pytest.mark.parametrize("strategy", ["attribute", "memory", "lexical"])
def test_results_equal_a_fresh_build_and_survive_a_restart(serve: Serve, strategy: str, catalog: list[Entity],
                                                           tmp_path: Path) -> None:
    """Attribute and memory (in place) equal a fresh build of the final catalog at once; lexical
    after its merge (before it, dead copies count in its statistics, as in Lucene)."""
    log = ListLog()
    writes = writes_for(catalog, 200, seed=3)
    for i in range(0, len(writes), 7):
        log.append(writes[i:i + 7])
    shard = serve(strategy, log, merge_entities=0)
    shard.wait_applied(len(log.records))
    if strategy == "lexical":
        assert shard.service.tail is not None and shard.service.tail.request_merge()
        wait_for(lambda: shard.position().base_position == len(log.records))
    live = answers(shard)
    final = append_order(catalog, writes) if strategy == "lexical" else final_catalog(catalog, writes)
    build_index(final, tmp_path / "fresh", [strategy], OPTIONS)
    fresh = open_strategy(tmp_path / "fresh", strategy, {"state_dir": str(tmp_path / "fresh-state")})
    want = []
    for q in QUERIES:
        for filters in ([], [Filter(field="decade", values=("1990s",))]):
            hits = fresh.retrieve(make_query(q, filters=filters), 20, fresh.collection.allowed(filters))
            want.append([(fresh.collection.ids[o], float(s)) for o, s in zip(hits.ordinals, hits.scores, strict=True)])
    assert [[eid for eid, _ in a] for a in live] == [[eid for eid, _ in w] for w in want]
    assert [[s for _, s in a] for a in live] == [pytest.approx([s for _, s in w]) for w in want]
    shard.close()
    again = serve(strategy, log, merge_entities=0)
    again.wait_applied(len(log.records))
    assert answers(again) == live


def wait_for(condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.02)


def test_merges_while_searching_then_restart_and_fresh_build(serve: Serve, catalog: list[Entity], tmp_path: Path
                                                             ) -> None:
    log = ListLog()
    shard = serve("lexical", log, merge_entities=40)
    failures: list[BaseException] = []
    searches = [0]
    done = threading.Event()

    def search() -> None:
        while not done.is_set():
            for q in QUERIES:
                try:
                    shard.client.retrieve(q, 20, filters=[Filter(field="decade", values=("1990s",))])
                    searches[0] += 1
                except BaseException as e:  # every failure is the finding
                    failures.append(e)
                    return

    searcher = threading.Thread(target=search)
    searcher.start()
    writes = writes_for(catalog, 400, seed=8)
    try:
        for i in range(0, len(writes), 10):
            shard.wait_applied(log.append(writes[i:i + 10]))
        wait_for(lambda: not shard.service.tail or shard.service.tail.request_merge())
        wait_for(lambda: shard.position().base_position == len(log.records))
    finally:
        done.set()
        searcher.join(60)
    assert not failures and searches[0] > 0
    assert int(shard.client.describe().params["catalog.merges"]) >= 2
    base = Path(tmp_path / "bases") / (tmp_path / "bases" / CURRENT).read_text()
    # the merge moves base_position, then removes the older bases: wait for that last step
    wait_for(lambda: sorted(p.name for p in (tmp_path / "bases").iterdir()) == sorted([CURRENT, base.name]))
    build_index(append_order(catalog, writes), tmp_path / "fresh", ["lexical"], OPTIONS)
    for component in ("lexical", "collection"):
        assert ComponentReader(base, component).files == ComponentReader(tmp_path / "fresh", component).files
    before = answers(shard)
    shard.close()
    again = serve("lexical", log, merge_entities=0)
    again.wait_applied(len(log.records))
    assert again.position().base_position == len(log.records)
    assert answers(again) == before


def test_semantic_restart_and_live_metrics(serve: Serve, catalog: list[Entity]) -> None:
    """The semantic shard replays the log into the same HNSW graph (same insertion order) after a
    restart; a live shard's scrape has its catalog position, pending entities and merges."""
    log = ListLog()
    writes = writes_for(catalog, 120, seed=5)
    for i in range(0, len(writes), 6):
        log.append(writes[i:i + 6])
    shard = serve("semantic", log)
    shard.wait_applied(len(log.records))
    before = answers(shard)
    metrics = {m.name: m.samples[0].value for m in ShardCollector(shard.service).collect() if m.samples}
    assert metrics["ltrr_shard_catalog_applied_position"] == len(log.records)
    assert metrics["ltrr_shard_catalog_pending_entities"] == sum(isinstance(w, Upsert) for w in writes)
    assert metrics["ltrr_shard_catalog_merges"] == 0
    shard.close()
    again = serve("semantic", log)
    again.wait_applied(len(log.records))
    assert answers(again) == before


def test_the_semantic_shard_checkpoints_while_serving_and_restarts_from_it(serve: Serve, catalog: list[Entity]
                                                                           ) -> None:
    """More than merge_entities writes start a checkpoint on the merge thread (core.live_checkpoint);
    a restarted shard starts from it (its base position) and answers as before (ties aside:
    same_lists)."""
    log = ListLog()
    shard = serve("semantic", log, merge_entities=30)
    writes = writes_for(catalog, 120, seed=9)
    for i in range(0, len(writes), 6):
        shard.wait_applied(log.append(writes[i:i + 6]))
    wait_for(lambda: shard.position().base_position > 60)
    checkpoint = shard.position().base_position
    assert int(shard.client.describe().params["catalog.merges"]) >= 2
    before = answers(shard)
    shard.close()  # waits for a checkpoint still running
    again = serve("semantic", log, merge_entities=0)
    again.wait_applied(len(log.records))
    assert again.position().base_position >= checkpoint and same_lists(answers(again), before)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread priorities are per thread on Linux only")
@pytest.mark.parametrize("idle", [False, True])
def test_lower_priority_changes_only_the_thread_it_runs_on(idle: bool) -> None:
    """The merge thread's initializer adds to its nice value, the encoding thread's sets SCHED_IDLE;
    the calling thread keeps its own; nice 0 changes nothing."""
    seen: dict[int, tuple[int, int]] = {}

    def on_a_thread(nice: int) -> None:
        def run() -> None:
            lower_priority(nice, idle=idle)()
            seen[nice] = (os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        thread = threading.Thread(target=run)
        thread.start()
        thread.join()

    policy, own = os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    on_a_thread(0)
    on_a_thread(3)
    assert seen[0] == (policy, own)
    assert seen[3] == ((os.SCHED_IDLE, own) if idle else (policy, min(19, own + 3)))
    assert (os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, threading.get_native_id())) == (policy, own)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread priorities are per thread on Linux only")
def test_a_batch_is_encoded_on_a_lower_priority_thread(serve: Serve, catalog: list[Entity]) -> None:
    """The semantic shard encodes a batch (before its lock) on a thread under SCHED_IDLE while the
    rest of the shard keeps its policy, so a busy host runs searches first; the write is then found."""
    log = ListLog()
    shard = serve("semantic", log, background_nice=5)
    live = shard.service.live
    assert live is not None
    writer = live.writer  # type: ignore[attr-defined]
    encode, seen = writer.prepare, []

    def recording(writes: object) -> None:
        seen.append((threading.current_thread().name, os.sched_getscheduler(0)))
        encode(writes)

    writer.prepare = recording
    shard.wait_applied(log.append([Upsert(track("n1", "quixotic zeppelin", catalog[0]))]))
    assert os.sched_getscheduler(0) != os.SCHED_IDLE
    assert seen == [(seen[0][0], os.SCHED_IDLE)] and seen[0][0].startswith("ltrr-encode")
    assert shard.ids("quixotic zeppelin")[:1] == ["n1"]


@pytest.mark.parametrize("freeze", [True, False])
def test_a_live_shard_freezes_what_its_writes_built(built: Path, tmp_path: Path, catalog: list[Entity],
                                                    monkeypatch: pytest.MonkeyPatch, freeze: bool) -> None:
    """With freeze (a server process's choice), once FREEZE_WRITES writes are applied, the shard
    freezes (what the process holds then, its writes' entities among it, leaves the collector's
    reach); a later write's entity is not frozen until the next FREEZE_WRITES; everything stays
    searchable. Without, nothing is frozen."""
    monkeypatch.setattr(shard_live, "FREEZE_WRITES", 5)
    log = ListLog()
    shard = LiveServer(config(built, "attribute", tmp_path), log, freeze=freeze)
    try:
        first = [track(f"n{i}", f"quixotic zeppelin {i}", catalog[0], genre=("zydecore",)) for i in range(5)]
        shard.wait_applied(log.append([Upsert(e) for e in first]))
        if freeze:
            ids = {id(e) for e in first}
            wait_for(lambda: not any(id(o) in ids for o in gc.get_objects()))
        later = track("n9", "quixotic zeppelin 9", catalog[0], genre=("zydecore",))  # made after the freeze
        shard.wait_applied(log.append([Upsert(later)]))
        tracked = {id(o) for o in gc.get_objects()}
        assert (id(first[0]) in tracked) is not freeze
        assert id(later) in tracked
        assert set(shard.ids("quixotic zeppelin", 20)) >= {"n0", "n4", "n9"}
    finally:
        shard.close()
        gc.unfreeze()
