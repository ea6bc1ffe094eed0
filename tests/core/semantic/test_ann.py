"""The usearch vector index: HNSW against exact search, filters, storage types, updates, views."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pyroaring import BitMap

from core.semantic.ann import STAGE_CHUNK, AnnConfig, VectorIndex
from core.semantic.encoders import l2_normalize

N, DIM = 3000, 32


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    """Clustered unit vectors (as real embeddings are) and queries near them; fixed seed."""
    rng = np.random.default_rng(42)
    centres = rng.standard_normal((30, DIM))
    points = centres[rng.integers(0, 30, N)] + 0.6 * rng.standard_normal((N, DIM))
    queries = centres[rng.integers(0, 30, 50)] + 0.6 * rng.standard_normal((50, DIM))
    return l2_normalize(points), l2_normalize(queries)


def exact_topk(points: np.ndarray, query: np.ndarray, k: int, allowed: BitMap | None = None) -> np.ndarray:
    sims = points @ query
    if allowed is not None:
        mask = np.zeros(len(points), dtype=bool)
        mask[np.asarray(allowed.to_array(), dtype=np.int64)] = True
        sims = np.where(mask, sims, -np.inf)
    order = np.argsort(-sims, kind="stable")[:k]
    return order[np.isfinite(sims[order])]


def build(points: np.ndarray, **config: object) -> VectorIndex:
    index = VectorIndex.create(points.shape[1], AnnConfig(**config))  # type: ignore[arg-type]
    index.add(np.arange(len(points)), points)
    return index


@pytest.fixture(scope="module")
def hnsw(data: tuple[np.ndarray, np.ndarray]) -> VectorIndex:
    return build(data[0], exact_below=0, dtype="f32")


def recall_at_10(index: VectorIndex, points: np.ndarray, queries: np.ndarray) -> float:
    found = 0
    for q in queries:
        keys, _, _ = index.search(q, 10)
        found += len(set(keys.tolist()) & set(exact_topk(points, q, 10).tolist()))
    return found / (10 * len(queries))


@pytest.mark.parametrize("dtype", ["f32", "f16", "i8"])
def test_hnsw_agrees_with_exact_search(data: tuple[np.ndarray, np.ndarray], dtype: str) -> None:
    points, queries = data
    index = build(points, exact_below=0, dtype=dtype)
    assert recall_at_10(index, points, queries) >= (0.95 if dtype != "i8" else 0.9)


def test_scores_are_cosine_similarities_best_first(hnsw: VectorIndex, data: tuple[np.ndarray, np.ndarray]) -> None:
    points, queries = data
    keys, sims, total = hnsw.search(queries[0], 20)
    assert total == N and keys.dtype == np.int64 and sims.dtype == np.float32
    np.testing.assert_allclose(sims, points[keys] @ queries[0], atol=1e-5)
    assert np.all(np.diff(sims) <= 0)


def test_small_index_is_searched_exactly(data: tuple[np.ndarray, np.ndarray]) -> None:
    points, queries = data
    small = build(points[:500], dtype="f32", expansion_search=1, connectivity=2)  # a poor graph...
    for q in queries[:10]:
        keys, _, _ = small.search(q, 10)  # ...is not used below exact_below
        assert keys.tolist() == exact_topk(points[:500], q, 10).tolist()


@pytest.mark.parametrize("share", [0.9, 0.3, 0.05, 0.002])
def test_filter_meets_quota_with_allowed_keys_only(hnsw: VectorIndex, data: tuple[np.ndarray, np.ndarray],
                                                   share: float) -> None:
    points, queries = data
    rng = np.random.default_rng(1)
    allowed = BitMap(np.flatnonzero(rng.random(N) < share).astype(np.uint32))
    for q in queries[:10]:
        keys, sims, total = hnsw.search(q, 10, allowed)
        assert total == len(allowed)
        assert len(keys) == min(10, len(allowed)) and set(keys.tolist()) <= set(allowed)
        assert np.all(np.diff(sims) <= 0)
        expected = exact_topk(points, q, 10, allowed)
        assert len(set(keys.tolist()) & set(expected.tolist())) >= 0.8 * len(expected)


def test_filter_widens_until_exhausted(data: tuple[np.ndarray, np.ndarray]) -> None:
    """A filter the first fetch misses entirely must still be answered (by widening to a full scan)."""
    points, queries = data
    index = build(points, exact_below=0, overfetch=1.0)
    far = exact_topk(points, -queries[0], 2500)  # the 2500 entities least like the query
    allowed = BitMap(far.astype(np.uint32))
    keys, _, total = index.search(queries[0], 5, allowed)
    assert total == 2500 and len(keys) == 5 and set(keys.tolist()) <= set(allowed)
    keys, _, _ = index.search(queries[0], 50, BitMap([int(far[0]), int(far[1])]) | BitMap([N + 7]))
    assert sorted(keys.tolist()) == sorted(far[:2].tolist())  # ordinals outside the index are ignored


def test_empty_allowed_and_empty_index(hnsw: VectorIndex, data: tuple[np.ndarray, np.ndarray]) -> None:
    _, queries = data
    assert [len(a) for a in hnsw.search(queries[0], 5, BitMap())[:2]] == [0, 0]
    empty = VectorIndex.create(DIM, AnnConfig())
    assert empty.search(queries[0], 5)[2] == 0


def test_add_replace_and_remove(data: tuple[np.ndarray, np.ndarray]) -> None:
    points, queries = data
    index = build(points[:100], dtype="f32")
    index.add(np.array([5]), queries[:1])  # re-embed ordinal 5 as the query itself
    keys, sims, _ = index.search(queries[0], 1)
    assert keys.tolist() == [5] and sims[0] == pytest.approx(1.0, abs=1e-5)
    assert len(index) == 100
    assert index.remove(np.array([5, 999])) == 1 and len(index) == 99
    assert 5 not in index.search(queries[0], 100)[0].tolist()


def test_saved_index_opens_as_a_view_and_copies_on_write(tmp_path: Path, data: tuple[np.ndarray, np.ndarray]
                                                          ) -> None:
    points, queries = data
    index = build(points[:400], dtype="f16", exact_below=0)
    path = tmp_path / "index.usearch"
    path.write_bytes(index.to_bytes())
    view = VectorIndex.open(path, index.config)
    assert view.view and len(view) == 400 and view.dim == DIM
    assert view.search(queries[0], 10)[0].tolist() == index.search(queries[0], 10)[0].tolist()
    view.remove(view.search(queries[0], 1)[0])
    assert not view.view and len(view) == 399
    assert len(VectorIndex.open(path, index.config)) == 400  # the file is untouched


def test_a_view_made_writable_ahead_searches_alike_and_leaves_the_file(tmp_path: Path,
                                                                     data: tuple[np.ndarray, np.ndarray]) -> None:
    points, queries = data
    index = build(points[:300], dtype="f16", exact_below=0)
    path = tmp_path / "index.usearch"
    path.write_bytes(index.to_bytes())
    view = VectorIndex.open(path, index.config)
    before = [view.search(q, 10)[0].tolist() for q in queries[:5]]
    view.make_writable()
    assert not view.view and [view.search(q, 10)[0].tolist() for q in queries[:5]] == before
    view.add(np.array([300]), points[300:301])
    assert len(view) == 301 and len(VectorIndex.open(path, index.config)) == 300


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"dtype": "f64"}, "`dtype` must be one of f32, f16, i8, but got 'f64'"),
    ({"connectivity": 1}, "`connectivity` must be in"),
    ({"expansion_search": 0}, "`expansion_search` must be in"),
    ({"expansion_add": 10**6}, "`expansion_add` must be in"),
    ({"exact_below": -1}, "`exact_below` must be >= 0"),
    ({"overfetch": 0.5}, "`overfetch` must be finite and >= 1"),
])
def test_config_rejects(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AnnConfig(**kwargs)  # type: ignore[arg-type]


def test_add_rejects_bad_input(hnsw: VectorIndex) -> None:
    with pytest.raises(ValueError, match="must have 32 columns"):
        hnsw.add(np.array([1]), np.ones((1, 8), dtype=np.float32))
    with pytest.raises(ValueError, match="distinct"):
        hnsw.add(np.array([1, 1]), np.ones((2, DIM), dtype=np.float32))


def test_two_builds_of_the_same_vectors_are_the_same_index(data: tuple[np.ndarray, np.ndarray]) -> None:
    """Regression: vectors were inserted by all cores at once, and the HNSW graph depended on how
    the threads interleaved, so an experiment rerun on a rebuilt index gave other numbers."""
    points, queries = data
    first, second = build(points, exact_below=0), build(points, exact_below=0)
    assert first.to_bytes() == second.to_bytes()
    for q in queries[:20]:
        np.testing.assert_array_equal(first.search(q, 10)[0], second.search(q, 10)[0])


def test_staged_keys_are_found_only_once_published(data: tuple[np.ndarray, np.ndarray]) -> None:
    points, queries = data
    index = build(points[:200], dtype="f32", exact_below=0)
    index.stage(np.array([200, 201]), queries[:2])  # each the nearest vector to its own query
    for allowed in (None, BitMap(range(202))):
        assert 200 not in index.search(queries[0], 5, allowed)[0].tolist()
        assert len(index.search(queries[0], 5, allowed)[0]) == 5  # the quota is met without them
    assert len(index) == 200
    index.publish(np.array([200]))  # 201 was not wanted after all: it leaves the index
    assert index.search(queries[0], 1)[0].tolist() == [200]
    assert 201 not in index.search(queries[1], 300)[0].tolist() and len(index) == 201
    with pytest.raises(ValueError, match="above every key"):
        index.stage(np.array([150]), queries[:1])


def test_a_key_staged_while_a_search_runs_is_not_returned(data: tuple[np.ndarray, np.ndarray]) -> None:
    """The interleaving the module docstring describes: usearch finds a key staged after the search
    began (and after it read anything else); the search must still not return it."""
    points, queries = data
    index = build(points[:200], dtype="f32", exact_below=0)
    usearch = index.index

    class StagesMeanwhile:
        def search(self, vector: np.ndarray, count: int, exact: bool) -> object:
            if not index.staged:
                index.index = usearch  # the stage inserts into the real index
                index.stage(np.array([200]), queries[:1])
                index.index = self  # type: ignore[assignment]
            return usearch.search(vector, count, exact=exact)

    index.index = StagesMeanwhile()  # type: ignore[assignment]
    keys = index.search(queries[0], 5)[0].tolist()
    assert 200 not in keys and len(keys) == 5


def test_a_saved_index_leaves_staged_keys_out(tmp_path: Path, data: tuple[np.ndarray, np.ndarray]) -> None:
    points, queries = data
    index = build(points[:100], dtype="f32")
    index.stage(np.array([100]), queries[:1])
    path = tmp_path / "index.usearch"
    path.write_bytes(index.to_bytes())
    assert len(VectorIndex.open(path, AnnConfig(dtype="f32")).index) == 100


def test_a_stage_that_fails_midway_leaves_nothing_staged(data: tuple[np.ndarray, np.ndarray],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A stage inserts a few vectors per usearch call (a search waits for the call in progress);
    one that fails after some calls takes back what it inserted, so the next stage of the same
    keys works and nothing stays hidden."""
    points, queries = data
    index = build(points[:100], dtype="f32", exact_below=0)
    usearch = index.index
    calls: list[int] = []

    class FailsOnSecondCall:
        ndim = usearch.ndim

        def add(self, keys: np.ndarray, vectors: np.ndarray, threads: int) -> object:
            calls.append(len(keys))
            if len(calls) == 2:
                raise RuntimeError("out of memory")
            return usearch.add(keys, vectors, threads=threads)

        def __contains__(self, key: int) -> bool:
            return key in usearch

        def remove(self, keys: np.ndarray) -> object:
            return usearch.remove(keys)

    index.index = FailsOnSecondCall()  # type: ignore[assignment]
    with pytest.raises(RuntimeError, match="out of memory"):
        index.stage(np.arange(100, 120), queries[:20])
    index.index = usearch
    assert calls == [STAGE_CHUNK, STAGE_CHUNK] and not index.staged and index.hidden_from is None
    assert len(usearch) == 100
    index.stage(np.arange(100, 120), queries[:20])
    index.publish(np.arange(100, 120))
    assert index.search(queries[3], 1)[0].tolist() == [103]


def test_staged_keys_that_fill_the_top_are_asked_past(data: tuple[np.ndarray, np.ndarray]) -> None:
    """A search asks for at most `quota` more while keys are staged, and for more again when staged
    vectors (here 40 right next to the query) took the places: it still returns the `quota`
    nearest published keys."""
    points, queries = data
    index = build(points[:200], dtype="f32", exact_below=10**6)  # exact: the answer is known
    near = queries[0] + 0.01 * np.random.default_rng(7).standard_normal((40, points.shape[1]))
    index.stage(np.arange(200, 240), near)
    keys = index.search(queries[0], 5)[0].tolist()
    assert keys == exact_topk(points[:200], queries[0], 5).tolist()
