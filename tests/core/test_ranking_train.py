"""LambdaMART training: labels graded from the logged signals, NDCG, the trained model."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from core.catalog import Entity
from core.merge import StrategyList, merge
from core.ranking import EntityTable, LambdaMartRanker, RankerKind, make_ranker
from core.ranking_train import (
    TrainingGroup,
    TrainParams,
    event_grade,
    graded_labels,
    ndcg_at,
    satisfies,
    train_lambdamart,
)
from core.types import EventType

NAMES = ("lexical", "semantic", "attribute", "memory")
WORDS = ("love", "night", "dance", "blue", "river", "fire", "heart", "summer", "rain", "gold", "city", "dream")
FULL, SHORT = 0.95, 0.1  # fractions listened on either side of the satisfied fraction


def lst(name: str, ids: list[str]) -> StrategyList:
    return StrategyList(name, ids, np.linspace(10, 1, num=len(ids), dtype=np.float32))


@pytest.fixture(scope="module")
def table() -> EntityTable:
    return EntityTable.from_entities(Entity(id=e, fields={"title": f"song {e}"}) for e in "abcd")


def test_graded_labels_take_the_best_event() -> None:
    m = merge([lst("lexical", ["a", "b", "c", "d"])], NAMES)
    labels = graded_labels(m, [("a", EventType.CLICK, 0.0), ("a", EventType.FAVORITE, 0.0),
                               ("b", EventType.SKIP, 0.0), ("c", EventType.PLAY, FULL),
                               ("d", EventType.PLAY, SHORT), ("d", EventType.SKIP, 0.0),
                               ("nope", EventType.LIKE, 0.0)])
    assert labels.tolist() == [3, 0, 2, 1]


def test_a_satisfied_play_outranks_a_short_one_and_a_skip_gives_nothing() -> None:
    """The grades follow the signals: a play long enough to satisfy the listener (core.reward's
    `satisfies`) beats a short play, which beats a skip (shown, not wanted)."""
    assert satisfies(EventType.PLAY, FULL) and not satisfies(EventType.PLAY, SHORT)
    full, short = event_grade(EventType.PLAY, FULL), event_grade(EventType.PLAY, SHORT)
    assert event_grade(EventType.LIKE, 0.0) >= full > short > event_grade(EventType.SKIP, 0.0) == 0


def test_a_reformulation_grades_only_what_the_session_finally_played() -> None:
    """The shown candidates of a search the user abandoned for another get nothing; the entity the
    session finally played, when it was a candidate here, is what this search should have ranked first."""
    m = merge([lst("lexical", ["a", "b", "c"])], NAMES)
    assert graded_labels(m, [("c", EventType.REFORMULATE, 0.0)]).tolist() == [0, 0, event_grade(EventType.PLAY, FULL)]
    assert graded_labels(m, [("", EventType.REFORMULATE, 0.0)]).tolist() == [0, 0, 0]  # named nothing


def test_an_unknown_event_type_is_an_error() -> None:
    m = merge([lst("lexical", ["a"])], NAMES)
    with pytest.raises(ValueError, match="`event_type` must be one of"):
        graded_labels(m, [("a", 99, 0.0)])


def test_ndcg_hand_computation() -> None:
    labels, scores = np.array([0, 1, 2, 0]), np.array([4.0, 3.0, 2.0, 1.0])
    dcg = 1 / math.log2(3) + 3 / math.log2(4)
    idcg = 3 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at(labels, scores, [4]) == pytest.approx(dcg / idcg)
    assert ndcg_at(labels, scores, [2, 2], k=1) == pytest.approx((0 + 1) / 2)
    assert ndcg_at(np.array([0, 3]), np.array([1.0, 1.0]), [2], k=1) == 0.0  # a tie keeps input order
    assert ndcg_at(np.array([0, 0]), scores[:2], [2]) == 1.0  # LightGBM: a group without gain counts 1


def synthetic_table(seed: int = 3) -> EntityTable:
    rng = np.random.default_rng(seed)
    return EntityTable.from_entities(Entity(id=f"t{i}", fields={"title": " ".join(rng.choice(WORDS, size=2))},
                                            popularity=float(rng.integers(0, 100))) for i in range(400))


def synthetic_groups(table: EntityTable, n_groups: int, seed: int) -> list[TrainingGroup]:
    """Titles are random words; a candidate is relevant iff its title holds the query word. Strategy
    ranks are random, so only the title_match feature reveals relevance."""
    rng = np.random.default_rng(seed)
    groups = []
    for _ in range(n_groups):
        word = str(rng.choice(WORDS))
        ids = [table.ids[int(i)] for i in rng.choice(len(table.ids), size=20, replace=False)]
        lists = [lst(s, [str(e) for e in rng.permutation(ids)[: int(rng.integers(8, 21))]])
                 for s in ("lexical", "semantic")]
        m = merge(lists, ("lexical", "semantic"))
        rows = table.rows(m.entity_ids)
        labels = np.array([2 if word in table.terms["title"][r] else 0 for r in rows.tolist()], dtype=np.int32)
        groups.append(TrainingGroup(query_text=word, merged=m, labels=labels))
    return groups


def test_lambdamart_learns_the_relevance_feature_and_round_trips(tmp_path: Path) -> None:
    table = synthetic_table()
    groups = synthetic_groups(table, 160, seed=3)
    path = tmp_path / "ranker.txt"
    report = train_lambdamart(groups, path, TrainParams(num_boost_round=40, min_data_in_leaf=5), table=table)
    assert report.valid_groups >= 20 and report.train_groups + report.valid_groups <= 160
    assert report.ndcg_at_10 > 0.95 and report.ndcg_at_10 > report.rrf_ndcg_at_10 + 0.1
    ranker = make_ranker(RankerKind.LAMBDAMART, table, path)
    assert isinstance(ranker, LambdaMartRanker) and ranker.strategies == ("lexical", "semantic")
    reloaded = LambdaMartRanker.load(path, table)
    for g in synthetic_groups(table, 20, seed=99):
        order, scores = ranker.rank(g.merged, g.query_text, k=len(g.merged))
        n_rel = int((g.labels > 0).sum())
        assert (g.labels[order[:n_rel]] > 0).all(), "relevant candidates first"
        again = reloaded.rank(g.merged, g.query_text, k=len(g.merged))
        np.testing.assert_array_equal(again[0], order)
        np.testing.assert_array_equal(again[1], scores)


def test_training_needs_a_positive_label(tmp_path: Path, table: EntityTable) -> None:
    m = merge([lst("lexical", ["a"])], NAMES)
    with pytest.raises(ValueError, match="positive label"):
        train_lambdamart([TrainingGroup(query_text="q", merged=m, labels=np.zeros(1, np.int32))],
                         tmp_path / "m.txt", table=table)


def test_logged_plays_train_satisfied_above_short(tmp_path: Path) -> None:
    """Labels come from the event log the broker writes: the same search logged many times, where
    listeners played one candidate through and left another early, trains a model that ranks the
    satisfying one first, though the strategies rank the other first."""
    from core.eventlog import DecisionRecord, EventLog, EventRecord

    table = EntityTable.from_entities(Entity(id=e, fields={"title": f"song {e}"}, popularity=50.0) for e in "abcd")
    with EventLog(tmp_path / "events.sqlite") as log:
        for i in range(40):
            lists = (lst("lexical", ["a", "b", "c", "d"]), lst("semantic", ["b", "a", "d", "c"]))
            log.record_decision(DecisionRecord(
                decision_id=f"d{i}", ts=float(i), query_text="song", context={}, features=np.zeros(3),
                strategies=("lexical", "semantic"), quotas=(4, 4), allocation=0, propensity=1.0,
                marginals=(1.0, 1.0), policy="static", lists=lists, final=("a", "b", "c", "d")))
            for j, (entity, kind, value) in enumerate([("a", EventType.PLAY, SHORT), ("b", EventType.PLAY, FULL)]):
                log.record_event(EventRecord(event_id=f"e{i}-{j}", decision_id=f"d{i}", entity_id=entity,
                                             type=kind, value=value, ts=float(i) + 0.5 + j, reward=0.0))
        groups = list(log.training_groups())
    assert [g.labels.tolist() for g in groups[:1]] == [[1, 2, 0, 0]]
    path = tmp_path / "ranker.txt"
    train_lambdamart(groups, path, TrainParams(num_boost_round=20, min_data_in_leaf=1, valid_fraction=0.0),
                     table=table)
    order, _ = make_ranker(RankerKind.LAMBDAMART, table, path).rank(groups[0].merged, "song", k=4)
    assert [groups[0].merged.entity_ids[i] for i in order[:2]] == ["b", "a"]
