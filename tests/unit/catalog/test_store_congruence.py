"""One harness, every store: the same calls against SQLite and PostgreSQL give the same answers.

As qdrant-client's congruence tests run one script against each of its implementations, ``scenario``
drives a catalog through writes, reads, filters, facets, ranking, changes and removals, and returns
every answer in a comparable form. Each store's trace must equal SQLite's from the same run; the
scenario also checks the values it knows, so the SQLite run alone pins them. Full-text scores are
dialect-specific (FTS5's bm25 against PostgreSQL's ts_rank): for those, which products match is compared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from search.catalog import Catalog, ImageWrite, ProductWrite
from search.catalog.filters import Filters
from search.catalog.query import Example, SearchQuery
from search.images.store import ImageStore
from search.wiring import build_products
from tests.support.stores import STORES, fresh_database

MODEL = "congruence"


def unit(seed: int, dim: int = 8) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return vector / np.linalg.norm(vector)


def product(i: int, *, title: str | None = None, images: int = 1) -> ProductWrite:
    attributes: dict[str, Any] = {
        "color": ["red", "blue", "green"][i % 3],
        "price": 10 * i + 0.5,
        "outdoor": i % 2 == 0,
        "tags": ["a", "b"] if i % 4 == 0 else ["c"],
    }
    if i % 3 == 0:
        attributes["finish"] = "matte"
    return ProductWrite(
        f"p{i:02d}",
        title or f"{attributes['color']} ceramic tile number {i}",
        "tile" if i % 2 else "wood",
        attributes,
        images=[
            ImageWrite(
                f"https://img.example/p{i}-{n}.jpg", embedding=unit(100 * i + n), embedding_model=MODEL
            )
            for n in range(images)
        ],
    )


def scenario(catalog: Catalog, root: Path, **backend: Any) -> list[tuple[str, Any]]:
    """``backend``: build_products' vector backend arguments (tests/unit/catalog/test_pgvector.py)."""
    trace: list[tuple[str, Any]] = []
    record = trace.append
    service = build_products(
        catalog,
        model=MODEL,
        index_path=root / "index.faiss",
        image_store=ImageStore(root / "images"),
        **backend,
    )

    def listed(filters: object) -> list[str]:
        return [r.external_id for r in service.list(Filters.parse(filters, 100), limit=100).records]

    def nearest(vector: np.ndarray, filters: object = None, k: int = 5) -> list[tuple[str, float, int]]:
        query = SearchQuery([Example(vector=tuple(vector))], filters=Filters.parse(filters, 100), k=k)
        return [
            (hit.record.external_id, round(hit.score, 5), hit.matched_image.position)
            for hit in service.search(query).hits
        ]

    def lexical(words: str) -> list[str]:
        ranked = catalog.lexical(words, None, 50, exact=True)
        owners = catalog.get_by_ids([pid for pid, _ in ranked.ranking] + ranked.exact)
        return sorted(owners[pid].external_id for pid, _ in ranked.ranking) + [
            "exact:" + owners[pid].external_id for pid in ranked.exact
        ]

    first, records = catalog.upsert([product(i, images=1 + i % 2) for i in range(12)])
    record(("upsert", (first, [r.external_id for r in records])))
    assert first == 1 and len(records) == 12
    service.refresh()  # the index follows the database, as in a process that did not write
    record(("counts", (catalog.count(), catalog.count_images(), catalog.count_images(MODEL))))
    assert catalog.count() == 12 and catalog.count_images() == 18

    p05 = catalog.get("p05")
    record(("get", (p05.title, p05.category, p05.attributes, [i.image_ref for i in p05.images])))
    assert p05.attributes == {"color": "green", "price": 50.5, "outdoor": False, "tags": ["c"]}

    for filters in (
        {"color": "red"},
        {"price": {"gte": 30, "lt": 80.5}},
        {"outdoor": True, "color": {"in": ["red", "green"]}},
        {"finish": {"exists": False}},
        {"category": {"not": "tile"}},
        {"tags": "a"},
    ):
        record(("list", (filters, listed(filters))))
    assert listed({"price": {"gte": 30, "lt": 80.5}}) == ["p03", "p04", "p05", "p06", "p07"]

    record(("facets", catalog.facet_counts(None, ["color", "category", "finish"])))
    tile = Filters.parse({"category": "tile"}, 100).clause()
    record(("facets filtered", catalog.facet_counts(tile, ["color", "outdoor"])))
    assert catalog.facet_counts(tile, ["category"]) == {"category": {"tile": 6}}

    record(("nearest", nearest(unit(701))))
    assert nearest(unit(701))[0] == ("p07", 1.0, 1)  # p07's second image
    record(("nearest filtered", nearest(unit(701), {"category": "wood"})))
    record(("lexical", lexical("ceramic red")))
    record(("lexical exact", lexical("p03")))

    # Writes: a metadata change, a new image set, a removal; then what a follower replays.
    revision = catalog.revision()
    catalog.upsert([product(3, title="charcoal slate", images=1), product(8, images=3)])
    removed_revision, removed = catalog.remove(["p05", "missing"])
    record(("remove", (removed_revision - revision, removed)))
    assert removed == ["p05"]
    changes = catalog.changes_since(revision, MODEL)
    record(("changes", (len(changes.upserted_ids), len(changes.removed_ids))))
    service.refresh()
    record(("after writes", (catalog.count(), catalog.count_images(), listed({"color": "green"}))))
    assert "p05" not in listed({"color": "green"})
    record(("lexical after", lexical("slate")))
    assert lexical("slate") == ["p03"]
    record(("nearest after", nearest(unit(802), k=3)))
    assert nearest(unit(802), k=3)[0][0] == "p08"
    service.save_index()
    report = service.verify()
    record(("verify", report.ok))
    assert report.ok
    return trace


