"""The open-loop load benchmark (benchmarks.load*): schedules, latency from the scheduled time,
the per-rate arithmetic, capacity, and the echo floor's servers."""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks import load
from benchmarks.load_client import LoadGenerator, StepSpec
from benchmarks.load_echo import EchoFanout
from benchmarks.load_gen import LATE, open_loop
from benchmarks.load_stats import (
    HANG,
    OK,
    SHED,
    Arrivals,
    StepRecord,
    arrival_offsets,
    capacity,
    failed_below,
    goodput,
    p99_ratio_interval,
    percentiles,
    rate_list,
    should_stop,
    summarize,
)
from services.client import BrokerClient


def test_poisson_gaps_have_mean_one_over_rate() -> None:
    rate, duration = 50.0, 2000.0
    offsets = arrival_offsets(rate, duration, Arrivals.POISSON, seed=3)
    gaps = np.diff(offsets)
    assert abs(gaps.mean() - 1 / rate) < 0.02 / rate
    assert abs(gaps.std() - 1 / rate) < 0.03 / rate  # exponential: standard deviation = mean
    assert abs(len(offsets) - rate * duration) < 4 * math.sqrt(rate * duration)


def test_poisson_schedule_is_fixed_by_the_seed() -> None:
    a = arrival_offsets(30.0, 10.0, Arrivals.POISSON, seed=1)
    assert np.array_equal(a, arrival_offsets(30.0, 10.0, Arrivals.POISSON, seed=1))
    assert not np.array_equal(a[:10], arrival_offsets(30.0, 10.0, Arrivals.POISSON, seed=2)[:10])


def test_constant_schedule_is_exact() -> None:
    offsets = arrival_offsets(4.0, 2.5, Arrivals.CONSTANT)
    assert offsets.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25]


@settings(max_examples=50, deadline=None)
@given(rate=st.floats(0.5, 2000.0), duration=st.floats(0.1, 20.0), seed=st.integers(0, 2**32 - 1),
       kind=st.sampled_from(list(Arrivals)))
def test_schedules_are_ascending_within_the_step(rate: float, duration: float, seed: int, kind: Arrivals) -> None:
    offsets = arrival_offsets(rate, duration, kind, seed)
    assert np.all(np.diff(offsets) >= 0)
    assert offsets.size == 0 or (offsets[0] >= 0 and offsets[-1] < duration)


@pytest.mark.parametrize(("rate", "duration", "match"), [
    (0.0, 1.0, "`rate` must be finite and > 0"), (-5.0, 1.0, "`rate`"), (float("nan"), 1.0, "`rate`"),
    (10.0, 0.0, "`duration_s` must be finite and > 0"), (10.0, float("inf"), "`duration_s`")])
