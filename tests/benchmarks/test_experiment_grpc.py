"""The experiment's gRPC mode (benchmarks/experiment_grpc.py) end to end on a real cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import benchmarks.experiment_grpc as grpc_mode
from benchmarks.experiment_grpc import GrpcRecords, broker_settings, run_grpc
from core.catalog import Entity
from core.eventlog import EventLog
from core.policy.features import DIM
from core.policy.policies import BanditPolicy, PolicyConfig, PolicyKind
from core.simulator.policies import ORACLE, PolicySpec, diagnostic_policies, standard_policies
from core.simulator.runner import EXPERIMENT_BUDGET, EXPERIMENT_LEVELS, ExperimentConfig, run_experiment
from services.process import ServerProcess
from tests.core.simulator.conftest import STRATEGIES

pytestmark = pytest.mark.slow
SEARCHES, SEED = 40, 5
PLANS = ("thompson", "static-equal")
# learn_every=1: the in-process memory strategy learns each event at once, as the broker forwards it.
CONFIG = ExperimentConfig(searches=SEARCHES, seed=SEED, learn_every=1)


def specs(names: tuple[str, ...] = PLANS) -> list[PolicySpec]:
    return [s for s in standard_policies(STRATEGIES, CONFIG.levels, CONFIG.budget) if s.name in names]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("grpc-work")


@pytest.fixture(scope="module")
def runs(music_slice: list[Entity], music_index: Path, workdir: Path) -> dict[str, GrpcRecords]:
    return run_grpc(music_slice, music_index, STRATEGIES, specs(), CONFIG, workdir)


def test_a_record_per_search_with_decisions_within_the_budget(runs: dict[str, GrpcRecords]) -> None:
    assert set(runs) == set(PLANS)
    for name, rec in runs.items():
        assert len(rec) == SEARCHES and rec.quotas.shape == (SEARCHES, len(STRATEGIES))
        assert np.isin(rec.quotas, EXPERIMENT_LEVELS).all() and np.all(rec.quotas.sum(axis=1) <= EXPERIMENT_BUDGET)
        assert np.all(rec.called >= 1) and np.all((rec.propensity > 0) & (rec.propensity <= 1))
        assert np.all(rec.fetched >= rec.candidates) and rec.candidates.mean() > 10
        assert np.all(rec.regret >= -1e-6) and np.all(rec.search_ms > 0) and rec.seconds > 0
        assert rec.feedback.sum() >= SEARCHES // 3, name  # satisfied, or reformulated to the target
        assert not np.isnan(rec.reward[rec.feedback]).any() and np.isnan(rec.reward[~rec.feedback]).all()
    np.testing.assert_array_equal(runs["static-equal"].quotas, np.full((SEARCHES, 4), 50))
    assert (runs["static-equal"].propensity == 1).all()
    assert len(np.unique(runs["thompson"].quotas, axis=0)) > 3  # the broker's own Thompson sampling


def test_feedback_reached_the_broker_and_the_memory_shard(runs: dict[str, GrpcRecords], workdir: Path) -> None:
    for name, rec in runs.items():
        state = workdir / f"grpc-{SEED}-{name}"
        with EventLog(state / "broker" / "events.sqlite") as log:
            decisions, events = log.counts()  # every event of a search is logged, also those that teach nothing
        assert decisions == SEARCHES and events >= rec.feedback.sum()
        # The broker stopped gracefully: its last snapshot has learned every logged event.
        policy = BanditPolicy(STRATEGIES, DIM, PolicyConfig(levels=EXPERIMENT_LEVELS, budget=EXPERIMENT_BUDGET))
        assert policy.load(state / "broker" / "policy.npz")["applied_event_rowid"] == events
        assert any((state / "memory").iterdir())  # the memory shard's log of the forwarded events


def test_a_static_plan_sees_what_it_sees_in_process(runs: dict[str, GrpcRecords], music_slice: list[Entity],
                                                    music_index: Path, tmp_path: Path) -> None:
    """Candidate recall comes from the broker's real candidates, rankings from its real ranker: a
    static plan (no policy randomness) must reproduce the in-process run of the same searches.
    The memory shard hears feedback asynchronously through the broker, so allow one or two searches
    to see it a search late."""
    ref = run_experiment(music_slice, music_index, STRATEGIES, specs(("static-equal",)), CONFIG, tmp_path)
    a, b = runs["static-equal"], ref["static-equal"]
    for field in ("intent", "quotas", "allocation"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    np.testing.assert_allclose(a.features, b.features, atol=1e-6)
    for field in ("target_found", "candidates", "rr", "feedback", "acted_found"):
        assert (getattr(a, field) == getattr(b, field)).mean() >= 0.95, field
    assert 0 < a.target_found.mean() < 1


def test_plans_the_broker_cannot_run_are_refused_before_anything_starts(music_slice: list[Entity],
                                                                       music_index: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'oracle' has no broker policy"):
        run_grpc(music_slice, music_index, STRATEGIES, [*specs(), PolicySpec(name=ORACLE, kind=None)], CONFIG,
                 tmp_path)
    assert not any(tmp_path.iterdir())
    with pytest.raises(ValueError, match="taught each search's target"):
        broker_settings(diagnostic_policies()[0], CONFIG, STRATEGIES)
    static = PolicySpec(name="semantic-heavy", kind=PolicyKind.STATIC, static_quotas=(200, 0, 0, 0))
    settings = broker_settings(static, CONFIG, ("semantic", "lexical", "attribute", "memory"))
    assert settings["static_quotas"] == "0,200,0,0"  # reordered to the broker's strategy order
    assert settings["levels"] == ",".join(map(str, EXPERIMENT_LEVELS)) and settings["policy"] == "static"


def test_every_process_is_stopped_when_a_run_fails(music_slice: list[Entity], music_index: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[ServerProcess] = []
    original = grpc_mode.spawn

    def spawn(*args: Any, **kwargs: Any) -> ServerProcess:
        started.append(original(*args, **kwargs))
        return started[-1]

    def fail(*_: object) -> None:
        raise RuntimeError("simulated failure mid-run")

    monkeypatch.setattr(grpc_mode, "spawn", spawn)
    monkeypatch.setattr(grpc_mode.PlanRun, "step", fail)
    strategies = ("lexical", "memory")  # fewer processes, same paths: a shard started once, one per plan
    plan = PolicySpec(name="static", kind=PolicyKind.STATIC)
    with pytest.raises(RuntimeError, match="simulated failure"):
        run_grpc(music_slice, music_index, strategies, [plan], CONFIG, tmp_path)
    assert len(started) == len(strategies) + 1  # every shard and the broker
    codes = [s.process.poll() for s in started]
    logs = {f.name: f.read_text()[-2000:] for f in (tmp_path / "logs").glob("*")}
    assert all(code == 0 for code in codes), (codes, logs)  # the logs say why, should this ever fail
