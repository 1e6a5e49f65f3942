"""Tags in the store, on SQLite and PostgreSQL: written with a product's images in its transaction, computed
from stored vectors by the formula (checked here in numpy), re-tagged in batches, read by ``tags.<name>``
filters and facets through indexed SQL, and never touching the merchant's attributes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select, text

from search.catalog import Catalog, ImageWrite, ProductWrite
from search.catalog.filters import Filters
from search.catalog.query import Example, SearchQuery
from search.catalog.schema import ProductAttribute
from search.catalog.service import ProductService
from search.catalog.tag_store import save_taxonomy
from search.catalog.taxonomy import Taxonomy
from search.images.store import ImageStore
from search.wiring import build_products
from tests.support.stores import STORES, fresh_database

MODEL = "tags-model"
DIM = 8
COLORS = ["red", "blue", "green"]
STYLES = ["modern", "rustic"]
SCALE, BIAS = 10.0, -2.0
COLOR_MIN, STYLE_MIN = 0.4, 0.3
N = 30


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


RNG = np.random.default_rng(7)
VALUE_VECTORS = unit(RNG, len(COLORS) + len(STYLES))
IMAGES = {i: unit(RNG, 1 + i % 2) for i in range(N)}  # every other product has two pictures
TAXONOMY = Taxonomy.parse(
    {
        "attributes": {
            "color": {"values": COLORS, "min_score": COLOR_MIN},
            "style": {"values": STYLES, "multi_label": True, "min_score": STYLE_MIN},
        }
    }
)


def expected_tags(i: int) -> dict[str, object]:
    """The formula, written out: softmax / sigmoid of scale * cosine + bias, mean over the images."""
    logits = SCALE * (IMAGES[i].astype(np.float64) @ VALUE_VECTORS.T.astype(np.float64)) + BIAS
    color = np.exp(logits[:, :3] - logits[:, :3].max(axis=1, keepdims=True))
    color = (color / color.sum(axis=1, keepdims=True)).mean(axis=0)
    style = (1 / (1 + np.exp(-logits[:, 3:]))).mean(axis=0)
    tags: dict[str, object] = {}
    if color.max() >= COLOR_MIN:
        tags["color"] = {"value": COLORS[int(color.argmax())], "score": pytest.approx(color.max(), rel=1e-5)}
    passing = sorted(((s, v) for v, s in zip(STYLES, style, strict=True) if s >= STYLE_MIN), reverse=True)
    if passing:
        tags["style"] = {"values": [{"value": v, "score": pytest.approx(s, rel=1e-5)} for s, v in passing]}
    return tags


def write(service: ProductService, ids: range) -> None:
    writes = [
        ProductWrite(
            f"p{i:02d}",
            f"Product {i}",
            "tile",
            {"color": "merchant-red", "size": i},
            images=[
                ImageWrite(f"i{i}-{k}", embedding=v, embedding_model=MODEL) for k, v in enumerate(IMAGES[i])
            ],
        )
        for i in ids
    ]
    service.catalog.upsert_reporting(writes)


@pytest.fixture(params=STORES)
def service(
    request: pytest.FixtureRequest, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProductService]:
    with fresh_database(request.param, tmp_path, tmp_path_factory) as url:
        catalog = Catalog.open(url)
        service = build_products(
            catalog,
            model=MODEL,
            index_path=tmp_path / "index.faiss",
            image_store=ImageStore(tmp_path),
            dim=DIM,
        )
        try:
            yield service
        finally:
            catalog.close()


def store_taxonomy(service: ProductService, taxonomy: Taxonomy = TAXONOMY) -> None:
    with service.catalog.writing() as connection:
        save_taxonomy(
            connection,
            taxonomy,
            VALUE_VECTORS[: sum(len(a.values) for a in taxonomy.attributes)],
            MODEL,
            SCALE,
            BIAS,
        )


def tags_by_id(service: ProductService) -> dict[str, dict]:
    return {r.external_id: r.tags for r in service.catalog.get_many(f"p{i:02d}" for i in range(N)).values()}


def ids(service: ProductService, filters: dict) -> set[str]:
    answer = service.list(Filters.parse(filters, 10), limit=100)
    return {record.external_id for record in answer.records}


def test_writes_are_tagged_in_their_transaction_by_the_formula(service: ProductService) -> None:
    store_taxonomy(service)
    write(service, range(N))  # no re-tag call: the write itself tags
    assert tags_by_id(service) == {f"p{i:02d}": expected_tags(i) for i in range(N)}
    assert any("color" not in expected_tags(i) for i in range(N))  # the threshold leaves some unknown


def test_retag_all_in_batches_equals_tagging_on_write(service: ProductService) -> None:
    write(service, range(N))  # before any taxonomy: no tags
    assert all(tags == {} for tags in tags_by_id(service).values())
    store_taxonomy(service)
    service.tagging.batch = 7  # several transactions (a batch is whole products, one- and two-image)
    status = service.tagging.retag_all()
    assert (status.state, status.done) == ("done", N)
    assert tags_by_id(service) == {f"p{i:02d}": expected_tags(i) for i in range(N)}


def test_tag_filters_and_facets_match_the_tags(service: ProductService) -> None:
    store_taxonomy(service)
    write(service, range(N))
    expected = {f"p{i:02d}": expected_tags(i) for i in range(N)}
    color = {pid: t["color"]["value"] for pid, t in expected.items() if "color" in t}
    styles = {pid: {v["value"] for v in t["style"]["values"]} for pid, t in expected.items() if "style" in t}
    assert ids(service, {"tags.color": "red"}) == {p for p, c in color.items() if c == "red"}
    assert ids(service, {"tags.color": {"in": ["red", "blue"]}}) == {
        p for p, c in color.items() if c != "green"
    }
    assert ids(service, {"tags.color": {"not": ["red"]}}) == set(expected) - {
        p for p, c in color.items() if c == "red"
    }
    assert ids(service, {"tags.color": {"exists": False}}) == set(expected) - set(color)
    assert ids(service, {"tags.style": "rustic", "size": {"lt": 20}}) == {
        p for p, s in styles.items() if "rustic" in s and int(p[1:]) < 20
    }
    facets = service.list(Filters(), facets=["tags.color", "tags.style", "color"]).facets
    assert facets["tags.color"] == {c: list(color.values()).count(c) for c in set(color.values())}
    assert facets["tags.style"] == {
        s: sum(s in v for v in styles.values()) for s in STYLES if any(s in v for v in styles.values())
    }
    assert facets["color"] == {"merchant-red": N}  # the merchant's colour, beside the tag
    filtered = service.list(Filters.parse({"tags.color": "blue"}, 10), facets=["tags.style"]).facets
    assert sum(filtered["tags.style"].values()) == sum(
        len(styles.get(p, ())) for p, c in color.items() if c == "blue"
    )
    # Vector search with a tag filter (the per-row form of the same test).
    service.refresh()
    query = SearchQuery(
        [Example(vector=tuple(IMAGES[0][0]))], filters=Filters.parse({"tags.color": "green"}, 10), k=50
    )
    assert {hit.record.external_id for hit in service.search(query).hits} == {
        p for p, c in color.items() if c == "green"
    }


def test_merchant_attributes_stay_as_written(service: ProductService) -> None:
    store_taxonomy(service)
    write(service, range(N))
    service.tagging.retag_all()
    with service.catalog.engine.connect() as connection:
        rows = set(connection.execute(select(ProductAttribute.key, ProductAttribute.value)))
    assert rows == {("color", "merchant-red")} | {("size", str(i)) for i in range(N)}
    assert all(
        r.attributes == {"color": "merchant-red", "size": int(r.external_id[1:])}
        for r in service.catalog.get_many(f"p{i:02d}" for i in range(N)).values()
    )


def test_a_new_taxonomy_drops_removed_attributes_tags_at_once(service: ProductService) -> None:
    store_taxonomy(service)
    write(service, range(N))
    only_color = Taxonomy.parse({"attributes": {"color": {"values": COLORS, "min_score": COLOR_MIN}}})
    store_taxonomy(service, only_color)
    assert all("style" not in tags for tags in tags_by_id(service).values())
    removed = service.remove(["p00"])
    assert removed == ["p00"]
    with service.catalog.engine.connect() as connection:
        assert (
            connection.scalar(
                text("SELECT count(*) FROM product_tags WHERE product_id NOT IN (SELECT id FROM products)")
            )
            == 0
        )


def test_tag_filters_read_the_covering_index_on_sqlite(service: ProductService) -> None:
    if service.catalog.dialect != "sqlite":
        pytest.skip("SQLite's plan; PostgreSQL picks by statistics")
    where = Filters.parse({"tags.color": {"in": ["red"]}}, 10).clause()
    from sqlalchemy import select as sql_select

    from search.catalog.schema import Product

    statement = (
        sql_select(Product.id)
        .where(where)
        .compile(service.catalog.engine, compile_kwargs={"literal_binds": True})
    )
    with service.catalog.engine.connect() as connection:
        plan = " ".join(str(row[-1]) for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}"))
    assert "COVERING INDEX ix_product_tags_key_value" in plan, plan


def test_audit_of_a_multi_label_attribute_lists_exactly_the_contradictions(service: ProductService) -> None:
    store_taxonomy(service)
    write(service, range(N))
    # The merchant says "rustic" for the even products and "modern, dark" (no such value) for the odd ones.
    writes = []
    for record in service.catalog.get_many(f"p{i:02d}" for i in range(N)).values():
        given = "rustic" if int(record.external_id[1:]) % 2 == 0 else "modern, dark"
        writes.append(
            ProductWrite(
                record.external_id, record.title, record.category, {**record.attributes, "style": given}
            )
        )
    service.catalog.upsert_reporting(writes)
    expected = []
    for i in range(N):
        values = expected_tags(i).get("style", {"values": []})["values"]
        given = "rustic" if i % 2 == 0 else "modern, dark"
        if values and given not in [v["value"] for v in values]:  # agreeing with any confident value agrees
            expected.append((f"p{i:02d}", given, values[0]["value"], values[0]["score"].expected))
    expected.sort(key=lambda row: (-row[3], row[0]))
    rows, total, used = service.tagging.audit("style", None, 100, 0)
    assert used == STYLE_MIN and total == len(expected) and expected
    assert [(r.id, r.given, r.predicted) for r in rows] == [row[:3] for row in expected]
    assert [r.score for r in rows] == pytest.approx([row[3] for row in expected], rel=1e-5)
