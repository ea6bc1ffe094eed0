"""core.pipeline with an explicit plan (SearchRequest.plan) and with partitioned answers."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import InvalidArgumentError
from core.eventlog import EventRecord
from core.merge import StrategyList
from core.pipeline import FORCED, Answer, CallStatus, SearchPipeline, Served
from core.policy.features import DIM
from core.policy.policies import BanditPolicy, PolicyConfig, PolicyKind
from core.ranking import RRFRanker
from core.types import EventType

STRATEGIES = ("lexical", "semantic", "memory")


def pipeline() -> SearchPipeline:
    policy = BanditPolicy(STRATEGIES, DIM, PolicyConfig(kind=PolicyKind.THOMPSON, levels=(0, 10, 20), budget=30))
    return SearchPipeline(policy, RRFRanker())


def learned_state(p: SearchPipeline) -> dict[str, np.ndarray]:
    policy = p.allocator
    assert isinstance(policy, BanditPolicy)
    # copies: state() returns the arrays that learning updates in place
    return {**{k: v.copy() for k, v in policy.arms.state().items()},
            **{f"fill_{k}": v.copy() for k, v in policy.fill.state().items()}}


def ok(name: str, quota: int, ids: list[str], coverage: float = 1.0) -> Answer:
    hits = StrategyList(name, ids, np.linspace(1, 0, len(ids), dtype=np.float32))
    return Answer(name, quota, CallStatus.OK, 3.0, hits, coverage=coverage)


def serve_forced(p: SearchPipeline, plan: dict[str, int], decision_id: str = "d1") -> Served:
    forced = p.force("love song", {"device": "mobile"}, (), plan)
    answers = [ok(s, q, [f"e{i}" for i in range(q)]) if q else Answer(s, 0, CallStatus.SKIPPED, 0.0)
               for s, q in forced.quotas.items()]
    return p.serve(forced, answers, decision_id=decision_id, ts=1.0, k=5)


def test_a_forced_plan_is_served_with_propensity_one_and_logged_as_forced() -> None:
    p = pipeline()
    served = serve_forced(p, {"lexical": 20})
    record = served.record
    assert served.forced and record.policy == FORCED
    assert record.quotas == (20, 0, 0) and record.propensity == 1.0 and record.marginals == (1.0, 1.0, 1.0)
    assert p.allocator.space.quotas(record.allocation) == (20, 0, 0)  # the exact action for off-policy evaluation


def test_the_policy_does_not_learn_from_a_forced_decision_live_or_in_replay() -> None:
    """Feedback on a forced decision leaves the allocator's parameters as they were (the query
    history still learns what the user wanted); replay of the same log agrees."""
    p = pipeline()
    served = serve_forced(p, {"lexical": 10, "semantic": 20})
    before = learned_state(p)
    judged = p.judge(served.record, "e1", EventType.CLICK)
    assert judged.teaches and judged.reward != 0.0  # a satisfying event: it would teach a policy decision
    p.learn(served.record, judged, "e1", EventType.CLICK)
    after = learned_state(p)
    assert before.keys() == after.keys() and all(np.array_equal(before[k], after[k]) for k in before)
    assert p.history.to_json() != pipeline().history.to_json()
    chosen = p.decide("love song", {}, (), np.random.default_rng(0))  # the control: the policy's own decision
    own = p.serve(chosen, [ok(s, q, ["e1"]) if q else Answer(s, 0, CallStatus.SKIPPED, 0.0)
                           for s, q in chosen.quotas.items()], decision_id="d2", ts=2.0, k=5)
    p.learn(own.record, p.judge(own.record, "e1", EventType.CLICK), "e1", EventType.CLICK)
    assert not all(np.array_equal(after[k], v) for k, v in learned_state(p).items())

    fresh = pipeline()
    event = EventRecord(event_id="x", decision_id="d1", entity_id="e1", type=EventType.CLICK, value=0.0, ts=1.0,
                        reward=judged.reward)
    learned, passed = fresh.replay([(served.record, event, [])])
    assert (learned, passed) == (0, 1)
    replayed = learned_state(fresh)
    assert all(np.array_equal(replayed[k], after[k]) for k in after)


@pytest.mark.parametrize(("plan", "match"), [
    ({"lexical": 10, "bogus": 10}, "plan: must name only the strategies"),
    ({"lexical": 15}, "plan: must give each strategy one of the levels"),
    ({"lexical": 20, "semantic": 20}, "with a total of at most 30"),
    ({"lexical": 0}, "plan: must give some strategy a quota > 0"),
])
def test_invalid_plans_name_plan(plan: dict[str, int], match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match) as err:
        pipeline().force("love", {}, (), plan)
    assert err.value.field == "plan"


def test_a_strategy_answered_by_some_of_its_partitions_degrades_the_search() -> None:
    p = pipeline()
    plan = p.force("love", {}, (), {"lexical": 10, "semantic": 10})
    whole = [ok("lexical", 10, ["a", "b"]), ok("semantic", 10, ["c"]), Answer("memory", 0, CallStatus.SKIPPED, 0.0)]
    part = [whole[0], ok("semantic", 10, ["c"], coverage=0.5), whole[2]]
    assert not p.serve(plan, whole, decision_id="w", ts=1.0, k=5).degraded
    assert p.serve(plan, part, decision_id="p", ts=1.0, k=5).degraded