def test_schedule_rejects_bad_input(rate: float, duration: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        arrival_offsets(rate, duration, Arrivals.CONSTANT)


class VirtualClock:
    """Time that moves only when the code under test says so: a call's blocking work advances it,
    and sleep(d) lets other tasks run first, then moves to at least d later."""

    def __init__(self) -> None:
        self.now = 0.0
        self.calls: list[tuple[int, float]] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        until = self.now + delay
        await asyncio.sleep(0)
        self.now = max(self.now, until)

    def blocking_call(self, cost_s: float) -> Any:
        async def call(i: int, remaining_s: float) -> tuple[str, bool]:
            self.calls.append((i, remaining_s))
            self.now += cost_s  # work that holds the generator's loop (nothing else runs meanwhile)
            return OK, i == 1

        return call


def test_latency_runs_from_the_scheduled_time_when_the_generator_is_behind() -> None:
    """Three requests due at 0, 100 and 200 ms, each holding the loop for 500 ms: the second is
    sent 400 ms late and the third 800 ms late, and their latency counts that wait (coordinated
    omission would report 500 ms for each)."""
    clock = VirtualClock()
    record = asyncio.run(open_loop(clock.blocking_call(0.5), np.array([0.0, 0.1, 0.2]), deadline_s=10.0,
                                   clock=clock, sleep=clock.sleep))
    assert record.latency_ms.tolist() == pytest.approx([500.0, 900.0, 1300.0])
    assert record.lag_ms.tolist() == pytest.approx([0.0, 400.0, 800.0])
    assert record.codes == (OK, OK, OK)
    assert record.degraded.tolist() == [False, True, False]
    # the client deadline counts from the scheduled time too
    assert [r for _, r in clock.calls] == pytest.approx([10.0, 9.6, 9.2])


def test_a_request_due_longer_ago_than_its_deadline_is_not_sent() -> None:
    clock = VirtualClock()
    record = asyncio.run(open_loop(clock.blocking_call(3.0), np.array([0.0, 0.5]), deadline_s=2.0,
                                   clock=clock, sleep=clock.sleep))
    assert record.codes == (OK, LATE)
    assert [i for i, _ in clock.calls] == [0]
    assert record.latency_ms.tolist() == pytest.approx([3000.0, 2500.0])


def test_a_call_that_never_answers_is_a_hang() -> None:
    async def never(i: int, remaining_s: float) -> tuple[str, bool]:
        await asyncio.Event().wait()
        return OK, False

    record = asyncio.run(open_loop(never, np.array([0.0, 0.0]), deadline_s=0.01, grace_s=0.01))
    assert record.codes == (HANG, HANG)
    assert np.all(record.latency_ms >= 20.0)


def test_percentiles_are_nearest_rank() -> None:
    got = percentiles(np.arange(1, 1001, dtype=np.float64))
    assert got == {"p50_ms": 500.0, "p90_ms": 900.0, "p99_ms": 990.0, "p999_ms": 999.0, "max_ms": 1000.0}
    assert set(percentiles(np.zeros(0)).values()) == {None}


def _record(codes: list[str], latency: list[float], degraded: list[bool]) -> StepRecord:
    n = len(codes)
    return StepRecord(scheduled_s=np.arange(n) / 10, latency_ms=np.array(latency, dtype=np.float64),
                      lag_ms=np.zeros(n), codes=tuple(codes), degraded=np.array(degraded))


def test_summarize_counts_statuses_on_hand_made_requests() -> None:
    codes = [OK] * 7 + [SHED, SHED, HANG]
    latency = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 1.0, 1.0, 3000.0]
    row = summarize(_record(codes, latency, [True, True] + [False] * 8), rate=10.0, duration_s=1.0)
    assert (row["sent"], row["ok"], row["throughput"]) == (10, 7, 7.0)
    assert row["errors"] == {SHED: 2, HANG: 1}
    assert (row["shed"], row["hangs"], row["error_share"]) == (2, 1, 0.3)
    assert row["max_ms"] == 70.0  # percentiles of the OK answers only
    assert row["p50_ms"] == 40.0
    assert row["degraded_share"] == round(2 / 7, 4)


def test_step_record_checks_its_shapes() -> None:
    with pytest.raises(ValueError, match="`latency_ms` must have shape"):
        StepRecord(scheduled_s=np.zeros(2), latency_ms=np.zeros(3), lag_ms=np.zeros(2), codes=(OK, OK),
                   degraded=np.zeros(2, dtype=bool))


def _step(latency: np.ndarray, rate: float = 30.0) -> StepRecord:
    """A step of OK answers, one every 1/rate s."""
    n = latency.size
    return StepRecord(scheduled_s=np.arange(n) / rate, latency_ms=latency, lag_ms=np.zeros(n), codes=(OK,) * n,
                      degraded=np.zeros(n, dtype=bool))


def test_the_p99_ratio_interval_covers_an_equal_load_and_not_a_doubled_one() -> None:
    rng = np.random.default_rng(3)
    base = [_step(rng.lognormal(3.0, 0.5, 300)) for _ in range(3)]
    same = [_step(rng.lognormal(3.0, 0.5, 300)) for _ in range(3)]
    interval = p99_ratio_interval(base, same)
    assert interval is not None and interval[0] < 1.0 < interval[1]
    doubled = p99_ratio_interval(base, [replace(s, latency_ms=s.latency_ms * 2) for s in base])
    assert doubled is not None and 1.0 < doubled[0] < 2.0 < doubled[1]
    assert p99_ratio_interval(base, same) == interval  # seeded


