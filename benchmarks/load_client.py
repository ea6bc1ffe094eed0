"""The load generator's process for benchmarks.load: simulated users' searches and feedback sent
open-loop (benchmarks.load_gen) to a broker address, in a process of its own so that the
generator's CPU is not the benchmark's main process's (LoadGenerator: one spawned process, steps
sent over a pipe).

Traffic is core.simulator's: the users of a seed (core.simulator.users.UserSimulator over the demo
catalog) with their four intents, contexts and typos, drawn once into a pool that requests cycle
through (popular searches repeat, as in production). Each step goes on where the previous step of the
process stopped, so a step does not replay the searches of the one before (which would make every
cache look warmer than the stream makes it). On a share of the OK answers (a seeded coin
per request) the simulated listener reacts to the ranked results (core.simulator.runner.user_action)
and every event goes back as Feedback, in order, in a task of its own that the step awaits before it
ends (bounded by the client deadline); feedback latency is not part of the search latency.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
from dataclasses import dataclass
from multiprocessing.connection import Connection
from types import TracebackType

import grpc
import numpy as np

from benchmarks.load_gen import DEFAULT_DEADLINE_S, open_loop
from benchmarks.load_stats import OK, Arrivals, StepRecord, arrival_offsets
from core.simulator.listening import ListeningModel
from core.simulator.runner import user_action
from core.simulator.users import SimSearch, SimulatorConfig, UserSimulator
from ltrr.v1 import broker_pb2, broker_pb2_grpc
from services import convert

DEFAULT_POOL = 4096
DEFAULT_FEEDBACK_SHARE = 0.3
CHANNELS = 4  # separate HTTP/2 connections, so one connection's stream limit is never the bottleneck


@dataclass(frozen=True, kw_only=True)
class StepSpec:
    """One step: `rate` searches/s to the broker at `address` for `duration_s` seconds with the given
    arrivals (seeded by `seed`), each asking for `k` results within `budget_ms` and given
    `deadline_s` seconds by the client; Feedback on `feedback_share` of the OK answers. `address`
    may name several brokers of one cluster, comma-separated: the searches take them in turn, and
    a search's Feedback goes to the broker that answered it."""

    address: str
    rate: float
    duration_s: float
    arrivals: Arrivals = Arrivals.POISSON
    seed: int = 0
    budget_ms: int = 100
    k: int = 10
    feedback_share: float = DEFAULT_FEEDBACK_SHARE
    deadline_s: float = DEFAULT_DEADLINE_S

    def __post_init__(self) -> None:
        if not all(part and part == part.strip() for part in self.address.split(",")):
            raise ValueError(f"`address` must be host:port, or several comma-separated without spaces, but got "
                             f"{self.address!r}")
        if not 0.0 <= self.feedback_share <= 1.0:
            raise ValueError(f"`feedback_share` must be in [0, 1], but got {self.feedback_share}")
        if not (math.isfinite(self.deadline_s) and self.deadline_s > 0):
            raise ValueError(f"`deadline_s` must be finite and > 0, but got {self.deadline_s}")
        if not 5 <= self.budget_ms <= 10_000:
            raise ValueError(f"`budget_ms` must be in [5, 10000] (the broker's range), but got {self.budget_ms}")


class Traffic:
    """A pool of `size` simulated searches over `world_entities`'s catalog (seeded), with the
    listener that reacts to their results."""

    def __init__(self, size: int = DEFAULT_POOL, seed: int = 0) -> None:
        from core.catalog import demo_catalog_path, load_catalog
        from core.simulator.world import MusicWorld

        world = MusicWorld.from_entities(load_catalog(demo_catalog_path()))
        self.users = UserSimulator(world, SimulatorConfig(seed=seed))
        self.searches: list[SimSearch] = [self.users.next_search() for _ in range(size)]
        self.ordinal = {e: i for i, e in enumerate(world.ids)}
        self.ids = world.ids
        self.listener = ListeningModel()

    def requests(self, k: int, budget_ms: int) -> list[broker_pb2.SearchRequest]:
        """The pool as SearchRequests (built before a step, so the step sends without building)."""
        return [broker_pb2.SearchRequest(query=convert.query_to_proto(s.text, context=s.context), k=k,
                                         budget_ms=budget_ms) for s in self.searches]

    def reactions(self, i: int, response: broker_pb2.SearchResponse, rng: np.random.Generator
                  ) -> list[broker_pb2.FeedbackRequest]:
        """The Feedback of the user of pool search i on `response`, events in order."""
        sim = self.searches[i % len(self.searches)]
        shown = np.array([self.ordinal[r.entity_id] for r in response.results if r.entity_id in self.ordinal],
                         dtype=np.int64)
        return [broker_pb2.FeedbackRequest(decision_id=response.decision_id, entity_id=self.ids[r.entity],
                                           type=int(r.type), value=r.value, event_id=f"{response.decision_id}:{j}")
                for j, r in enumerate(user_action(self.listener, self.users, sim, shown, rng))]


