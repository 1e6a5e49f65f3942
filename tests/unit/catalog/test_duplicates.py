"""Near-duplicate products on every store (SQLite, and PostgreSQL under .ci/with-postgres), with vectors
built to the scores each case needs: no chaining, decisions, groups kept at the catalog's revision,
collapsed facets, removal; and the pure parts (grouping rule, threshold fit)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from search.catalog import Catalog, ImageWrite, ProductWrite
from search.catalog.duplicate_calibration import fit_threshold
from search.catalog.duplicates import group_pairs
from search.catalog.query import Example, SearchQuery
from search.catalog.service import ProductService
from search.errors import BadInput
from search.images.store import ImageStore
from search.wiring import build_products
from tests.support.stores import STORES, fresh_database

MODEL = "duplicates"
DIM = 16


def unit(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return vector / np.linalg.norm(vector)


def towards(base: np.ndarray, cosine: float, seed: int) -> np.ndarray:
    """A unit vector at exactly ``cosine`` from ``base``."""
    other = unit(seed)
    other -= (other @ base) * base
    other /= np.linalg.norm(other)
    return (cosine * base + np.sqrt(1 - cosine**2) * other).astype(np.float32)


def product(
    external_id: str, *vectors: np.ndarray, category: str = "c", sha: str | None = None
) -> ProductWrite:
    return ProductWrite(
        external_id,
        None,
        category,
        {},
        images=[
            ImageWrite(f"https://img.example/{external_id}/{n}.jpg", sha, embedding=v, embedding_model=MODEL)
            for n, v in enumerate(vectors)
        ],
    )


@pytest.fixture(params=STORES)
def service(request, tmp_path: Path, tmp_path_factory) -> Iterator[ProductService]:
    with fresh_database(request.param, tmp_path, tmp_path_factory) as url:
        catalog = Catalog.open(url)
        yield build_products(
            catalog,
            model=MODEL,
            index_path=tmp_path / "index.faiss",
            image_store=ImageStore(tmp_path / "images"),
            duplicate_threshold=0.97,
        )
        catalog.close()


def write(service: ProductService, *writes: ProductWrite) -> None:
    service.catalog.upsert(list(writes))
    service.refresh()


def groups(service: ProductService) -> list[list[str]]:
    found, _, _ = service.duplicates.list_groups(None, 0, 100)
    names = {
        r.id: r.external_id
        for r in service.catalog.get_by_ids([p for g in found for p in g.products]).values()
    }
    return sorted(sorted(names[p] for p in g.products) for g in found)


def row_id(service: ProductService, external_id: str) -> int:
    return service.catalog.get(external_id).id


def test_no_chaining_a_b_c_with_a_far_from_c(service: ProductService) -> None:
    """A~B (0.985) and B~C (0.985) with A~C at 0.94: one pair is a group, never all three."""
    a = unit(1)
    b = towards(a, 0.985, 2)
    direction = b - (b @ a) * a
    direction /= np.linalg.norm(direction)
    c = (0.94 * a + np.sqrt(1 - 0.94**2) * direction).astype(np.float32)
    assert b @ c > 0.97 and a @ c < 0.95
    write(service, product("A", a), product("B", b), product("C", c), product("far", unit(9)))
    found = groups(service)
    assert found in (
        [["A", "B"]],
        [["B", "C"]],
    ), found
    # Each pair is still reported on its own.
    assert {m.product for m in service.duplicates.finder.of_product(row_id(service, "B"), 0.97)} == {
        row_id(service, "A"),
        row_id(service, "C"),
    }
    # The whole pass gives the same groups as the catch-up.
    _, passed, _ = service.duplicates.full_pass()
    assert len(passed) == 1 and len(passed[0].products) == 2


def test_groups_follow_writes_without_a_whole_pass(service: ProductService, monkeypatch) -> None:
    base = unit(3)
    write(service, product("x", base), product("y", unit(4)))
    assert groups(service) == []
    passes = []
    monkeypatch.setattr(
        service.duplicates.finder, "all_pairs", lambda *a, **k: passes.append(1) or pytest.fail("whole pass")
    )
    write(service, product("x-copy", towards(base, 0.99, 5)))
    assert groups(service) == [["x", "x-copy"]]
    write(service, product("x-copy", unit(6)))  # its image changes: it leaves the group
    assert groups(service) == []
    write(service, product("x-copy", towards(base, 0.98, 7)), product("x-third", towards(base, 0.99, 8)))
    assert any({"x", "x-third"} <= set(g) for g in groups(service))
    service.remove(["x"])
    assert all("x" not in g for g in groups(service))
    assert passes == []


def test_decisions_stick_and_go_with_the_product(service: ProductService) -> None:
    base = unit(10)
    write(service, product("p", base), product("q", towards(base, 0.99, 11)), product("r", unit(12)))
    assert groups(service) == [["p", "q"]]
    service.duplicates.decide(["p", "q"], "distinct")
    service.duplicates.decide(["p", "r"], "duplicate")
    assert groups(service) == [["p", "r"]]
    matches = service.duplicates.finder.of_product(row_id(service, "p"), 0.97)
    assert [(m.product, m.decided) for m in matches] == [(row_id(service, "r"), True)]
    # A re-run, and new vectors for both (a model change re-embeds every image), keep the decisions.
    service.duplicates.full_pass()
    write(service, product("p", unit(20)), product("q", towards(unit(20), 0.995, 21)))
    assert ["q"] not in groups(service) and all(sorted(g) != ["p", "q"] for g in groups(service))
    rows, total = service.duplicates.decisions(0, 10)
    assert total == 2 and {tuple(r["products"]) for r in rows} == {("p", "q"), ("p", "r")}
    service.remove(["p"])
    assert service.duplicates.decisions(0, 10) == ([], 0)
    assert groups(service) == []


def test_exact_copies_by_content_hash_whatever_the_vectors(service: ProductService) -> None:
    write(service, product("one", unit(30), sha="f" * 64), product("two", unit(31), sha="f" * 64))
    matches = service.duplicates.finder.of_product(row_id(service, "one"), 0.97)
    assert [(m.product, m.score, m.exact) for m in matches] == [(row_id(service, "two"), 1.0, True)]
    pairs = service.duplicates.finder.all_pairs(0.97)
    assert pairs.exact == {tuple(sorted((row_id(service, "one"), row_id(service, "two"))))}


def test_collapsed_search_counts_a_group_once_in_facets(service: ProductService) -> None:
    base = unit(40)
    write(
        service,
        product("g-1", base, category="lamp"),
        product("g-2", towards(base, 0.99, 41), category="lamp"),
        product("g-3", towards(base, 0.985, 42), category="chair"),
        product("solo", unit(43), category="lamp"),
    )
    query = SearchQuery([Example(vector=tuple(base))], facets=["category"], k=10, collapse="duplicates")
    answer = service.search(query)
    assert answer.hits[0].record.external_id == "g-1"
    assert len(answer.hits) == 2 and sorted(answer.hits[0].duplicates) == ["g-2", "g-3"]
    assert answer.facets == {"category": {"lamp": 2, "chair": 1}}
    plain = service.search(SearchQuery([Example(vector=tuple(base))], facets=["category"], k=10))
    assert len(plain.hits) == 4 and plain.facets == {"category": {"lamp": 3, "chair": 1}}


def test_grouping_is_complete_linkage() -> None:
    links = {1: {2: 0.99, 3: 0.98}, 2: {1: 0.99}, 3: {1: 0.98, 4: 0.99}, 4: {3: 0.99}}
    found = group_pairs(list(links), lambda p: links.get(p, {}))
    members = sorted(sorted(g.products) for g in found)
    assert members == [[1, 2], [3, 4]]  # never 1-2-3: 2 and 3 are not linked
    assert all(g.min_score in (0.99,) for g in found)
    clique = {1: {2: 0.99, 3: 0.98}, 2: {1: 0.99, 3: 0.975}, 3: {1: 0.98, 2: 0.975}}
    (group,) = group_pairs(list(clique), lambda p: clique[p])
    assert sorted(group.products) == [1, 2, 3] and group.min_score == 0.975


def test_threshold_fit_reaches_the_precision_with_the_most_recall() -> None:
    scores = [0.999, 0.99, 0.985, 0.97, 0.96, 0.95, 0.9]
    labels = [True, True, False, True, True, False, False]
    fit = fit_threshold(scores, labels, 0.8)
    assert (fit.threshold, fit.precision, fit.recall) == (0.96, 0.8, 1.0)
    strict = fit_threshold(scores, labels, 1.0)
    assert (strict.threshold, strict.recall) == (0.99, 0.5)
    with pytest.raises(BadInput, match="no duplicate"):
        fit_threshold([0.9], [False], 0.9)
    with pytest.raises(BadInput, match="reaches precision"):
        fit_threshold([0.9, 0.99], [True, False], 0.9)