def test_the_p99_ratio_interval_resamples_a_burst_whole() -> None:
    """25 slow answers within one second of one step (one stall) make the pooled p99 five times
    the base's; a resample leaves that second out about a third of the time (30 blocks drawn 30
    times), so the interval reaches down to 1. Drawn answer by answer, nearly every resample
    would hold 10 or more of them, and the interval would be [5, 5]."""
    base = [_step(np.full(300, 10.0)) for _ in range(3)]
    other = [_step(np.full(300, 10.0)) for _ in range(3)]
    other[1].latency_ms[30:55] = 50.0  # 30 answers a second: all in the step's second 1
    assert p99_ratio_interval(base, other) == (1.0, 5.0)


def test_the_p99_ratio_interval_needs_answers_and_sane_settings() -> None:
    shed = StepRecord(scheduled_s=np.zeros(2), latency_ms=np.ones(2), lag_ms=np.zeros(2), codes=(SHED, SHED),
                      degraded=np.zeros(2, dtype=bool))
    assert p99_ratio_interval([_step(np.ones(10))], [shed]) is None
    with pytest.raises(ValueError, match="`block_s` must be > 0"):
        p99_ratio_interval([_step(np.ones(10))], [_step(np.ones(10))], block_s=0.0)


def _row(rate: float, p99: float | None, error_share: float = 0.0) -> dict[str, Any]:
    return {"offered_rate": rate, "p99_ms": p99, "error_share": error_share}


def test_capacity_is_the_highest_passing_rate() -> None:
    rows = [_row(80, 60.0), _row(20, 30.0), _row(40, 45.0), _row(120, 140.0), _row(160, 95.0), _row(240, 400.0)]
    assert capacity(rows, budget_ms=100) == 160.0
    assert failed_below(rows, budget_ms=100) == [120.0]  # a spike at 120 does not cap 160
    assert capacity(rows, budget_ms=50) == 40.0
    assert failed_below(rows, budget_ms=50) == []
    assert capacity(rows, budget_ms=10) == 0.0
    assert capacity([_row(20, 30.0), _row(40, 30.0, error_share=0.02)], budget_ms=100) == 20.0
    assert capacity([_row(20, None, error_share=1.0)], budget_ms=100) == 0.0


def test_a_sweep_stops_far_past_the_budget_or_when_most_requests_fail() -> None:
    assert not should_stop(_row(20, 400.0), 100)
    assert should_stop(_row(20, 600.0), 100)
    assert should_stop(_row(20, 50.0, error_share=0.6), 100)
    assert should_stop(_row(20, None, error_share=1.0), 100)


def test_goodput_separates_shed_from_other_errors() -> None:
    row = {"offered_rate": 200.0, "throughput": 90.0, "p99_ms": 104.0, "shed": 900, "hangs": 1,
           "errors": {SHED: 900, "DEADLINE_EXCEEDED": 4, HANG: 1}}
    assert goodput(row, 100.0) == {"offered_rate": 200.0, "throughput": 90.0, "goodput_ratio": 0.9,
                                   "accepted_p99_ms": 104.0, "shed": 900, "other_errors": 5, "hangs": 1}


def test_rate_list_sorts_and_rejects_non_positive_rates() -> None:
    assert rate_list("80, 20,40,20") == [20.0, 40.0, 80.0]
    with pytest.raises(ValueError, match="`rates` must be positive"):
        rate_list("0,20")


@pytest.mark.parametrize(("field", "value", "match"), [
    ("feedback_share", 1.5, "`feedback_share` must be in"), ("deadline_s", 0.0, "`deadline_s` must be"),
    ("budget_ms", 2, "`budget_ms` must be in"), ("address", "127.0.0.1:1,", "`address` must be"),
    ("address", "127.0.0.1:1, 127.0.0.1:2", "`address` must be")])
def test_step_spec_rejects_bad_settings(field: str, value: Any, match: str) -> None:
    settings: dict[str, Any] = {"address": "127.0.0.1:1", "rate": 1.0, "duration_s": 1.0, field: value}
    with pytest.raises(ValueError, match=match):
        StepSpec(**settings)


@pytest.mark.slow
def test_echo_fanout_answers_and_stops() -> None:
    fanout = EchoFanout(shards=2)
    with fanout as address, BrokerClient(address) as client:
        processes = list(fanout.processes)
        assert len(processes) == 3
        first, second = client.search("anything", budget_ms=100), client.search("else", budget_ms=100)
        assert (first.decision_id, second.decision_id) == ("echo-0", "echo-1")
        assert not first.degraded  # both echo shards answered
        client.feedback(first.decision_id, "x", "click")
    assert not any(p.is_alive() for p in processes)
    assert fanout.processes == []


