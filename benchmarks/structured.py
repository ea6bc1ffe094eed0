"""Structured search and memory: QU accuracy, Retrieve latency of both shards, Learn throughput.

    python -m benchmarks.structured [--catalog PATH] [--json FILE] [--durability-rounds N]

1. QU accuracy on a labelled query set generated from the catalog (seeded): the 500 most popular
   artists with one random edit (substitution, insertion, deletion or adjacent transposition; the
   acceptance bar is >= 95% intended artist as the top reading), the same artists spelt right,
   popular short titles with and without a typo, genres and subgenres, decade phrases, moods.
   "top-1": the most likely interpretation holds the intended (field, value); "top-4": any of the
   four most likely does.
2. Retrieve latency p50/p99 (in process, excluding warm-up) of the attribute and memory strategies
   on the QU queries, and Understand latency.
3. Learn throughput: batches of feedback events, each batch fsync'd to the write-ahead log before
   it returns (on the file system of --state, default a temporary directory).
4. With --durability-rounds N: runs tests/services/test_memory_durability.py with N kill-restart
   rounds (a real memory shard process, SIGKILL mid-stream) and reports pass/fail.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import pin_threads, print_table, run_info, write_json

pin_threads()

import numpy as np  # noqa: E402

from core.analysis import text_key  # noqa: E402
from core.attribute.index import short_title  # noqa: E402
from core.catalog import Entity, demo_catalog_path, load_catalog  # noqa: E402
from core.indexing import build_index, open_strategy  # noqa: E402
from core.query import make_query  # noqa: E402
from core.types import EventType, FeedbackEvent, Interpretation, SupportsLearn  # noqa: E402

Labelled = tuple[str, str, str, str]  # (kind, query, field, intended key)
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def typo(text: str, rng: np.random.Generator) -> str:
    """`text` with one random edit: substitution, insertion, deletion or adjacent transposition."""
    for _ in range(100):
        i = int(rng.integers(0, len(text)))
        op = int(rng.integers(0, 4))
        c = LETTERS[int(rng.integers(0, 26))]
        if op == 0:
            out = text[:i] + c + text[i + 1:]
        elif op == 1:
            out = text[:i] + c + text[i:]
        elif op == 2 and len(text) > 1:
            out = text[:i] + text[i + 1:]
        elif op == 3 and i + 1 < len(text):
            out = text[:i] + text[i + 1] + text[i] + text[i + 2:]
        else:
            continue
        if out.strip() and text_key(out) != text_key(text):
            return out
    return text


def popular_artists(entities: Sequence[Entity], n: int) -> list[str]:
    """The `n` artists with the most popular tracks (largest track popularity, then track count)."""
    best: dict[str, tuple[float, int]] = {}
    for e in entities:
        artist = e.attributes.get("artist")
        if isinstance(artist, str) and text_key(artist):
            pop, count = best.get(artist, (0.0, 0))
            best[artist] = (max(pop, e.popularity), count + 1)
    return sorted(best, key=lambda a: (-best[a][0], -best[a][1], a))[:n]


def labelled_queries(entities: Sequence[Entity], seed: int = 0) -> list[Labelled]:
    rng = np.random.default_rng(seed)
    out: list[Labelled] = []
    for artist in popular_artists(entities, 500):
        out.append(("artist typo", typo(artist.lower(), rng), "artist", text_key(artist)))
        out.append(("artist exact", artist.lower(), "artist", text_key(artist)))
    tracks = sorted(entities, key=lambda e: -e.popularity)
    titles = list(dict.fromkeys(short_title(e.fields.get("title", "")) for e in tracks))
    for title in [t for t in titles if len(text_key(t)) >= 6][:300]:
        out.append(("title exact", title.lower(), "title", text_key(title)))
        out.append(("title typo", typo(title.lower(), rng), "title", text_key(title)))
    genres = sorted({(f, v) for e in entities for f, v in e.categorical() if f in ("genre", "subgenre")})
    for f, v in genres:
        out.append(("genre", v.lower(), f, text_key(v)))
        if len(v) >= 5:
            out.append(("genre typo", typo(v.lower(), rng), f, text_key(v)))
    decades = sorted({v for e in entities for f, v in e.categorical() if f == "decade"})
    for d in decades:
        for phrase in (d, f"{d[2:]}", f"{d[2:4]}'s", f"{d[2:]} music"):
            out.append(("decade", phrase, "decade", text_key(d)))
    for phrase, mood in (("chill", "chill"), ("relaxing music", "chill"), ("happy songs", "happy"),
                         ("sad songs", "sad"), ("workout", "energetic"), ("energetic", "energetic"),
                         ("angry", "intense"), ("feel good", "happy"), ("mellow", "chill")):
        out.append(("mood", phrase, "mood", mood))
    return out


def holds(interps: Sequence[Interpretation], field: str, key: str) -> bool:
    return any(s.field == field and text_key(s.value) == key for i in interps for s in i.slots)


def qu_accuracy(understand: Callable[[str], Sequence[Interpretation]], labelled: Sequence[Labelled]
                ) -> tuple[list[list[Any]], list[tuple[str, str]]]:
    """Rows (kind, queries, top-1, top-4) and the top-1 misses (query, intended)."""
    stats: dict[str, list[int]] = {}
    misses = []
    for kind, query, field, key in labelled:
        interps = understand(query)
        top1, top4 = holds(interps[:1], field, key), holds(interps[:4], field, key)
        s = stats.setdefault(kind, [0, 0, 0])
        s[0] += 1
        s[1] += top1
        s[2] += top4
        if not top1:
            misses.append((query, f"{field}={key}"))
    return [[k, n, a / n, b / n] for k, (n, a, b) in stats.items()], misses


def percentiles(fn: Callable[[str], Any], queries: Sequence[str], repeat: int = 3) -> tuple[float, float]:
    """(p50, p99) milliseconds per call, after one untimed pass."""
    for q in queries:
        fn(q)
    times = []
    for _ in range(repeat):
        for q in queries:
            start = time.perf_counter()
            fn(q)
            times.append((time.perf_counter() - start) * 1000)
    return float(np.percentile(times, 50)), float(np.percentile(times, 99))


def learn_throughput(index: Path, state: Path, entities: Sequence[Entity], batch: int, batches: int) -> float:
    """Events per second through MemoryStrategy.learn (fsync'd per batch)."""
    memory = open_strategy(index, "memory", {"state_dir": str(state)})
    if not isinstance(memory, SupportsLearn):
        raise TypeError("the memory strategy does not learn")
    rng = np.random.default_rng(1)
    ids = [e.id for e in entities]
    start = time.perf_counter()
    for b in range(batches):
        events = [FeedbackEvent(event_id=f"bench-{b}-{i}", query_text=f"query {int(rng.integers(0, 2000))}",
                                entity_id=ids[int(rng.integers(0, len(ids)))], type=EventType.CLICK)
                  for i in range(batch)]
        memory.learn(events)
    elapsed = time.perf_counter() - start
    memory.close()  # type: ignore[attr-defined]
    return batch * batches / elapsed


def durability(rounds: int) -> bool:
    env = {**os.environ, "LTRR_DURABILITY_ROUNDS": str(rounds)}
    test = Path(__file__).resolve().parents[1] / "tests" / "services" / "test_memory_durability.py"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", str(test)], env=env, check=False).returncode == 0


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--catalog", type=Path, default=demo_catalog_path())
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--state", type=Path, default=None, help="directory for the Learn benchmark's state")
    parser.add_argument("--durability-rounds", type=int, default=0)
    parser.add_argument("--show-misses", type=int, default=0)
    args = parser.parse_args(argv)
    entities = load_catalog(args.catalog)
    result: dict[str, Any] = {"run": run_info(), "catalog": str(args.catalog), "entities": len(entities)}
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(tmp) / "index"
        build_index(entities, index, ["attribute", "memory"], {"memory": {"progress": False}})
        attribute = open_strategy(index, "attribute")
        memory = open_strategy(index, "memory", {"state_dir": str(Path(tmp) / "state")})
        attribute.warm_up()
        memory.warm_up()
        labelled = labelled_queries(entities)
        understand = attribute.understand  # type: ignore[attr-defined]
        rows, misses = qu_accuracy(lambda q: understand(make_query(q), 4), labelled)
        print_table(rows, ["queries", "n", "top-1", "top-4"])
        for q, want in misses[:args.show_misses]:
            print(f"  miss: {q!r} (want {want}): {[(s.field, s.value) for s in understand(make_query(q), 1)[0].slots]}")
        result["qu"] = {r[0]: {"n": r[1], "top1": round(r[2], 4), "top4": round(r[3], 4)} for r in rows}
        queries = [q for _, q, _, _ in labelled]
        lat: dict[str, tuple[float, float]] = {}
        for name, fn in (("attribute Understand", lambda q: understand(make_query(q), 8)),
                         ("attribute Retrieve", lambda q: attribute.retrieve(make_query(q), 100, None)),
                         ("memory Retrieve", lambda q: memory.retrieve(make_query(q), 100, None))):
            lat[name] = percentiles(fn, queries)
        print_table([[n, a, b] for n, (a, b) in lat.items()], ["call (quota 100)", "p50 ms", "p99 ms"])
        result["latency_ms"] = {n: {"p50": round(a, 4), "p99": round(b, 4)} for n, (a, b) in lat.items()}
        memory.close()  # type: ignore[attr-defined]
        state = Path(tempfile.mkdtemp(dir=args.state)) if args.state else Path(tmp) / "learn-state"
        tput = {size: learn_throughput(index, state / str(size), entities, size, max(20, 2000 // size))
                for size in (1, 10, 100)}
        print_table([[s, t] for s, t in tput.items()], ["events per Learn", "events/s (fsync per batch)"])
        result["learn_events_per_s"] = {str(s): round(t, 1) for s, t in tput.items()}
    if args.durability_rounds:
        ok = durability(args.durability_rounds)
        print(f"durability: {args.durability_rounds} kill-restart rounds: {'PASS' if ok else 'FAIL'}")
        result["durability"] = {"rounds": args.durability_rounds, "passed": ok}
    write_json(args.json, result)


if __name__ == "__main__":
    main()
