"""The experiment's measures, verdict, oracle gap and results.json (benchmarks/experiment.py,
benchmarks/experiment_verdict.py), on small runs with the hashing encoder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from benchmarks.experiment import COLUMNS, DEFAULT, main, report, seed_record
from benchmarks.experiment_verdict import PEER, oracle_gap, verdict
from core.catalog import Entity
from core.policy.policies import DEFAULT_KIND
from core.simulator.policies import ORACLE, standard_policies
from core.simulator.runner import ExperimentConfig, run_experiment
from core.simulator.users import Intent
from tests.core.simulator.conftest import STRATEGIES

MEASURES = ("target_recall", "candidate_recall", "mrr@10", "ndcg@10", "fetched", "strategies_called",
            "cumulative_regret")


def seeds(target: list[float], fetched: float = 100.0, regret: float = 10.0, candidate: float = 0.5
          ) -> list[dict[str, Any]]:
    return [{"seed": s, "target_recall": t, "candidate_recall": candidate, "fetched": fetched,
             "cumulative_regret": regret + s} for s, t in enumerate(target)]


def test_the_default_policy_is_the_brokers_learned_default() -> None:
    assert DEFAULT == DEFAULT_KIND.value == "thompson"
    assert COLUMNS[0] == ("target_recall", "target recall")  # the primary measure comes first


def test_the_verdict_is_on_target_recall_against_the_best_static_plan_paired_over_seeds() -> None:
    pol = {"thompson": seeds([0.70, 0.72, 0.71], fetched=90.0, regret=5.0),
           "attribute-only": seeds([0.66, 0.69, 0.67]), "static-equal": seeds([0.60, 0.61, 0.62]),
           "linucb": seeds([0.9, 0.9, 0.9]), PEER: seeds([0.5, 0.5, 0.5], regret=8.0)}
    v = verdict(pol, "thompson")
    c = v["target_recall"]
    diffs = [0.04, 0.03, 0.04]  # thompson - attribute-only per seed; linucb is not a static plan
    half = stats.t.ppf(0.975, 2) * np.std(diffs, ddof=1) / np.sqrt(3)
    assert c["best_static"] == "attribute-only"
    assert c["difference"] == pytest.approx(np.mean(diffs)) and c["half_width"] == pytest.approx(half)
    assert c["met"] is True and c["fetched"] == 90.0 and c["best_static_fetched"] == 100.0
    assert v["regret_vs_peer"]["difference"] == pytest.approx(-3.0) and v["regret_vs_peer"]["met"] is True
    assert v["met"] is True
    # fetching more than the best static plan fails, whatever the recall
    pol["thompson"] = seeds([0.70, 0.72, 0.71], fetched=101.0, regret=5.0)
    assert verdict(pol, "thompson")["target_recall"]["met"] is False and verdict(pol, "thompson")["met"] is False
    # a difference inside its interval fails
    pol["thompson"] = seeds([0.70, 0.66, 0.70], fetched=90.0, regret=5.0)
    assert verdict(pol, "thompson")["target_recall"]["met"] is False
    # one seed: no interval, no recall verdict
    one = {name: runs[:1] for name, runs in pol.items()}
    assert verdict(one, "thompson")["target_recall"]["met"] is None and verdict(one, "thompson")["met"] is None


def test_the_oracle_gap_is_the_share_of_the_best_static_plans_gap_closed() -> None:
    pol = {"thompson": seeds([0.7, 0.8]), "lexical-only": seeds([0.6, 0.6]), "static-rrf": seeds([0.5, 0.7]),
           ORACLE: seeds([0.9, 1.0])}
    gap = oracle_gap(pol)
    # the best static plan by mean target recall: lexical-only 0.6 vs static-rrf 0.6; max keeps the first
    assert gap["best_static"] == "lexical-only"
    assert gap["plans"]["thompson"]["per_seed"] == pytest.approx([0.1 / 0.3, 0.2 / 0.4])
    assert gap["plans"]["static-rrf"]["per_seed"] == pytest.approx([-0.1 / 0.3, 0.1 / 0.4])
    assert gap["plans"]["thompson"]["share"] == pytest.approx((0.75 - 0.6) / (0.95 - 0.6))
    assert gap["plans"]["lexical-only"]["share"] == 0.0 and ORACLE not in gap["plans"]
    assert oracle_gap({"thompson": seeds([0.7])}) == {}  # no oracle, no static plan
    assert oracle_gap({"lexical-only": seeds([0.7]), ORACLE: seeds([0.7])}) == {}  # no gap


def test_a_seed_without_a_gap_is_left_out_of_the_interval_not_of_the_share() -> None:
    """Guards the oracle-gap bar vanishing when one seed of a short run has no gap (the best
    static plan as good as the oracle there)."""
    pol = {"thompson": seeds([0.7, 0.8, 0.75]), "lexical-only": seeds([0.6, 0.6, 0.6]),
           ORACLE: seeds([0.9, 1.0, 0.6])}
    g = oracle_gap(pol)["plans"]["thompson"]
    assert g["share"] == pytest.approx((0.75 - 0.6) / (2.5 / 3 - 0.6))
    assert g["per_seed"][:2] == pytest.approx([0.1 / 0.3, 0.2 / 0.4]) and np.isnan(g["per_seed"][2])
    assert g["half_width"] == pytest.approx(stats.t.ppf(0.975, 1) * np.std([1 / 3, 1 / 2], ddof=1) / np.sqrt(2))


@pytest.fixture(scope="module")
def small_run(music_slice: list[Entity], music_index: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> dict[str, Any]:
    config = ExperimentConfig(searches=80, seed=1)
    specs = [s for s in standard_policies(STRATEGIES, config.levels, config.budget)
             if s.name in ("thompson", "static-equal", "attribute-only", ORACLE)]
    return run_experiment(music_slice, music_index, STRATEGIES, specs, config, tmp_path_factory.mktemp("work"))


def test_a_seed_record_holds_the_issues_measures_overall_and_per_intent(small_run: dict[str, Any]) -> None:
    rec = small_run["thompson"]
    record = seed_record(1, rec)
    assert record["seed"] == 1 and all(np.isfinite(record[k]) for k in MEASURES)
    assert record["target_recall"] == pytest.approx(rec.target_found.mean())
    fb = rec.feedback
    assert record["candidate_recall"] == pytest.approx(rec.acted_found[fb].mean())
    assert record["mrr@10"] == pytest.approx(rec.rr.mean()) and 0 < record["ndcg@10"] <= 1
    assert set(record["by_intent"]) == {i.name.lower() for i in Intent}
    for i in Intent:
        assert record["by_intent"][i.name.lower()]["target_recall"] == pytest.approx(
            rec.target_found[rec.intent == i].mean())
    # the oracle retrieves every target any plan retrieves
    assert seed_record(1, small_run[ORACLE])["target_recall"] >= record["target_recall"]


def test_the_report_leads_with_target_recall(small_run: dict[str, Any]) -> None:
    pol = {name: [seed_record(0, rec)] for name, rec in small_run.items()}
    result = {"default_policy": "thompson", "policies": pol, "searches": 80, "seeds": 1, "encoder": "hashing",
              "seconds": 1.0, "jobs": 1, "mode": "inprocess", "verdict": verdict(pol, "thompson"),
              "oracle_gap": oracle_gap(pol), "run": {"threads": 1, "commit": "test", "machine": "test"}}
    text = report(result)
    assert "| policy | target recall | candidate recall | MRR@10 |" in text
    assert "- target recall: thompson - " in text and "no verdict (one seed gives no interval)" in text
    assert "Share of the target-recall gap" in text


@pytest.mark.slow
def test_main_writes_results_json_with_a_record_per_seed(tmp_path: Path) -> None:
    """End to end over the demo catalog (the hashing encoder: no model needed): results.json holds
    default_policy, the run's settings, one record per seed of every plan, seeds counted from
    --first-seed, and the headroom per seed; the plots are written."""
    out = tmp_path / "out"
    main(["--searches", "30", "--seeds", "2", "--first-seed", "5",
          "--policies", "thompson,static-equal,attribute-only,oracle",
          "--ope-searches", "0", "--jobs", "1", "--encoder", "hashing", "--out", str(out)])
    result = json.loads((out / "results.json").read_text())
    assert result["default_policy"] == "thompson" and result["encoder"] == "hashing"
    assert result["settings"]["options"]["encoder"] == "hashing" and "simulator" in result["settings"]
    assert result["run"]["commit"]
    for name in ("thompson", "static-equal", "attribute-only", "oracle"):
        records = result["policies"][name]
        assert [r["seed"] for r in records] == [5, 6]
        assert all(k in r for r in records for k in MEASURES)
    assert result["verdict"]["target_recall"]["best_static"] in ("static-equal", "attribute-only")
    # the equal split's level tables price every allocation on its searches: no fixed split beats
    # the best one, routing per intent or per query does no worse, and none beats the oracle
    rooms = result["headroom"]
    assert len(rooms) == 2
    for room, equal in zip(rooms, result["policies"]["static-equal"], strict=True):
        assert equal["target_recall"] <= room["best_fixed"] <= room["per_intent"] <= room["oracle"]
        assert room["per_query"] <= room["oracle"] and len(room["best_fixed_quotas"]) == 4
    assert "Headroom on static-equal's level tables" in (out / "results.md").read_text()
    assert {Path(p).name for p in result["plots"]} == {"recall_over_time.png", "cumulative_regret.png",
                                                      "oracle_gap.png", "quota_mix_thompson.png"}
    assert all((out / p).stat().st_size > 10_000 for p in result["plots"])
