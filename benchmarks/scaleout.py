"""Issue 14's acceptance run: `ltrr up` with 2 brokers, 2 partitions and 2 replicas per strategy on
a private PostgreSQL, treated as a black box through its --status-json, its gRPC API and signals.

    python -m benchmarks.scaleout [--workdir DIR] [--searches 500] [--data ../shared/data/scifact] [--json FILE]

Phases, in order, on the bundled demo catalog (the index is built on the first run):
1. cross: N searches alternating between the brokers, each followed by Feedback sent to the other
   broker: NOT_FOUND and other failures are counted (want 0 and 0).
2. converge: after the last feedback, both brokers' Describe are polled until they show the same
   applied_events, equal to the events acknowledged, and the same policy_digest (want within 5 s).
3. broker kill: two feedback streams (search at one broker, Feedback with a fresh event id at the
   other), calls in flight; one broker is SIGKILLed in the middle; then it is started again with its
   own command line. Every acknowledged event id must be in the store (read from PostgreSQL itself),
   and the survivor and the restarted broker must both apply every event the store holds.
4. replicas: a stream of searches while one replica of every partition is SIGKILLed (want 0 failed,
   0 degraded), then while the other replica of lexical partition 1 is too (want 0 failed, and every
   search that called lexical degraded with lexical coverage 0.5).
5. scifact: 200 SciFact test queries with the forced plan lexical=100 through a 2-partition cluster
   (lexical only, one broker) against one lexical shard over the whole corpus: same ids, same order.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from benchmarks.common import DEFAULT_SCIFACT, load_beir, truncate_queries, write_json
from core.catalog import demo_catalog_path, load_catalog
from services.client import BrokerClient, ShardClient
from services.process import ServerProcess, spawn, start_shard

UP_TIMEOUT_S = 1800.0  # the first run builds the partitioned demo index (MiniLM encoding: minutes)
CONVERGE_WITHIN_S = 5.0
STREAM_INTERVAL_S = 0.05
SCIFACT_FIELDS = "title,text"  # both indexes of phase 5 are built with the same fields


@dataclass
class Up:
    """A running `ltrr up` and what its --status-json said."""

    process: subprocess.Popen[bytes]
    status: dict[str, Any]
    log: Path

    @property
    def brokers(self) -> list[str]:
        return [b["address"] for b in self.status["brokers"]]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def up(workdir: Path, name: str, config: str) -> Up:
    """Start `ltrr up` with `config` (TOML) and wait for its status file."""
    path, status, log = workdir / f"{name}.toml", workdir / f"{name}.status.json", workdir / f"{name}.log"
    path.write_text(config)
    status.unlink(missing_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "services.cli", "up", "--config", str(path),
                                    "--status-json", str(status)], stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + UP_TIMEOUT_S
    while not status.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            sys.exit(f"`ltrr up` ({name}) did not come up:\n{log.read_text(errors='replace')[-4000:]}")
        time.sleep(0.5)
    print(f"{name}: up ({log})", flush=True)
    return Up(process, json.loads(status.read_text()), log)


def demo_queries(n: int, seed: int = 0) -> list[str]:
    """Titles and artists of the demo catalog, drawn by popularity (what users search for)."""
    entities = load_catalog(demo_catalog_path())
    weights = np.array([max(e.popularity, 1e-3) for e in entities])
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(entities), size=n, p=weights / weights.sum())
    out = []
    for i, pick in enumerate(picks.tolist()):
        fields = entities[pick].fields
        out.append(fields.get("artist", "") if i % 3 == 2 else fields.get("title", ""))
    return [q or "love" for q in out]


def cross_feedback(brokers: Sequence[BrokerClient], queries: Sequence[str]) -> dict[str, Any]:
    """Phase 1: search at broker i % 2, feedback at the other one."""
    counts = {"searches": 0, "feedback_acked": 0, "not_found": 0, "failed": 0, "no_results": 0}
    for i, text in enumerate(queries):
        here, other = brokers[i % 2], brokers[(i + 1) % 2]
        try:
            response = here.search(text, budget_ms=1000)  # correctness, not latency: room for a loaded machine
            counts["searches"] += 1
            if not response.results:
                counts["no_results"] += 1
                continue
            ack = other.feedback(response.decision_id, response.results[0].entity_id, "play", value=1.0)
            counts["feedback_acked"] += int(not ack.duplicate)
        except grpc.RpcError as err:
            counts["not_found" if err.code() == grpc.StatusCode.NOT_FOUND else "failed"] += 1
    return counts


def converge(brokers: Sequence[BrokerClient], acked: int, within_s: float = CONVERGE_WITHIN_S) -> dict[str, Any]:
    """Phase 2: poll Describe until the brokers agree with each other and with `acked`."""
    started = time.monotonic()
    while True:
        described = [b.describe() for b in brokers]
        applied = [d.applied_events for d in described]
        digests = [d.policy_digest for d in described]
        same = len(set(applied)) == 1 and applied[0] == acked and len(set(digests)) == 1
        waited = time.monotonic() - started
        if same or waited > within_s:
            return {"converged": same, "after_s": round(waited, 3), "applied_events": applied,
                    "acked": acked, "digests_equal": len(set(digests)) == 1}
        time.sleep(0.05)


class Stream:
    """Searches at a fixed interval on a thread, alternating brokers, until stopped; records outcomes."""

    def __init__(self, brokers: Sequence[BrokerClient], queries: Sequence[str]) -> None:
        self.brokers, self.queries = brokers, queries
        self.outcomes: list[dict[str, Any]] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Stream:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        self.thread.join()

    def _run(self) -> None:
        i = 0
        while not self.stopping.is_set():
            text = self.queries[i % len(self.queries)]
            try:
                r = self.brokers[i % len(self.brokers)].search(text, budget_ms=300)
                self.outcomes.append({"ok": True, "degraded": r.degraded,
                                      "coverage": {s.strategy: s.coverage for s in r.strategies if s.quota}})
            except grpc.RpcError as err:
                self.outcomes.append({"ok": False, "code": err.code().name})
            i += 1
            time.sleep(STREAM_INTERVAL_S)


def summarise(outcomes: Sequence[dict[str, Any]], strategy: str = "lexical") -> dict[str, Any]:
    ok = [o for o in outcomes if o["ok"]]
    called = [o for o in ok if strategy in o["coverage"]]
    return {"searches": len(outcomes), "failed": len(outcomes) - len(ok),
            "degraded": sum(o["degraded"] for o in ok),
            f"{strategy}_called": len(called),
            f"{strategy}_coverage": sorted({round(o["coverage"][strategy], 3) for o in called})}


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def replicas(status: dict[str, Any], brokers: Sequence[BrokerClient], queries: Sequence[str]) -> dict[str, Any]:
    """Phase 4: one replica of every partition killed, then both replicas of lexical partition 1."""
    shards = status["shards"]
    with Stream(brokers, queries) as stream:
        time.sleep(1.0)
        for s in shards:
            if s["replica"] == 0:
                kill(s["pid"])
        time.sleep(4.0)
    one = summarise(stream.outcomes)
    with Stream(brokers, queries) as stream:
        time.sleep(0.5)
        for s in shards:
            if (s["strategy"], s["partition"], s["replica"]) == ("lexical", 1, 1):
                kill(s["pid"])
        time.sleep(4.0)
    after = stream.outcomes[len(stream.outcomes) // 2:]  # once the kill has surely landed
    return {"one_replica_killed": one, "partition_down": summarise(after)}


def command_line(pid: int) -> list[str]:
    """The `ltrr` arguments of a running `python -m services.cli ...` process."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
    words = [a.decode() for a in argv]
    return words[words.index("services.cli") + 1:]