@pytest.mark.parametrize("store", STORES)
def test_every_store_answers_the_scenario_as_sqlite_does(store, tmp_path, tmp_path_factory):
    with fresh_database("sqlite", tmp_path / "reference-db", tmp_path_factory) as url:
        reference_catalog = Catalog.open(url)
        reference = scenario(reference_catalog, tmp_path / "reference")
        reference_catalog.close()
    with fresh_database(store, tmp_path, tmp_path_factory) as url:
        catalog = Catalog.open(url)
        try:
            trace = scenario(catalog, tmp_path / store)
        finally:
            catalog.close()
    for (step, expected), (_, got) in zip(reference, trace, strict=True):
        assert got == expected, step


@pytest.mark.parametrize("store", STORES)
def test_an_upsert_of_many_products_is_a_few_statements_and_a_repeated_id_ends_as_its_last_write(
    store, tmp_path, tmp_path_factory
):
    from sqlalchemy import event

    with fresh_database(store, tmp_path, tmp_path_factory) as url:
        catalog = Catalog.open(url)
        try:
            first = [product(i, images=1 + i % 2) for i in range(30)]
            again = product(5, title="the last write of p05", images=1)
            again.images[0].embedding = unit(999)
            _, records, created = catalog.upsert_reporting([*first, again])
            assert created == [True] * 30 + [False]
            assert [r.external_id for r in records] == [f"p{i:02d}" for i in range(30)] + ["p05"]
            last = catalog.get("p05")
            assert last.title == "the last write of p05" and len(last.images) == 1
            assert [r.id for r in records[:-1]] == sorted(r.id for r in records[:-1])  # ids in write order

            # Updates that replace every product's pictures: the statements do not grow per product.
            statements: list[str] = []
            listener = lambda conn, cursor, statement, *rest: statements.append(statement)  # noqa: E731
            event.listen(catalog.engine, "before_cursor_execute", listener)
            try:
                replaced = [product(i, images=2) for i in range(30)]
                for write in replaced:
                    write.images[0].embedding = unit(5000 + int(write.external_id[1:]))
                catalog.upsert(replaced)
            finally:
                event.remove(catalog.engine, "before_cursor_execute", listener)
            # One statement per step for all 30 (14 on PostgreSQL, where it used to be 161). SQLite
            # inserts new images one by one: its RETURNING order is not guaranteed, so SQLAlchemy will
            # not batch rows whose ids it must read back (in-process calls there, not round trips).
            image_inserts = [s for s in statements if s.startswith("INSERT INTO product_images")]
            assert len(statements) - len(image_inserts) <= 16, statements
            assert len(image_inserts) == (60 if store == "sqlite" else 1), statements
            assert all(len(catalog.get(f"p{i:02d}").images) == 2 for i in range(30))
        finally:
            catalog.close()
