"""Imperfect metadata in the experiment (benchmarks/experiment.py, experiment_grpc.py): the flags,
and an index built from the noisy catalog while the users search by the truth."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from benchmarks.experiment import add_index_options, main, metadata_noise
from benchmarks.experiment_grpc import run_grpc
from core.catalog import Entity, load_jsonl
from core.indexing import build_index
from core.simulator.metadata import MetadataNoise, noisy_catalog
from core.simulator.policies import PolicySpec, standard_policies
from core.simulator.runner import ExperimentConfig, run_experiment
from tests.core.simulator.conftest import STRATEGIES

CONFIG = ExperimentConfig(searches=30, seed=7, learn_every=1)
NOISE = MetadataNoise(playlist=0.5, genre=0.3)  # strong, so that a small slice shows its effect


def static_equal() -> list[PolicySpec]:
    return [s for s in standard_policies(STRATEGIES, CONFIG.levels, CONFIG.budget) if s.name == "static-equal"]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_index_options(parser)
    return parser.parse_args(argv)


def test_noise_flags_default_to_the_documented_noise_and_zero_disables() -> None:
    assert metadata_noise(parse([])) == MetadataNoise()
    assert metadata_noise(parse(["--playlist-noise", "0.2"])) == MetadataNoise(playlist=0.2)
    exact = metadata_noise(parse(["--playlist-noise", "0", "--genre-noise", "0"]))
    assert not exact.enabled and exact.slug() == "exact"


def test_a_noise_flag_out_of_range_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--genre-noise", "1.5", "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert "`genre` must be a share in [0, 1], but got 1.5" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_grpc_refuses_an_index_catalog_in_another_order(music_slice: list[Entity], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="`index_entities` must hold the ids of `entities` in the same order"):
        run_grpc(music_slice, tmp_path, STRATEGIES, static_equal(), CONFIG, tmp_path, index_entities=music_slice[::-1])


@pytest.mark.slow
def test_grpc_serves_the_noisy_index_as_in_process(music_slice: list[Entity], music_index: Path,
                                                   tmp_path: Path) -> None:
    """The cluster is built from the same noisy index and catalog as the in-process run, while the
    users of both search the truth: a static plan sees the same candidates both ways, and the noise
    changes what it retrieves compared with the exact index."""
    noisy = noisy_catalog(music_slice, NOISE)
    root = tmp_path / "index"
    build_index(noisy, root, STRATEGIES, {"lexical": {"fields": "title^2,artist^1.5,album^0.5", "progress": False},
                                          "semantic": {"encoder": "hashing", "cache": str(tmp_path / "emb"),
                                                       "progress": False}})
    grpc = run_grpc(music_slice, root, STRATEGIES, static_equal(), CONFIG, tmp_path / "grpc",
                    index_entities=noisy)["static-equal"]
    assert load_jsonl(tmp_path / "grpc" / "catalog.jsonl") == noisy  # the broker reads the noisy catalog
    ref = run_experiment(music_slice, root, STRATEGIES, static_equal(), CONFIG, tmp_path / "ref")["static-equal"]
    exact = run_experiment(music_slice, music_index, STRATEGIES, static_equal(), CONFIG,
                           tmp_path / "exact")["static-equal"]
    np.testing.assert_array_equal(grpc.intent, ref.intent)  # the same searches of the truth
    np.testing.assert_array_equal(ref.intent, exact.intent)
    assert (grpc.target_found == ref.target_found).mean() >= 0.95
    assert (grpc.candidates == ref.candidates).mean() >= 0.95
    assert not np.array_equal(ref.candidates, exact.candidates)