@pytest.mark.slow
def test_the_generator_process_loads_the_echo_floor() -> None:
    with EchoFanout(shards=1) as address, LoadGenerator(pool=64) as generator:
        spec = StepSpec(address=address, rate=40.0, duration_s=0.5, arrivals=Arrivals.CONSTANT, feedback_share=1.0)
        record = generator.step(spec)
    assert record.codes == (OK,) * 20
    assert record.feedback_sent >= 1 and record.feedback_errors == 0  # the user reformulates on empty results
    assert np.all(record.latency_ms > 0)


@pytest.mark.slow
def test_the_generator_takes_several_brokers_in_turn() -> None:
    with EchoFanout(shards=1) as first, EchoFanout(shards=1) as second, LoadGenerator(pool=64) as generator:
        spec = StepSpec(address=f"{first},{second}", rate=40.0, duration_s=0.5, arrivals=Arrivals.CONSTANT)
        assert generator.step(spec).codes == (OK,) * 20
        for address in (first, second):  # an echo broker numbers its answers: each answered 10
            with BrokerClient(address) as client:
                assert client.search("next", budget_ms=100).decision_id == "echo-10"


def test_several_brokers_share_a_private_postgresql(tmp_path: Path) -> None:
    from benchmarks.load import parse_args

    one, two = (load.cluster_config("cluster", Path("indexes/demo"), tmp_path, brokers=n) for n in (1, 2))
    assert (one.brokers, one.store_url) == (1, "") and (two.brokers, two.store_url) == (2, "postgres")
    assert parse_args(["--brokers", "2"]).brokers == 2
    with pytest.raises(SystemExit):
        parse_args(["--brokers", "0"])


def test_assemble_reports_capacities_ratios_and_lower_bounds() -> None:
    from benchmarks.load import assemble, parse_args

    rows = {"cluster": [_row(20, 40.0), _row(40, 90.0), _row(80, 300.0)],
            "noop": [_row(20, 10.0), _row(40, 20.0), _row(80, 60.0)],
            "echo": [_row(20, 5.0), _row(40, 5.0), _row(80, 5.0)]}
    result = assemble({"rows": rows, "overload": {"goodput_ratio": 0.9}}, parse_args(["--rates", "20,40,80"]))
    assert (result["capacity"], result["floor_capacity"], result["echo_capacity"]) == (40.0, 80.0, 80.0)
    assert result["ratios"] == {"floor_capacity": 0.5, "echo_capacity": 0.5}
    assert result["capacity_lower_bound"] == {"cluster": False, "noop": True, "echo": True}
    assert result["overload"] == {"goodput_ratio": 0.9} and result["budget50"] == {}


def test_the_noop_floor_serves_no_live_catalog(tmp_path: Path) -> None:
    """A no-op shard refuses --store, so the no-op cluster has no live catalog; the cluster has one."""
    noop, cluster = (load.cluster_config(t, Path("indexes/demo"), tmp_path) for t in ("noop", "cluster"))
    assert not noop.serves_live and not noop.live_flags("lexical", 0, 0, "events.sqlite")
    assert cluster.serves_live and "--store" in cluster.live_flags("lexical", 0, 0, "events.sqlite")


def test_cpu_per_search_by_process_and_the_brokers_shed_counters() -> None:
    from benchmarks.load_cpu import per_search, shed_counters

    got = per_search({"broker": 10.0, "lexical": 2.0}, {"broker": 12.0, "lexical": 2.5}, 10.0, 500)
    assert got == {"broker": {"cores": 0.2, "ms_per_search": 4.0}, "lexical": {"cores": 0.05, "ms_per_search": 1.0},
                   "total": {"cores": 0.25, "ms_per_search": 5.0}}
    with pytest.raises(ValueError, match="must be > 0"):
        per_search({}, {}, 10.0, 0)
    text = ("# HELP ltrr_broker_shed_searches_total x\nltrr_broker_shed_searches_total 7.0\n"
            "ltrr_broker_shed_queueing_searches_total 2.0\nltrr_broker_searches_total 99.0\n")
    assert shed_counters(text) == {"ltrr_broker_shed_searches_total": 7.0,
                                   "ltrr_broker_shed_queueing_searches_total": 2.0}
