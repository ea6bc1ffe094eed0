"""core.pipeline: the one search -> feedback path the broker, the simulator and the tests share."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from core.eventlog import DecisionRecord, EventRecord
from core.merge import StrategyList, merge
from core.pipeline import Answer, CallStatus, SearchPipeline, acted_ranks, decision_bytes
from core.policy.features import DIM
from core.policy.policies import BanditPolicy, PolicyConfig, PolicyKind
from core.ranking import RRFRanker
from core.reward import search_reward, strategy_outcomes
from core.types import EventType

STRATEGIES = ("lexical", "semantic", "memory")
POOL = [f"e{i}" for i in range(60)]


def pipeline(kind: PolicyKind = PolicyKind.THOMPSON) -> SearchPipeline:
    policy = BanditPolicy(STRATEGIES, DIM, PolicyConfig(kind=kind, levels=(0, 10, 20), budget=30))
    return SearchPipeline(policy, RRFRanker())


def answers(quotas: tuple[int, ...], rng: np.random.Generator, *, timeout: str = "") -> list[Answer]:
    """Lists drawn from a small pool, so strategies overlap; `timeout` names one that did not answer."""
    out = []
    for name, q in zip(STRATEGIES, quotas, strict=True):
        if q == 0:
            out.append(Answer(name, 0, CallStatus.SKIPPED, 0.0))
        elif name == timeout:
            out.append(Answer(name, q, CallStatus.TIMEOUT, 50.0))
        else:
            ids = [POOL[i] for i in rng.choice(len(POOL), size=min(q, 7), replace=False)]
            out.append(Answer(name, q, CallStatus.OK, float(rng.uniform(1, 9)),
                              StrategyList(name, ids, np.linspace(1, 0, len(ids), dtype=np.float32))))
    return out


# (type, value) of feedback events: satisfying or not (core.reward.satisfies at the default 0.15)
KINDS = [(EventType.SKIP, 0.0), (EventType.PLAY, 0.05), (EventType.PLAY, 0.8), (EventType.CLICK, 0.0),
         (EventType.REFORMULATE, 0.0), (EventType.PLAY, 0.0), (EventType.LIKE, 0.0)]
Logged = tuple[DecisionRecord, EventRecord, list[EventRecord]]


def run(p: SearchPipeline, n: int, seed: int) -> list[Logged]:
    """n searches on a few recurring queries, each with 1-3 events of KINDS (so some decisions hear
    several satisfying events); (decision, event, its decision's earlier events) as the broker logs them."""
    rng = np.random.default_rng(seed)
    logged = []
    for t in range(n):
        text = ["love song", "night drive", "blue"][t % 3]
        plan = p.decide(text, {"device": "mobile"}, (), rng)
        served = p.serve(plan, answers(plan.decision.quotas, rng, timeout="semantic" if t % 5 == 0 else ""),
                         decision_id=f"d{t}", ts=float(t), k=5)
        earlier: list[EventRecord] = []
        for i in range(1 + t % 3):
            entity = POOL[int(rng.integers(len(POOL)))] if rng.random() < 0.7 else served.record.final[0]
            kind, value = KINDS[int(rng.integers(len(KINDS)))]
            entity = "" if kind is EventType.REFORMULATE and rng.random() < 0.5 else entity
            judged = p.judge(served.record, entity, kind, value, earlier=earlier)
            p.learn(served.record, judged, entity, kind)
            event = EventRecord(event_id=f"e{t}.{i}", decision_id=f"d{t}", entity_id=entity, type=kind, value=value,
                                ts=float(t), reward=judged.reward)
            logged.append((served.record, event, list(earlier)))
            earlier.append(event)
    return logged


def test_serve_builds_the_record_from_what_answered_in_time() -> None:
    p = pipeline(PolicyKind.STATIC)
    rng = np.random.default_rng(0)
    plan = p.decide("love", {}, (), rng)
    got = answers(plan.decision.quotas, rng, timeout="semantic")
    served = p.serve(plan, got, decision_id="x", ts=1.0, k=4)
    record = served.record
    assert record.quotas == plan.decision.quotas and record.propensity == 1.0
    assert [lst.strategy for lst in record.lists] == [a.strategy for a in got if a.status is CallStatus.OK]
    assert record.answered == tuple(a.status is CallStatus.OK for a in got)
    assert served.degraded and record.latency_ms == max(a.latency_ms for a in got)
    assert len(record.final) == min(4, len(served.merged))
    np.testing.assert_array_equal(record.features, plan.features)


def test_answers_must_follow_the_strategy_columns() -> None:
    p = pipeline(PolicyKind.STATIC)
    rng = np.random.default_rng(0)
    plan = p.decide("love", {}, (), rng)
    with pytest.raises(ValueError, match="one Answer per strategy in order"):
        p.serve(plan, answers(plan.decision.quotas, rng)[::-1], decision_id="x", ts=1.0, k=4)


def test_acted_ranks_are_the_merged_rank_columns() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        got = answers((10, 20, 10), rng)
        lists = tuple(a.hits for a in got if a.hits is not None)
        record = DecisionRecord(decision_id="d", ts=0.0, query_text="q", context={}, features=np.zeros(DIM),
                                strategies=STRATEGIES, quotas=(10, 20, 10), allocation=0, propensity=1.0,
                                marginals=(1.0, 1.0, 1.0), policy="static", lists=lists, final=())
        merged = merge(lists, STRATEGIES)
        for entity in POOL[:20]:
            row = merged.entity_ids.index(entity) if entity in merged.entity_ids else None
            expected = tuple(merged.ranks[row].tolist()) if row is not None else (0, 0, 0)
            assert acted_ranks(record, entity) == expected


def test_judge_is_the_reward_and_outcomes_of_core_reward() -> None:
    p = pipeline()
    rng = np.random.default_rng(1)
    plan = p.decide("love", {}, (), rng)
    served = p.serve(plan, answers(plan.decision.quotas, rng), decision_id="x", ts=1.0, k=5)
    record, entity = served.record, served.record.final[0]
    judged = p.judge(record, entity, EventType.PLAY, 0.5)
    ranks = acted_ranks(record, entity)
    c = p.allocator.config
    assert judged.reward == search_reward(record.quotas, ranks, EventType.PLAY, 0.5,
                                          cost_per_candidate=c.cost_per_candidate, cost_per_ms=c.cost_per_ms,
                                          latency_ms=record.latency_ms, fetched=record.fetched)
    assert list(judged.outcomes) == strategy_outcomes(record.quotas, ranks, record.answered, EventType.PLAY,
                                                      record.returned)
    assert judged.retrieved and judged.teaches and judged.reward > 0.5


def test_only_the_first_satisfying_event_of_a_decision_teaches() -> None:
    """Regression (issue 13): every event of a decision taught the allocator, so a search with a
    play, a like and a later click counted as three wins for one allocation."""
    p = pipeline()
    rng = np.random.default_rng(3)
    plan = p.decide("love song", {}, (), rng)
    record = p.serve(plan, answers(plan.decision.quotas, rng), decision_id="x", ts=1.0, k=5).record
    entity = record.final[0]
    events = [(EventType.SKIP, 0.0), (EventType.PLAY, 0.05), (EventType.PLAY, 0.8), (EventType.LIKE, 0.0),
              (EventType.CLICK, 0.0)]
    earlier: list[EventRecord] = []
    taught, counts = [], []
    for i, (kind, value) in enumerate(events):
        judged = p.judge(record, entity, kind, value, earlier=earlier)
        p.learn(record, judged, entity, kind)
        taught.append(judged.teaches)
        counts.append(int(p.allocator.arms.n.sum()))  # type: ignore[attr-defined]
        earlier.append(EventRecord(event_id=f"e{i}", decision_id="x", entity_id=entity, type=kind, value=value,
                                   reward=judged.reward))
        if not judged.teaches:
            assert judged.reward == 0.0 and not any(o.answered for o in judged.outcomes)
    assert taught == [False, False, True, False, False]
    assert counts[0] == counts[1] == 0 and counts[2] == counts[3] == counts[4] > 0
    assert p.history.features("love song").any()


def test_a_reformulation_teaches_the_entity_it_names_and_nothing_when_it_names_none() -> None:
    p = pipeline()
    rng = np.random.default_rng(6)
    plan = p.decide("blue", {}, (), rng)
    record = p.serve(plan, answers(plan.decision.quotas, rng), decision_id="x", ts=1.0, k=5).record
    nothing = p.judge(record, "", EventType.REFORMULATE)
    assert not nothing.teaches and nothing.reward == 0.0
    named = p.judge(record, record.final[0], EventType.REFORMULATE)
    assert named.teaches and named.retrieved and named.reward > 0.5
    outside = p.judge(record, "not-a-candidate", EventType.REFORMULATE)
    assert outside.teaches and not outside.retrieved and outside.reward < 0


def test_replaying_the_log_rebuilds_what_live_learning_built() -> None:
    """The broker's crash recovery: snapshot-free replay of the logged events equals learning live,
    several events per decision included (the same first satisfying one teaches)."""
    live = pipeline()
    logged = run(live, 120, seed=5)
    rebuilt = pipeline()
    learned, foreign = rebuilt.replay(logged)
    assert (learned, foreign) == (len(logged), 0)
    a, b = live.allocator, rebuilt.allocator
    assert isinstance(a, BanditPolicy) and isinstance(b, BanditPolicy)
    assert a.arms.n.sum() > 0
    np.testing.assert_array_equal(a.arms.n, b.arms.n)
    np.testing.assert_allclose(a.arms.b, b.arms.b)
    np.testing.assert_allclose(a.fill.b, b.fill.b)
    for text in ("love song", "night drive", "blue"):
        np.testing.assert_array_equal(live.history.features(text), rebuilt.history.features(text))


def test_decisions_of_another_policy_teach_only_the_query_history() -> None:
    live = pipeline()
    logged = run(live, 30, seed=2)
    odd = {r.decision_id for r, _, _ in logged if int(r.decision_id[1:]) % 2}
    other = [(dataclasses.replace(record, features=np.zeros(DIM - 1)) if record.decision_id in odd else record,
              event, earlier) for record, event, earlier in logged]
    rebuilt = pipeline()
    learned, foreign = rebuilt.replay(other)
    n_foreign = sum(r.decision_id in odd for r, _, _ in logged)
    assert (learned, foreign) == (len(logged) - n_foreign, n_foreign)
    for text in ("love song", "night drive", "blue"):
        np.testing.assert_array_equal(live.history.features(text), rebuilt.history.features(text))
    assert rebuilt.allocator.arms.n.sum() < live.allocator.arms.n.sum()  # type: ignore[attr-defined]


def test_decision_bytes_grows_with_the_lists() -> None:
    rng = np.random.default_rng(0)
    p = pipeline(PolicyKind.STATIC)
    plan = p.decide("love", {}, (), rng)
    small = p.serve(plan, answers(plan.decision.quotas, rng), decision_id="x", ts=1.0, k=5).record
    ids = [f"spotify:track:{i:022d}" for i in range(200)]
    big = dataclasses.replace(small, lists=(StrategyList("lexical", ids, np.zeros(200, np.float32)),))
    assert decision_bytes(big) - decision_bytes(small) > 200 * 50


def test_feedback_on_a_decision_whose_lists_retention_dropped_teaches_nothing() -> None:
    p = pipeline()
    rng = np.random.default_rng(4)
    plan = p.decide("love song", {}, (), rng)
    record = p.serve(plan, answers(plan.decision.quotas, rng), decision_id="x", ts=1.0, k=5).record
    compacted = dataclasses.replace(record, lists=(), final=(), compacted=True)
    before = p.allocator.arms.n.copy()  # type: ignore[attr-defined]
    judged = p.judge(compacted, record.final[0], EventType.CLICK)
    assert not judged.known and judged.reward == 0.0 and not any(o.answered for o in judged.outcomes)
    p.learn(compacted, judged, record.final[0], EventType.CLICK)
    np.testing.assert_array_equal(p.allocator.arms.n, before)  # type: ignore[attr-defined]
    assert not p.history.features("love song").any()


def test_serve_shows_each_recording_once_and_logs_what_it_showed() -> None:
    """Regression: 'dance monkey' on the demo catalog listed "Dance Monkey — Tones and I" three
    times (one recording on three releases). Served results keep the best-ranked copy, fill the k
    slots from further down, and the decision record's `final` is what was shown."""
    from core.catalog import Entity
    from core.ranking import EntityTable

    songs = {"tones1": ("Dance Monkey", "Tones and I"), "tones2": ("Dance Monkey", "Tones and I"),
             "tones3": ("Dance Monkey - Remastered", "Tones and I"), "sky": ("Dance Monkey", "Skylike"),
             "coopex": ("Dance Monkey", "Coopex"), "clmd": ("DANCE", "CLMD")}
    table = EntityTable.from_entities(Entity(id=e, fields={"title": t, "artist": a}) for e, (t, a) in songs.items())
    policy = BanditPolicy(STRATEGIES, DIM, PolicyConfig(kind=PolicyKind.STATIC, levels=(0, 10), budget=30))
    p = SearchPipeline(policy, RRFRanker(), recordings=table)
    plan = p.decide("dance monkey", {}, (), np.random.default_rng(0))
    ids = ["tones1", "tones2", "tones3", "sky", "coopex", "clmd"]
    hits = [Answer(s, 10, CallStatus.OK, 1.0, StrategyList(s, ids, np.linspace(1, 0, 6, dtype=np.float32)))
            for s in STRATEGIES]
    served = p.serve(plan, hits, decision_id="d", ts=0.0, k=3)
    assert served.record.final == ("tones1", "sky", "coopex")
    assert [served.merged.entity_ids[i] for i in served.order.tolist()] == list(served.record.final)
    assert len(served.scores) == 3 and len(served.merged) == 6  # every copy stays a candidate
    plain = SearchPipeline(policy, RRFRanker()).serve(plan, hits, decision_id="d", ts=0.0, k=3)
    assert plain.record.final == ("tones1", "tones2", "tones3")  # without a table: nothing collapses
