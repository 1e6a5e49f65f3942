"""VectorIndex: cosine search over product row ids (flat and HNSW), and its checksummed, atomic file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from search.index import IndexFileError, IndexSpec, VectorIndex

DIM = 8


def unit_vectors(count: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((count, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture(params=["flat", "hnsw"])
def index(request: pytest.FixtureRequest) -> VectorIndex:
    """Ten products with row ids 101..110 (ids are the catalog's, not positions), in each index kind."""
    index = VectorIndex(DIM, "test-model", revision=7, spec=IndexSpec(kind=request.param))
    index.upsert(np.arange(101, 111), unit_vectors(10))
    return index


def ids_of(hits: list) -> list[int]:
    return [hit.id for hit in hits]


def test_search_finds_a_stored_vector_first_with_score_one(index: VectorIndex) -> None:
    query = index.reconstruct(104)
    hits = index.search(query, 3)
    assert hits[0].id == 104
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)


def test_upsert_replaces_the_vector_of_an_existing_id(index: VectorIndex) -> None:
    replacement = unit_vectors(1, seed=99)
    index.upsert(np.array([103]), replacement)
    assert len(index) == 10
    assert sorted(index.ids().tolist()) == list(range(101, 111))
    np.testing.assert_allclose(index.reconstruct(103), replacement[0], atol=1e-6)
    assert index.search(replacement[0], 1)[0].id == 103


def test_remove_takes_ids_out_and_ignores_unknown_ones(index: VectorIndex) -> None:
    assert index.remove([102, 105, 999]) == 2
    assert len(index) == 8
    assert index.reconstruct(102) is None
    assert {102, 105}.isdisjoint(ids_of(index.search(unit_vectors(1, 5)[0], 10)))
    assert index.remove([]) == 0


def test_upsert_rejects_vectors_of_the_wrong_dimension(index: VectorIndex) -> None:
    with pytest.raises(ValueError, match="shape"):
        index.upsert(np.array([1]), np.ones((1, DIM + 1), np.float32))


def test_search_with_allowed_ids_returns_only_those(index: VectorIndex) -> None:
    hits = index.search(index.reconstruct(101), 10, allowed_ids=[103, 107, 108])
    assert sorted(ids_of(hits)) == [103, 107, 108]


def test_search_with_an_empty_allow_list_returns_nothing(index: VectorIndex) -> None:
    assert index.search(index.reconstruct(101), 10, allowed_ids=[]) == []


def test_search_with_excluded_ids_never_returns_them(index: VectorIndex) -> None:
    hits = index.search(index.reconstruct(101), 10, excluded_ids=[101, 102])
    assert sorted(ids_of(hits)) == list(range(103, 111))


def test_search_with_allowed_and_excluded_ids_applies_both(index: VectorIndex) -> None:
    hits = index.search(index.reconstruct(101), 10, allowed_ids=[101, 102, 103], excluded_ids=[101])
    assert sorted(ids_of(hits)) == [102, 103]


def test_search_with_min_score_drops_weaker_hits(index: VectorIndex) -> None:
    query = index.reconstruct(106)
    everything = index.search(query, 10)
    threshold = everything[3].score
    hits = index.search(query, 10, min_score=threshold)
    assert ids_of(hits) == ids_of(everything[:4])
    assert all(hit.score >= threshold for hit in hits)


def test_search_of_an_empty_index_returns_nothing() -> None:
    assert VectorIndex(DIM, "test-model").search(unit_vectors(1)[0], 5) == []


def test_save_and_load_round_trip(index: VectorIndex, tmp_path: Path) -> None:
    path = tmp_path / "index" / "products.faiss"
    index.save(path)
    loaded = VectorIndex.load(path, model="test-model", dim=DIM, spec=index.spec)
    assert loaded.revision == 7
    assert sorted(loaded.ids().tolist()) == list(range(101, 111))
    for product_id in range(101, 111):
        np.testing.assert_array_equal(loaded.reconstruct(product_id), index.reconstruct(product_id))
    assert [p.name for p in path.parent.iterdir()] == ["products.faiss"]  # no temp file left


def test_damaged_file_fails_the_checksum(index: VectorIndex, tmp_path: Path) -> None:
    path = tmp_path / "products.faiss"
    index.save(path)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16] = bytes(16)
    path.write_bytes(bytes(data))
    with pytest.raises(IndexFileError, match="checksum"):
        VectorIndex.load(path, model="test-model", dim=DIM, spec=index.spec)


