"""The semantic strategy end to end (hashing encoder): contract, exact oracle, storage, vectors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.catalog import Entity
from core.errors import CatalogError, IndexFormatError, InvalidArgumentError, NotFoundError
from core.indexing import build_index, open_strategy
from core.query import Query, make_query
from core.semantic.encoders import HashingEncoder
from core.semantic.index import SemanticConfig, SemanticStrategy, entity_text
from tests.core.strategy_contract import StrategyContract

DIM = 256


def build(entities: list[Entity], root: Path, cache: Path, **options: Any) -> SemanticStrategy:
    build_index(entities, root, ["semantic"],
                {"semantic": {"encoder": "hashing", "cache": str(cache), "progress": False, **options}})
    strategy = open_strategy(root, "semantic")
    assert isinstance(strategy, SemanticStrategy)
    return strategy


@pytest.fixture(scope="module")
def semantic_dir(tmp_path_factory: pytest.TempPathFactory, catalog: list[Entity]) -> Path:
    root = tmp_path_factory.mktemp("semantic-index")
    build(catalog, root, tmp_path_factory.mktemp("cache"))
    return root


@pytest.fixture(scope="module")
def strategy(semantic_dir: Path) -> SemanticStrategy:
    s = open_strategy(semantic_dir, "semantic")
    assert isinstance(s, SemanticStrategy)
    s.warm_up()
    return s


class TestSemanticContract(StrategyContract):
    strategy_name = "semantic"
    matching_query = "love night"

    @pytest.fixture(scope="class")
    @classmethod
    def index_dir(cls, semantic_dir: Path) -> Path:
        return semantic_dir


@pytest.mark.parametrize("text", ["love", "night dance", "blue river fire heart", "artist 3", "sumer rian"])
def test_agrees_with_brute_force_cosine(strategy: SemanticStrategy, catalog: list[Entity], text: str) -> None:
    """Oracle with tie tolerance: the synthetic catalog repeats titles, so equal scores may swap."""
    docs = HashingEncoder().encode([entity_text(e, (), " — ") for e in catalog])
    expected = docs @ HashingEncoder().encode([text])[0]
    hits = strategy.retrieve(make_query(text), 20, None)
    np.testing.assert_allclose(hits.scores, np.sort(expected)[::-1][:20], atol=2e-3)  # f16 storage
    np.testing.assert_allclose(hits.scores, expected[hits.ordinals], atol=2e-3)


def test_describe_and_vector_dim(strategy: SemanticStrategy) -> None:
    d = strategy.describe()
    assert strategy.vector_dim == DIM and d["dim"] == "256" and d["encoder"] == "hashing"
    assert d["vectors"] == "300" and d["metric"] == "cos" and d["dtype"] == "f16" and d["fields"] == "*"


def test_query_vector_is_used_instead_of_text(strategy: SemanticStrategy, catalog: list[Entity]) -> None:
    target = HashingEncoder().encode([entity_text(catalog[42], (), " — ")])[0]
    hits = strategy.retrieve(make_query("", vector=target.tolist(), vector_dim=DIM), 1, None)
    assert hits.scores[0] == pytest.approx(1.0, abs=2e-3)
    assert entity_text(catalog[int(hits.ordinals[0])], (), " — ") == entity_text(catalog[42], (), " — ")


@pytest.mark.parametrize(("vector", "match"), [
    ([0.1] * 3, "query.vector: must have 256 values, but got 3"),
    ([float("nan")] + [0.1] * 255, "query.vector: must hold only finite values"),
    ([float("inf")] + [0.1] * 255, "query.vector: must hold only finite values"),
    ([0.0] * 256, "query.vector: must not be all zeros"),
])
def test_bad_query_vectors_are_invalid_arguments(strategy: SemanticStrategy, vector: list[float], match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match) as err:
        strategy.retrieve(Query(text="love", vector=np.array(vector, dtype=np.float32)), 5, None)
    assert err.value.field == "query.vector"


def test_empty_query_needs_a_vector(strategy: SemanticStrategy) -> None:
    with pytest.raises(InvalidArgumentError, match=r"query\.text"):
        make_query("  ", vector_dim=strategy.vector_dim)


def test_persistence_round_trip(semantic_dir: Path, strategy: SemanticStrategy, tmp_path: Path) -> None:
    manifest = json.loads((semantic_dir / "semantic" / "manifest.json").read_text())
    assert manifest["params"]["vectors"] == 300 and manifest["params"]["dim"] == DIM
    assert strategy.vectors.view  # memory-mapped
    again = open_strategy(semantic_dir, "semantic", {"expansion_search": 200})
    for text in ("love", "gold city"):
        a, b = strategy.retrieve(make_query(text), 10, None), again.retrieve(make_query(text), 10, None)
        assert a.ordinals.tolist() == b.ordinals.tolist() and a.scores.tolist() == b.scores.tolist()
    assert again.describe()["expansion_search"] == "200"
    copy = tmp_path / "index"
    shutil.copytree(semantic_dir, copy)
    with (copy / "semantic" / "index.usearch").open("r+b") as f:
        f.seek(200)
        f.write(b"\xff\xff\xff\xff")
    with pytest.raises(IndexFormatError, match=r"index\.usearch: checksum mismatch"):
        open_strategy(copy, "semantic")


def test_refuses_an_index_of_another_encoder(semantic_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "index"
    shutil.copytree(semantic_dir, copy)
    manifest_path = copy / "semantic" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["params"]["fingerprint"] = "some-other-model"
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(IndexFormatError, match="built with encoder 'some-other-model'"):
        open_strategy(copy, "semantic")


def test_precomputed_vectors_are_honoured(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((40, DIM))
    entities = [Entity(id=f"v{i}", fields={"title": "same words"}, vector=tuple(v)) for i, v in enumerate(vectors)]
    entities.append(Entity(id="text-only", fields={"title": "love"}))
    entities.append(Entity(id="nothing", fields={"title": " "}))
    s = build(entities, tmp_path / "index", tmp_path / "cache")
    assert len(s.vectors) == 41  # "nothing" has no content and is not indexed
    hits = s.retrieve(Query(text="", vector=vectors[17].astype(np.float32)), 3, None)
    assert s.collection.ids[int(hits.ordinals[0])] == "v17" and hits.scores[0] == pytest.approx(1, abs=2e-3)
    assert s.collection.ids[int(s.retrieve(make_query("love"), 1, None).ordinals[0])] == "text-only"


def test_precomputed_vector_of_wrong_length_is_refused(tmp_path: Path) -> None:
    entities = [Entity(id="a", fields={"title": "x"}), Entity(id="b", vector=(0.5, 0.5))]
    with pytest.raises(CatalogError, match="entity 'b': `vector` must have 256 values for the hashing encoder, "
                                           "but got 2"):
        build(entities, tmp_path / "index", tmp_path / "cache")


def test_fields_and_separator_are_configurable(tmp_path: Path) -> None:
    entities = [Entity(id="a", fields={"album": "Fearless", "artist": "Taylor Swift", "title": "Love Story"}),
                Entity(id="b", fields={"album": "Love Story", "artist": "Someone", "title": "Other"})]
    assert entity_text(entities[0], (), " — ") == "Love Story — Taylor Swift — Fearless"
    assert entity_text(Entity(id="d", fields={"text": "body", "title": "T"}), (), " ") == "T body"
    s = build(entities, tmp_path / "index", tmp_path / "cache", fields="album", separator=" | ")
    hits = s.retrieve(make_query("love story"), 2, None)
    assert s.collection.ids[int(hits.ordinals[0])] == "b"
    assert s.describe()["fields"] == "album" and s.describe()["separator"] == " | "


def test_add_remove_by_entity_id_and_save(semantic_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "index"
    shutil.copytree(semantic_dir, copy)
    s = open_strategy(copy, "semantic")
    assert isinstance(s, SemanticStrategy)
    victim = s.collection.ids[int(s.retrieve(make_query("love"), 1, None).ordinals[0])]
    assert s.remove([victim]) == 1 and s.remove([victim]) == 0
    s.add_texts(["t0007"], ["a completely different zebra title"])
    top = s.retrieve(make_query("zebra title"), 1, None)
    assert s.collection.ids[int(top.ordinals[0])] == "t0007"
    s.save(copy)
    reopened = open_strategy(copy, "semantic")
    ids = {reopened.collection.ids[o] for o in reopened.retrieve(make_query("love"), 300, None).ordinals}
    assert victim not in ids and len(ids) == 299
    with pytest.raises(NotFoundError, match="nope"):
        s.remove(["nope"])
    with pytest.raises(InvalidArgumentError, match=r"vectors: must have shape \(1, 256\)"):
        s.add(["t0001"], np.ones((1, 3), dtype=np.float32))


@pytest.mark.parametrize(("options", "match"), [
    ({"encoder": "bert"}, "`encoder` must be one of"),
    ({"dtype": "f8"}, "`dtype` must be one of"),
    ({"fields": "title,title"}, "`fields` must be distinct"),
    ({"connectivity": "0"}, "`connectivity` must be in"),
])
def test_config_rejects(options: dict[str, str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SemanticConfig.from_options(options)


def test_config_params_round_trip() -> None:
    config = SemanticConfig.from_options({"encoder": "hashing", "hashing_dim": "64", "fields": "title, artist",
                                          "dtype": "i8", "expansion_search": "99"})
    assert config.fields == ("title", "artist") and config.encoder_options == {"hashing_dim": 64}
    assert SemanticConfig.from_params(config.to_params()) == config
    assert SemanticConfig.from_params(config.to_params(), {"exact_below": 0, "dtype": "f32"}).ann.exact_below == 0
    assert SemanticConfig.from_params(config.to_params(), {"dtype": "f32"}).ann.dtype == "i8"  # build-time only


class CountingEncoder(HashingEncoder):
    """A hashing encoder that counts the texts it encodes."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def encode(self, texts: Any, *, batch_size: int = 64) -> np.ndarray:
        self.calls += len(texts)
        return super().encode(texts, batch_size=batch_size)