class Sender:
    """The calls of one step (stubs on CHANNELS connections per broker, taken in turn)."""

    def __init__(self, traffic: Traffic, stubs: list[broker_pb2_grpc.BrokerStub], spec: StepSpec,
                 start: int = 0) -> None:
        """start: the pool position of the step's first search (its i = 0)."""
        self.traffic, self.stubs, self.spec, self.start = traffic, stubs, spec, start
        self.requests = traffic.requests(spec.k, spec.budget_ms)
        self.rng = np.random.default_rng([spec.seed, 1])
        self.feedback: set[asyncio.Task[None]] = set()
        self.feedback_sent = self.feedback_errors = 0

    async def search(self, i: int, remaining_s: float) -> tuple[str, bool]:
        stub = self.stubs[i % len(self.stubs)]
        i += self.start
        try:
            response = await stub.Search(self.requests[i % len(self.requests)], timeout=remaining_s)
        except grpc.aio.AioRpcError as err:
            return err.code().name, False
        if self.rng.random() < self.spec.feedback_share:
            task = asyncio.create_task(self.send_feedback(stub, self.traffic.reactions(i, response, self.rng)))
            self.feedback.add(task)
            task.add_done_callback(self.feedback.discard)
        return OK, response.degraded

    async def send_feedback(self, stub: broker_pb2_grpc.BrokerStub, events: list[broker_pb2.FeedbackRequest]) -> None:
        for event in events:
            self.feedback_sent += 1
            try:
                await stub.Feedback(event, timeout=self.spec.deadline_s)
            except grpc.aio.AioRpcError:
                self.feedback_errors += 1

    async def drain(self) -> None:
        """Wait for the feedback still in flight, at most one client deadline; what is left then is
        cancelled and counted as one failed call each."""
        if not self.feedback:
            return
        _, pending = await asyncio.wait(list(self.feedback), timeout=self.spec.deadline_s)
        for task in pending:
            task.cancel()
        self.feedback_errors += len(pending)


class Worker:
    """The generator process's state: its traffic, one event loop, CHANNELS channels per broker
    address (interleaved, so consecutive searches go to different brokers)."""

    def __init__(self, pool: int, seed: int) -> None:
        import uvloop

        self.traffic = Traffic(pool, seed)
        self.loop = uvloop.new_event_loop()
        self.stubs: dict[str, list[broker_pb2_grpc.BrokerStub]] = {}
        self.channels: list[grpc.aio.Channel] = []
        self.sent = 0  # searches scheduled by the steps so far: the next step's pool position

    def _stubs(self, address: str) -> list[broker_pb2_grpc.BrokerStub]:
        if address not in self.stubs:
            channels = [grpc.aio.insecure_channel(one, options=[("grpc.use_local_subchannel_pool", 1)])
                        for _ in range(CHANNELS) for one in address.split(",")]
            self.channels += channels
            self.stubs[address] = [broker_pb2_grpc.BrokerStub(ch) for ch in channels]
        return self.stubs[address]

    async def _step(self, spec: StepSpec) -> StepRecord:
        offsets = arrival_offsets(spec.rate, spec.duration_s, spec.arrivals, spec.seed)
        sender = Sender(self.traffic, self._stubs(spec.address), spec, self.sent)
        self.sent += len(offsets)
        record = await open_loop(sender.search, offsets, deadline_s=spec.deadline_s)
        await sender.drain()
        return StepRecord(scheduled_s=record.scheduled_s, latency_ms=record.latency_ms, lag_ms=record.lag_ms,
                          codes=record.codes, degraded=record.degraded, feedback_sent=sender.feedback_sent,
                          feedback_errors=sender.feedback_errors)

    def step(self, spec: StepSpec) -> StepRecord:
        asyncio.set_event_loop(self.loop)
        return self.loop.run_until_complete(self._step(spec))


def _serve(pool: int, seed: int, requests: Connection) -> None:
    """The generator process: build the worker, then run every StepSpec received until None."""
    worker = Worker(pool, seed)
    while (spec := requests.recv()) is not None:
        requests.send(worker.step(spec))


class LoadGenerator:
    """The generator in its own process (spawned: no gRPC state is inherited), one step at a time.
    Use as a context manager; leaving it on an error or Ctrl-C terminates the process at once."""

    def __init__(self, pool: int = DEFAULT_POOL, seed: int = 0) -> None:
        context = multiprocessing.get_context("spawn")
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(pool, seed, child), daemon=True, name="load-generator")
        self.process.start()
        child.close()

    def step(self, spec: StepSpec) -> StepRecord:
        self.connection.send(spec)
        try:
            record = self.connection.recv()
        except EOFError:
            raise RuntimeError(f"the load generator died (exit code {self.process.exitcode})") from None
        if not isinstance(record, StepRecord):
            raise RuntimeError(f"the load generator answered {type(record).__name__}, not a StepRecord")
        return record

    def close(self, *, wait: bool = True) -> None:
        if wait and self.process.is_alive():
            self.connection.send(None)
            self.process.join(10.0)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join()
        self.connection.close()

    def __enter__(self) -> LoadGenerator:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.close(wait=kind is None)