def test_truncated_file_is_rejected(index: VectorIndex, tmp_path: Path) -> None:
    path = tmp_path / "products.faiss"
    index.save(path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(IndexFileError):
        VectorIndex.load(path, model="test-model", dim=DIM, spec=index.spec)


def test_missing_file_is_an_index_file_error(tmp_path: Path) -> None:
    with pytest.raises(IndexFileError, match="no index file"):
        VectorIndex.load(tmp_path / "absent.faiss", model="test-model", dim=DIM)


def test_file_of_another_model_or_dimension_is_rejected(index: VectorIndex, tmp_path: Path) -> None:
    path = tmp_path / "products.faiss"
    index.save(path)
    with pytest.raises(IndexFileError, match="other-model"):
        VectorIndex.load(path, model="other-model", dim=DIM, spec=index.spec)
    with pytest.raises(IndexFileError, match="16-d"):
        VectorIndex.load(path, model="test-model", dim=16, spec=index.spec)


# HNSW: approximate, with masked slots instead of removal -------------------------------------------------------


def clustered(count: int, seed: int, dim: int = 32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, dim)).astype(np.float32)
    vectors = centres[rng.integers(0, 20, count)] + 0.4 * rng.standard_normal((count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_hnsw_recall_at_10_against_exact_search_is_high() -> None:
    vectors, queries = clustered(3000, seed=1), clustered(50, seed=2)
    flat = VectorIndex(32, "m")
    hnsw = VectorIndex(32, "m", spec=IndexSpec(kind="hnsw"))
    for index in (flat, hnsw):
        index.upsert(np.arange(3000), vectors)
    found = [
        len({h.id for h in hnsw.search(q, 10)} & {h.id for h in flat.search(q, 10)}) / 10 for q in queries
    ]
    assert np.mean(found) >= 0.95


def test_hnsw_never_returns_replaced_or_removed_products() -> None:
    vectors = clustered(500, seed=3)
    index = VectorIndex(32, "m", spec=IndexSpec(kind="hnsw"))
    index.upsert(np.arange(500), vectors)
    index.upsert(np.arange(0, 100), clustered(100, seed=4))  # new vectors for products 0..99
    index.remove(np.arange(100, 200))
    assert len(index) == 400
    for product_id in range(0, 200, 7):
        hits = index.search(vectors[product_id], 10)
        assert all(hit.id >= 200 or hit.score < 0.9999 for hit in hits)  # the old vector is gone
        assert all(not 100 <= hit.id < 200 for hit in hits)
    assert sorted(index.ids().tolist()) == [*range(0, 100), *range(200, 500)]


def test_hnsw_compacts_once_most_slots_are_dead(tmp_path: Path) -> None:
    vectors = clustered(1200, seed=5)
    index = VectorIndex(32, "m", spec=IndexSpec(kind="hnsw"))
    index.upsert(np.arange(1200), vectors)
    index.upsert(np.arange(1200), vectors)  # every product replaced: 1200 dead slots of 2400
    assert index._store.index.ntotal == 1200  # rebuilt without the dead ones
    assert index.search(vectors[42], 1)[0].id == 42
    index.save(tmp_path / "i.faiss")
    loaded = VectorIndex.load(tmp_path / "i.faiss", model="m", dim=32, spec=IndexSpec(kind="hnsw"))
    assert len(loaded) == 1200 and loaded.search(vectors[7], 1)[0].id == 7


def test_hnsw_filtered_search_is_exact_over_the_allowed_products() -> None:
    vectors = clustered(2000, seed=6)
    flat = VectorIndex(32, "m")
    hnsw = VectorIndex(32, "m", spec=IndexSpec(kind="hnsw"))
    for index in (flat, hnsw):
        index.upsert(np.arange(2000), vectors)
    allowed = list(range(0, 2000, 9))
    for query in clustered(10, seed=7):
        expected = [h.id for h in flat.search(query, 5, allowed_ids=allowed)]
        assert [h.id for h in hnsw.search(query, 5, allowed_ids=allowed)] == expected


def test_a_file_of_the_other_index_kind_is_rejected(tmp_path: Path) -> None:
    # Changing VITRINE_INDEX_TYPE makes the old file unusable, so it is rebuilt from the database.
    flat = VectorIndex(DIM, "m")
    flat.upsert(np.arange(3), unit_vectors(3))
    flat.save(tmp_path / "i.faiss")
    with pytest.raises(IndexFileError, match="HNSW"):
        VectorIndex.load(tmp_path / "i.faiss", model="m", dim=DIM, spec=IndexSpec(kind="hnsw"))


def test_an_id_twice_in_one_upsert_keeps_the_last_vector(index: VectorIndex) -> None:
    first, last = unit_vectors(2, seed=9)
    index.upsert(np.array([200, 200]), np.stack([first, last]))
    assert len(index) == 11
    np.testing.assert_allclose(index.reconstruct(200), last, atol=1e-6)
    assert [hit.id for hit in index.search(first, 11)].count(200) == 1


def test_batched_neighbours_agree_with_one_search_per_query(index: VectorIndex) -> None:
    """The whole-catalog duplicate pass on flat and HNSW indexes asks for many queries' neighbours at once."""
    vectors = unit_vectors(200, seed=4)
    index.upsert(np.arange(1, 201), vectors)
    index.remove([7, 8])  # a removed vector is never a neighbour (HNSW masks its slot)
    scores, ids = index.neighbours(vectors[:20], 5)
    assert ids.shape == (20, 5) and scores.shape == (20, 5)
    for row, query in enumerate(vectors[:20]):
        assert ids[row].tolist() == ids_of(index.search(query, 5))
    assert not np.isin(ids, [7, 8]).any()