def test_query_cache_serves_repeats_and_stays_bounded(strategy: SemanticStrategy) -> None:
    encoder = CountingEncoder()
    one = encoder.encode(["x"])[0].nbytes + 112  # a cached vector's estimated bytes
    encoder.calls = 0
    s = SemanticStrategy(strategy.config, strategy.collection, encoder, strategy.vectors, query_cache_bytes=3 * one)
    first = s.retrieve(make_query("love night"), 5, None)
    again = s.retrieve(make_query("love night"), 5, None)
    assert encoder.calls == 1 and (s.query_cache.hits, s.query_cache.misses) == (1, 1)
    np.testing.assert_array_equal(first.ordinals, again.ordinals)
    np.testing.assert_array_equal(s.query_vector(make_query("love night")), encoder.encode(["love night"])[0])
    for text in ("a", "b", "c", "d", "e"):
        s.query_vector(make_query(text))
    assert len(s.query_cache) == 3 and s.query_cache.bytes <= 3 * one
    assert "love night" not in s.query_cache  # least recently used went first
    assert not s.query_vector(make_query("e")).flags.writeable  # shared: callers must not modify it


def test_query_cache_can_be_off(semantic_dir: Path) -> None:
    s = open_strategy(semantic_dir, "semantic", {"query_cache_bytes": 0})
    assert isinstance(s, SemanticStrategy)
    s.query_vector(make_query("love"))
    s.query_vector(make_query("love"))
    assert len(s.query_cache) == 0 and (s.query_cache.hits, s.query_cache.misses) == (0, 2)
