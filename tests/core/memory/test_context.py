"""The contextual memory: pairs learned per query and per kind of user (core.memory.context), served
first to the same kind of user, never to another; durable and pruned like the plain pairs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.catalog import Entity
from core.memory.context import SEPARATOR, context_bucket, contextual_key
from core.memory.index import DEFAULT_CONTEXT_KEYS, MemoryConfig, MemoryStrategy
from core.memory.wal import SNAPSHOT_NAME, WriteAheadLog
from core.query import make_query
from core.types import EventType, FeedbackEvent
from tests.core.memory.common import DAY, EVENT_TIME, Clock, open_memory, state_of

ROCK = {"hour": "23", "device": "mobile", "affinity.rock": "0.600", "affinity.pop": "0.300"}
JAZZ = {"hour": "23", "device": "mobile", "affinity.genre.jazz": "0.700"}
QUERY = "late night music"


def event(n: int, entity: str, context: dict[str, str], query: str = QUERY) -> FeedbackEvent:
    return FeedbackEvent(event_id=f"c{n}", query_text=query, entity_id=entity, type=EventType.PLAY, value=1.0,
                         timestamp=EVENT_TIME, context=context)


def hits(s: MemoryStrategy, context: dict[str, str] | None, text: str = QUERY, k: int = 10
         ) -> tuple[list[str], list[float]]:
    h = s.retrieve(make_query(text, context=context), k, None)
    return [s.collection.ids[o] for o in h.ordinals.tolist()], h.scores.tolist()


# -- the bucket --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("context", "names", "bucket"), [
    ({"affinity.rock": "0.6", "affinity.pop": "0.3"}, ("affinity",), "affinity.genre=rock"),  # simulator form
    ({"affinity.genre.rock": "0.8", "affinity.mood.chill": "0.9"}, ("affinity",), "affinity.mood=chill"),
    ({"affinity.genre.Hip-Hop": "0.5"}, ("affinity",), "affinity.genre=hip hop"),  # folded like queries
    ({"affinity.b": "0.5", "affinity.a": "0.5"}, ("affinity",), "affinity.genre=a"),  # tie: smallest key
    ({"affinity.rock": "x", "affinity.pop": "0", "affinity.jazz": "nan"}, ("affinity",), ""),  # no weight
    ({"hour": "23", "device": "mobile"}, ("affinity",), ""),
    ({"affinity.rock": "0.6", "device": "TV"}, ("affinity", "device"), "affinity.genre=rock|device=tv"),
    ({"affinity.rock": "0.6"}, (), ""),
])
def test_the_bucket_of_a_context(context: dict[str, str], names: tuple[str, ...], bucket: str) -> None:
    assert context_bucket(context, names) == bucket


def test_both_spellings_of_an_affinity_share_a_bucket() -> None:
    """The simulator sends "affinity.<genre>", the proto documents "affinity.<field>.<value>"."""
    assert context_bucket({"affinity.rock": "0.6"}, DEFAULT_CONTEXT_KEYS) == \
        context_bucket({"affinity.genre.rock": "0.6"}, DEFAULT_CONTEXT_KEYS) != ""


def test_a_contextual_key_is_never_a_plain_key() -> None:
    assert contextual_key("rock", "affinity.genre=rock") == f"rock{SEPARATOR}affinity.genre=rock"
    assert contextual_key("", "affinity.genre=rock") == "" and contextual_key("rock", "") == ""


@pytest.mark.parametrize("names", [("",), (" affinity",), ("a|b",), ("a=b",)])
def test_context_keys_errors(names: tuple[str, ...], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="`context_keys` must hold non-empty names"):
        MemoryConfig(state_dir=tmp_path, context_keys=names)


def test_context_keys_option(tmp_path: Path) -> None:
    assert MemoryConfig.from_options({}, tmp_path).context_keys == ("affinity",)
    assert MemoryConfig.from_options({"context_keys": ""}, tmp_path).context_keys == ()
    assert MemoryConfig.from_options({"context_keys": "affinity, device"}, tmp_path).context_keys == \
        ("affinity", "device")


# -- learning and retrieval ----------------------------------------------------------------------------


def test_a_contextual_pair_is_served_first_to_the_same_kind_of_user_only(
        memory_index: Path, catalog: list[Entity], tmp_path: Path) -> None:
    s = open_memory(memory_index, tmp_path)
    popular, niche = catalog[0].id, catalog[1].id
    # Jazz lovers played `popular` three times; one rock lover played `niche`.
    s.learn([event(i, popular, JAZZ) for i in range(3)] + [event(3, niche, ROCK)])
    assert hits(s, None)[0][:2] == [popular, niche]  # the plain key holds all four plays
    rock_ids, rock_scores = hits(s, {"affinity.genre.rock": "0.9"})  # the other spelling, same bucket
    assert rock_ids[:2] == [niche, popular] and rock_scores[0] > 1.0 > rock_scores[1]
    assert hits(s, JAZZ)[0][:2] == [popular, niche]
    assert np.all(np.diff(rock_scores) <= 0)


def test_a_context_never_seen_gets_exactly_the_plain_list(memory_index: Path, catalog: list[Entity],
                                                          tmp_path: Path) -> None:
    s = open_memory(memory_index, tmp_path)
    s.learn([event(i, catalog[i].id, ROCK if i % 2 else JAZZ, query="rock") for i in range(6)])
    plain = hits(s, None, "rock", 50)
    assert len(plain[0]) == 50  # the predicted pairs of a genre query, and the learned ones
    for context in ({"affinity.latin": "0.9"}, {"hour": "3"}, {}):
        assert hits(s, context, "rock", 50) == plain


def test_context_keys_off_learns_and_serves_the_plain_key_only(memory_index: Path, catalog: list[Entity],
                                                               tmp_path: Path) -> None:
    s = open_memory(memory_index, tmp_path, context_keys="")
    s.learn([event(1, catalog[0].id, ROCK)])
    assert list(s.observed) == [QUERY] and hits(s, ROCK) == hits(s, None)


def test_an_event_without_context_learns_the_plain_key_only(memory_index: Path, catalog: list[Entity],
                                                            tmp_path: Path) -> None:
    s = open_memory(memory_index, tmp_path)
    s.learn([event(1, catalog[0].id, {})])
    assert list(s.observed) == [QUERY]


# -- durability and bounds -------------------------------------------------------------------------------


def test_contextual_pairs_survive_replay_and_snapshot(memory_index: Path, catalog: list[Entity],
                                                      tmp_path: Path) -> None:
    s = open_memory(memory_index, tmp_path)
    s.learn([event(1, catalog[0].id, ROCK), event(2, catalog[1].id, JAZZ)])
    rock_key = contextual_key(QUERY, "affinity.genre=rock")
    assert set(s.observed) == {QUERY, rock_key, contextual_key(QUERY, "affinity.genre=jazz")}
    s.wal.close()  # a crash: no snapshot, the log alone
    replayed = open_memory(memory_index, tmp_path)
    assert state_of(replayed) == state_of(s) and hits(replayed, ROCK) == hits(s, ROCK)
    replayed.close()
    _, _, data = (tmp_path / SNAPSHOT_NAME).read_bytes().partition(b"\n")
    written = json.loads(data)
    assert written["version"] == 2 and rock_key in written["pairs"]
    again = open_memory(memory_index, tmp_path)
    assert state_of(again) == state_of(s) and hits(again, ROCK) == hits(s, ROCK)


def test_a_log_row_written_before_contextual_keys_replays(memory_index: Path, catalog: list[Entity],
                                                          tmp_path: Path) -> None:
    """Rows of six elements (no contextual key), as logged before this change, learn the plain key."""
    wal = WriteAheadLog(tmp_path)
    wal.append({"seq": 1, "at": EVENT_TIME, "events": [["old", QUERY, catalog[0].id, int(EventType.CLICK), 0.0,
                                                        EVENT_TIME]]})
    wal.close()
    s = open_memory(memory_index, tmp_path)
    assert list(state_of(s)) == [QUERY] and hits(s, ROCK)[0][0] == catalog[0].id


def test_snapshots_prune_stale_contextual_pairs(memory_index: Path, catalog: list[Entity], tmp_path: Path) -> None:
    clock = Clock(400 * DAY)  # the event is 400 days old: ~13 half-lives, below min_evidence
    s = open_memory(memory_index, tmp_path, clock)
    s.learn([event(1, catalog[0].id, ROCK)])
    assert len(s.observed) == 2
    s.close()
    assert s.observed == {} and s.describe()["pruned_pairs"] == "2"
    assert hits(s, ROCK) == hits(s, None)
