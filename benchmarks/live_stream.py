"""The write side of benchmarks.live: new tracks, a paced write stream and a visibility prober.

New tracks are real demo tracks under new ids and new titles: each copies a seeded catalog track's
artist, album, genres and other attributes (a new release of a known artist) and takes a title no
catalog track has (two catalog title words and a made-up word), so an exact-title search has one
right answer. A new artist's track takes a made-up name too.

A write is visible when an exact-title Retrieve on every replica of the lexical partition that
owns it returns it and every shard replica (of every strategy and partition) reports a catalog
position at or past the write's (Shard.CatalogPosition): then every strategy that owns it serves
it. The prober polls every PROBE_INTERVAL_S.

The prober is the benchmark's instrument, not part of the write load: its polls and one
exact-title Retrieve per write cost the cluster (and this process) CPU of their own. ProbeLoad
sends the same traffic without writes (the same polls, exact-title Retrieves of catalog tracks at
the write rate), so a baseline run under it differs from the write phase by the writes alone.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Self

import grpc
import numpy as np

from core.catalog import Entity, demo_catalog_path, load_catalog
from core.partitions import document_partition
from ltrr.v1 import catalog_pb2, catalog_pb2_grpc, shard_pb2, shard_pb2_grpc
from services import convert, convert_catalog

PROBE_INTERVAL_S = 0.05
SYLLABLES = ("ka", "lo", "vi", "re", "zu", "mo", "sa", "ne", "tor", "quil", "dra", "fen", "ix", "bel", "yun", "va")
WRITE_TIMEOUT_S = 10.0
WRITERS = 8  # writes in flight at once, so a slow acknowledgement never delays the next due write
CONNECT_TIMEOUT_S = 10.0


def made_up_word(rng: np.random.Generator, syllables: int = 3) -> str:
    return "".join(rng.choice(SYLLABLES, size=syllables)).capitalize()


@functools.cache
def demo_catalog() -> tuple[Entity, ...]:
    """The demo catalog, read once per process (28k entities: ~0.5 s of CPU each time, which a
    benchmark must not spend in the middle of a measured step)."""
    return tuple(load_catalog(demo_catalog_path()))


def new_tracks(n: int, seed: int = 0, *, popularity: float = 80.0) -> list[Entity]:
    """`n` new releases of catalog artists (see the module docstring), ids live-<seed>-<i>."""
    catalog = [e for e in demo_catalog() if e.fields.get("title")]
    rng = np.random.default_rng(seed)
    words = sorted({w for e in catalog for w in e.fields["title"].split() if w.isalpha() and len(w) > 3})
    out, titles = [], set()
    for i in range(n):
        source = catalog[int(rng.integers(len(catalog)))]
        title = f"{rng.choice(words)} {made_up_word(rng)} {rng.choice(words)}"
        while title.lower() in titles:
            title += f" {made_up_word(rng, 2)}"
        titles.add(title.lower())
        out.append(replace(source, id=f"live-{seed}-{i}", fields={**source.fields, "title": title},
                           popularity=popularity, vector=None))
    return out


def new_artist_track(seed: int = 0) -> Entity:
    """A track by an artist whose made-up name no catalog entity has."""
    track = new_tracks(1, seed + 1000)[0]
    rng = np.random.default_rng(seed + 2000)
    name = f"{made_up_word(rng, 3)} {made_up_word(rng, 4)}"
    return replace(track, id=f"live-artist-{seed}", fields={**track.fields, "artist": name},
                   attributes={**track.attributes, "artist": name})


def one_typo(name: str) -> str:
    """`name` with one substitution in the middle of its longest word (a Damerau-Levenshtein 1 edit)."""
    words = name.split()
    longest = max(range(len(words)), key=lambda i: len(words[i]))
    w = words[longest]
    mid = len(w) // 2
    words[longest] = w[:mid] + ("x" if w[mid] != "x" else "q") + w[mid + 1:]
    return " ".join(words)


def ready(channel: grpc.Channel, timeout_s: float) -> grpc.Channel:
    """`channel` once it is connected; grpc.FutureTimeoutError if it is not within `timeout_s`."""
    grpc.channel_ready_future(channel).result(timeout=timeout_s)
    return channel


def upsert(entity: Entity, version: int = 0) -> catalog_pb2.CatalogWrite:
    return catalog_pb2.CatalogWrite(upsert=convert_catalog.entity_to_proto(entity), version=version)


def delete(entity_id: str, version: int = 0) -> catalog_pb2.CatalogWrite:
    return catalog_pb2.CatalogWrite(delete_id=entity_id, version=version)


@dataclass
class Written:
    """One write of a stream: when it was due, acknowledged (perf_counter seconds) and where."""

    entity_id: str
    title: str
    deletes: bool
    due: float
    acked: float | None = None
    position: int = 0
    error: str = ""
    visible: float | None = None


@dataclass
class WriteStream:
    """Writes `writes` at `rate` per second, `batch` per Catalog.Write (a batch is due when its first
    write is; paced by schedule, WRITERS calls in flight at once); `done` is set once every write
    has an answer."""

    address: str
    writes: Sequence[tuple[catalog_pb2.CatalogWrite, str]]  # (write, exact title)
    rate: float
    batch: int = 1
    written: list[Written] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    channel: grpc.Channel | None = field(default=None, repr=False)

    def connect(self, timeout_s: float = CONNECT_TIMEOUT_S) -> Self:
        """Open the channel to the broker and wait until it is connected, so that a stream started
        later spends its first due time writing, not connecting."""
        self.channel = ready(grpc.insecure_channel(self.address), timeout_s)
        return self

    def start(self) -> WriteStream:
        threading.Thread(target=self._run, daemon=True, name="write-stream").start()
        return self

    def _run(self) -> None:
        channel = self.channel if self.channel is not None else grpc.insecure_channel(self.address)
        stub = catalog_pb2_grpc.CatalogStub(channel)
        start = time.perf_counter()
        with ThreadPoolExecutor(WRITERS) as pool:
            for i in range(0, len(self.writes), self.batch):
                due = start + i / self.rate
                if (wait := due - time.perf_counter()) > 0:
                    time.sleep(wait)
                chunk = self.writes[i:i + self.batch]
                ws = [Written(w.delete_id if w.WhichOneof("operation") == "delete_id" else w.upsert.id, title,
                              w.WhichOneof("operation") == "delete_id", due) for w, title in chunk]
                self.written += ws
                pool.submit(self._call, stub, [w for w, _ in chunk], ws)
        channel.close()
        self.done.set()

    @staticmethod
    def _call(stub: catalog_pb2_grpc.CatalogStub, writes: list[catalog_pb2.CatalogWrite], ws: list[Written]) -> None:
        try:
            response = stub.Write(catalog_pb2.CatalogWriteRequest(writes=writes), timeout=WRITE_TIMEOUT_S)
        except grpc.RpcError as err:
            for w in ws:
                w.error = err.code().name
            return
        acked = time.perf_counter()
        for w, result in zip(ws, response.results, strict=True):
            w.position, w.acked = result.position, acked


class Prober:
    """On a thread: every PROBE_INTERVAL_S, the applied catalog position of every shard replica, then an
    exact-title Retrieve on every lexical replica for each acknowledged upsert not yet seen whose
    position every replica has reached; sets Written.visible on the first probe that finds it."""

    def __init__(self, shards: Sequence[tuple[str, int, str]], streams: Sequence[WriteStream]) -> None:
        self.channels = {address: grpc.insecure_channel(address) for _, _, address in shards}
        self.stubs = {address: shard_pb2_grpc.ShardStub(ch) for address, ch in self.channels.items()}
        self.lexical = [(p, address) for name, p, address in shards if name == "lexical"]
        self.partitions = 1 + max(p for p, _ in self.lexical)
        self.streams = streams
        self.stopping = threading.Event()
        self.errors = 0
        self.thread = threading.Thread(target=self._run, daemon=True, name="prober")

    def connect(self, timeout_s: float = CONNECT_TIMEOUT_S) -> Self:
        """Wait until every channel is connected, so that probing started later spends nothing on it."""
        for ch in self.channels.values():
            ready(ch, timeout_s)
        return self

    def __enter__(self) -> Prober:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        self.thread.join()
        self.close()

    def close(self) -> None:
        for ch in self.channels.values():
            ch.close()

    def applied(self) -> int:
        """The smallest catalog position every shard replica has applied."""
        return min(stub.CatalogPosition(shard_pb2.CatalogPositionRequest(), timeout=2.0).applied_position
                   for stub in self.stubs.values())

    def found(self, title: str, entity_id: str) -> bool:
        """On every replica of the lexical partition that owns `entity_id`."""
        query, owner = convert.query_to_proto(title), document_partition(entity_id, self.partitions)
        return all(entity_id in {c.entity_id for c in self.stubs[a].Retrieve(
            shard_pb2.RetrieveRequest(query=query, quota=10), timeout=2.0).candidates}
            for p, a in self.lexical if p == owner)

    def _run(self) -> None:
        while not self.stopping.wait(PROBE_INTERVAL_S):
            try:
                applied = self.applied()
                for stream in self.streams:
                    for w in list(stream.written):
                        if (w.visible is None and w.acked is not None and not w.deletes and w.position <= applied
                                and self.found(w.title, w.entity_id)):
                            w.visible = time.perf_counter()
            except grpc.RpcError:
                self.errors += 1


class ProbeLoad(Prober):
    """The Prober's traffic without writes (module docstring): every PROBE_INTERVAL_S the same
    position polls, then exact-title Retrieves of `tracks` (existing ones, cycled) at `rate` per second."""

    def __init__(self, shards: Sequence[tuple[str, int, str]], tracks: Sequence[Entity], rate: float) -> None:
        super().__init__(shards, [])
        self.tracks, self.rate, self.sent = tracks, rate, 0

    def _run(self) -> None:
        started = time.perf_counter()
        while not self.stopping.wait(PROBE_INTERVAL_S):
            try:
                self.applied()
                while self.sent < (time.perf_counter() - started) * self.rate:
                    track = self.tracks[self.sent % len(self.tracks)]
                    self.sent += 1
                    self.found(track.fields["title"], track.id)
            except grpc.RpcError:
                self.errors += 1


def visibility_s(streams: Sequence[WriteStream]) -> np.ndarray:
    """Seconds from acknowledgement to visible, of every acknowledged upsert (inf: never seen)."""
    return np.array([(w.visible - w.acked) if w.visible is not None else np.inf
                     for s in streams for w in s.written if w.acked is not None and not w.deletes])
