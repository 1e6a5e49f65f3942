"""VectorIndex: exact cosine search over product row ids, and its checksummed, atomic file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from search.index import IndexFileError, VectorIndex

DIM = 8


def unit_vectors(count: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((count, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture
def index() -> VectorIndex:
    """Ten products with row ids 101..110 (ids are the catalog's, not positions)."""
    index = VectorIndex(DIM, "test-model", revision=7)
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
    loaded = VectorIndex.load(path, model="test-model", dim=DIM)
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
        VectorIndex.load(path, model="test-model", dim=DIM)


def test_truncated_file_is_rejected(index: VectorIndex, tmp_path: Path) -> None:
    path = tmp_path / "products.faiss"
    index.save(path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(IndexFileError):
        VectorIndex.load(path, model="test-model", dim=DIM)


def test_missing_file_is_an_index_file_error(tmp_path: Path) -> None:
    with pytest.raises(IndexFileError, match="no index file"):
        VectorIndex.load(tmp_path / "absent.faiss", model="test-model", dim=DIM)


def test_file_of_another_model_or_dimension_is_rejected(index: VectorIndex, tmp_path: Path) -> None:
    path = tmp_path / "products.faiss"
    index.save(path)
    with pytest.raises(IndexFileError, match="other-model"):
        VectorIndex.load(path, model="other-model", dim=DIM)
    with pytest.raises(IndexFileError, match="16-d"):
        VectorIndex.load(path, model="test-model", dim=16)
