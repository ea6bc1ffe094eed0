"""A real memory shard process killed with SIGKILL mid-stream loses no acknowledged feedback.

Each round streams Learn batches from a thread, SIGKILLs the shard after a random delay, restarts it
on the same state directory and checks every event acknowledged so far (in any round): resending
them all is answered as duplicates only (the whole test runs well inside the shard's default
`dedup_window_s`, 1 hour), and each one's query retrieves its entity first.
Rounds: LTRR_DURABILITY_ROUNDS (default 3; the acceptance run uses 20, see benchmarks/structured.py).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest

from core.catalog import Entity
from core.indexing import build_index
from core.types import EventType, FeedbackEvent
from services.client import ShardClient
from services.process import ServerProcess, shard_args, spawn

ROUNDS = int(os.environ.get("LTRR_DURABILITY_ROUNDS", "3"))

pytestmark = pytest.mark.slow


def stream(address: str, entity_ids: list[str], round_: int, acked: list[FeedbackEvent], stop: threading.Event,
           seed: int) -> None:
    """Send batches until the shard dies; append each batch to `acked` once its Learn returned."""
    rng = np.random.default_rng(seed)
    n = 0
    with ShardClient(address, timeout=5.0) as client:
        while not stop.is_set():
            batch = []
            for _ in range(int(rng.integers(1, 20))):
                batch.append(FeedbackEvent(event_id=f"r{round_}-e{n}", query_text=f"durability r{round_} q{n}",
                                           entity_id=entity_ids[int(rng.integers(0, len(entity_ids)))],
                                           type=EventType.CLICK))
                n += 1
            try:
                response = client.learn(batch)
            except grpc.RpcError:
                return
            if response.accepted != len(batch):
                raise AssertionError(f"fresh batch answered {response}")
            acked.extend(batch)


def check(address: str, acked: list[FeedbackEvent]) -> None:
    with ShardClient(address, timeout=30.0) as client:
        for i in range(0, len(acked), 1000):
            chunk = acked[i:i + 1000]
            response = client.learn(chunk)
            assert (response.accepted, response.duplicates) == (0, len(chunk)), "acknowledged events were lost"
        for e in acked[::max(1, len(acked) // 200)]:
            top = client.retrieve(e.query_text, 1).candidates
            assert top and top[0].entity_id == e.entity_id, f"{e.event_id}: its pair is gone"


def test_sigkill_mid_stream_loses_no_acknowledged_event(tmp_path: Path, catalog: list[Entity]) -> None:
    index, state = tmp_path / "index", tmp_path / "state"
    build_index(catalog, index, ["memory"])
    args = shard_args("memory", index, {"state_dir": state, "snapshot_every": 150})
    entity_ids = [e.id for e in catalog]
    rng = np.random.default_rng(11)
    acked: list[FeedbackEvent] = []
    server: ServerProcess = spawn(args)
    try:
        for round_ in range(ROUNDS):
            stop = threading.Event()
            sender = threading.Thread(target=stream, args=(server.address, entity_ids, round_, acked, stop, round_))
            sender.start()
            threading.Event().wait(float(rng.uniform(0.3, 0.8)))
            server.kill()
            stop.set()
            sender.join(30)
            server = spawn(args)
            check(server.address, acked)
        assert len(acked) > ROUNDS * 5, "too few events were acknowledged to test anything"
    finally:
        server.stop()