class FeedbackStream:
    """On a thread: search at `here`, then Feedback with a fresh event id at `there`, until stopped;
    keeps the event ids acknowledged and counts failed calls."""

    def __init__(self, here: BrokerClient, there: BrokerClient, queries: Sequence[str]) -> None:
        self.here, self.there, self.queries = here, there, queries
        self.acked: list[str] = []
        self.failed = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        i = 0
        while not self.stopping.is_set():
            try:
                response = self.here.search(self.queries[i % len(self.queries)], budget_ms=200)
                if response.results:
                    event_id = uuid.uuid4().hex
                    ack = self.there.feedback(response.decision_id, response.results[-1].entity_id, "play",
                                              value=1.0, event_id=event_id)
                    if not ack.duplicate:
                        self.acked.append(event_id)
            except grpc.RpcError:
                self.failed += 1
                time.sleep(0.01)
            i += 1

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join()


def stored(url: str, event_ids: Sequence[str]) -> tuple[int, int]:
    """(events in the store, how many of `event_ids` are among them), read from PostgreSQL itself."""
    import psycopg

    with psycopg.connect(url) as conn:
        total = conn.execute("SELECT count(*) FROM events").fetchone()
        found = conn.execute("SELECT count(*) FROM events WHERE event_id = ANY(%s)", (list(event_ids),)).fetchone()
    assert total is not None and found is not None
    return int(total[0]), int(found[0])


def broker_kill(up_: Up, brokers: list[BrokerClient], queries: Sequence[str]) -> tuple[dict[str, Any], ServerProcess]:
    """Phase 3: two feedback streams across both brokers (search at one, Feedback at the other) with
    calls in flight; broker 1 SIGKILLed in the middle; then restarted with its own command line."""
    victim = up_.status["brokers"][1]
    args = command_line(victim["pid"])
    streams = [FeedbackStream(brokers[0], brokers[1], queries), FeedbackStream(brokers[1], brokers[0], queries[::-1])]
    time.sleep(3.0)
    kill(victim["pid"])
    time.sleep(3.0)
    for stream in streams:
        stream.stop()
    acked = [e for stream in streams for e in stream.acked]
    total, found = stored(up_.status["store"]["url"], acked)
    survivor = converge(brokers[:1], total)
    restarted = spawn(args)
    brokers.append(BrokerClient(restarted.address))
    both = converge([brokers[0], brokers[-1]], total, within_s=30.0)
    return {"acked_in_phase": len(acked), "acked_found_in_store": found, "events_in_store": total,
            "failed_calls": sum(s.failed for s in streams), "survivor": survivor, "restarted": both}, restarted


def scifact(workdir: Path, data: Path, n_queries: int = 200) -> dict[str, Any]:
    """Phase 5: forced lexical=100 through 2 partitions vs one shard over the whole corpus."""
    corpus = data / "corpus.jsonl"
    beir = load_beir(data)
    queries, _ = truncate_queries(dict(list(beir.queries.items())[:n_queries]))
    index1 = workdir / "scifact-1"
    if not (index1 / "lexical" / "manifest.json").exists():
        subprocess.run([sys.executable, "-m", "services.cli", "index", "--catalog", str(corpus), "--out",
                        str(index1), "--strategies", "lexical", "--fields", SCIFACT_FIELDS], check=True)
    config = (f'catalog = "{corpus}"\nindex = "{workdir / "scifact-2"}"\nstate = "{workdir / "scifact-state"}"\n'
              'port = 0\nmetrics_port = 0\nstrategies = ["lexical"]\npartitions = 2\n[broker]\npolicy = "static"\n'
              f'[build.lexical]\nfields = "{SCIFACT_FIELDS}"\n')
    cluster = up(workdir, "scifact", config)
    same = differ = 0
    examples = []
    try:
        with start_shard("lexical", index1) as shard, ShardClient(shard.address) as one, \
                BrokerClient(cluster.brokers[0]) as broker:
            for qid, text in queries.items():
                want = [c.entity_id for c in one.retrieve(text, 100).candidates]
                got = [c.entity_id for c in broker.search(text, k=10, budget_ms=2000, plan={"lexical": 100},
                                                          return_candidates=True).candidates]
                if got == want:
                    same += 1
                else:
                    differ += 1
                    examples.append(qid)
    finally:
        cluster.stop()
    return {"queries": len(queries), "same": same, "differ": differ, "differing_ids": examples[:10]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, help="index, state and logs (default: a new temporary directory; "
                        "reuse one to skip building the index)")
    parser.add_argument("--searches", type=int, default=500)
    parser.add_argument("--data", type=Path, default=DEFAULT_SCIFACT, help="SciFact (BEIR layout)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ltrr-scaleout-"))
    workdir.mkdir(parents=True, exist_ok=True)
    state = workdir / "state"
    if state.exists():
        subprocess.run(["rm", "-rf", str(state)], check=True)  # a fresh store and policy every run
    config = (f'index = "{workdir / "demo-2x2"}"\nstate = "{state}"\nport = 0\nmetrics_port = 0\n'
              'brokers = 2\npartitions = 2\nreplicas = 2\n[store]\nurl = "postgres"\n')
    result: dict[str, Any] = {}
    cluster = up(workdir, "demo", config)
    restarted: ServerProcess | None = None
    brokers = [BrokerClient(a) for a in cluster.brokers]
    try:
        queries = demo_queries(args.searches)
        result["cross"] = cross_feedback(brokers, queries)
        print("cross:", result["cross"], flush=True)
        result["converge"] = converge(brokers, result["cross"]["feedback_acked"])
        print("converge:", result["converge"], flush=True)
        result["broker_kill"], restarted = broker_kill(cluster, brokers, demo_queries(200, seed=1))
        print("broker kill:", result["broker_kill"], flush=True)
        result["replicas"] = replicas(cluster.status, [brokers[0], brokers[-1]], queries)
        print("replicas:", result["replicas"], flush=True)
    finally:
        for b in brokers:
            b.close()
        if restarted is not None:
            restarted.stop()
        cluster.stop()
    if args.data.exists():
        result["scifact"] = scifact(workdir, args.data)
        print("scifact:", result["scifact"], flush=True)
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
