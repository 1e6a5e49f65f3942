"""Typed filters, facets, listing and lexical ranking through indexed SQL, on SQLite and PostgreSQL.

The PostgreSQL half runs when VITRINE_TEST_POSTGRES_URL points at a scratch database (see
tests/unit/catalog/test_postgres.py); the same assertions hold on both backends.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import create_engine, text

from search.catalog import Catalog, ImageWrite, ProductWrite
from search.catalog.db import migrate
from search.catalog.filters import Filters, tag_field
from search.catalog.query import Example, SearchQuery
from search.catalog.service import ProductService
from search.errors import BadInput
from search.images.store import ImageStore
from search.wiring import build_products
from tests.support.postgres import postgres_database_lock

POSTGRES_URL = os.environ.get("VITRINE_TEST_POSTGRES_URL")
MODEL = "filters-model"
COLORS = ("red", "blue", "green", "black")
FINISHES = ("matte", "glossy", "satin")


def unit(seed: int, dim: int = 8) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return vector / np.linalg.norm(vector)


def catalog_rows() -> list[dict[str, Any]]:
    """24 products with typed attributes; some lack an attribute, prices come as numbers and as text."""
    rows = []
    for i in range(24):
        attributes: dict[str, Any] = {"color": COLORS[i % 4], "price": 5 * i + 0.5}
        if i % 3:
            attributes["finish"] = FINISHES[i % 3]
        if i % 5 == 0:
            attributes["outdoor"] = True
        if i % 6 == 0:
            attributes["price"] = f"{5 * i + 0.5}"  # a CSV cell: text that reads as a number
        if i == 7:
            attributes["sku"] = "TX-4471"
        rows.append(
            {
                "id": f"p{i:02d}",
                "title": f"Product {i} {'ceramic' if i % 2 else 'oak'} tile",
                "category": "tile" if i % 2 else "wood" if i % 3 else None,
                "attributes": attributes,
            }
        )
    return rows


ROWS = catalog_rows()


def postgres_url() -> str:
    if not POSTGRES_URL:
        pytest.skip("set VITRINE_TEST_POSTGRES_URL to run against PostgreSQL")
    engine = create_engine(POSTGRES_URL)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    return POSTGRES_URL


@pytest.fixture(params=["sqlite", "postgresql"], scope="module")
def service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProductService]:
    with contextlib.ExitStack() as held:
        if request.param == "postgresql":
            held.enter_context(postgres_database_lock(tmp_path_factory))
        root = tmp_path_factory.mktemp(request.param)
        url = f"sqlite:///{root / 'vitrine.db'}" if request.param == "sqlite" else postgres_url()
        migrate(url)
        catalog = Catalog.open(url)
        catalog.upsert(
            [
                ProductWrite(
                    row["id"],
                    row["title"],
                    row["category"],
                    row["attributes"],
                    images=[
                        ImageWrite(
                            f"https://img.example/{row['id']}.jpg", embedding=unit(i), embedding_model=MODEL
                        )
                    ],
                )
                for i, row in enumerate(ROWS)
            ]
        )
        service = build_products(
            catalog, model=MODEL, index_path=root / "index.faiss", image_store=ImageStore(root / "images")
        )
        yield service
        catalog.close()


def listed(service: ProductService, filters: object) -> list[str]:
    answer = service.list(Filters.parse(filters, 100), limit=1000)
    assert answer.total == len(answer.records)
    return [record.external_id for record in answer.records]


def expected(test: Any) -> list[str]:
    return sorted(row["id"] for row in ROWS if test(row["attributes"], row["category"]))


def number(value: object) -> float:
    return float(value)  # type: ignore[arg-type]


CASES = {
    "equality": ({"color": "red"}, lambda a, c: a["color"] == "red"),
    "in": ({"color": {"in": ["red", "blue"]}}, lambda a, c: a["color"] in ("red", "blue")),
    "gte and lt": ({"price": {"gte": 20, "lt": 50}}, lambda a, c: 20 <= number(a["price"]) < 50),
    "gt": ({"price": {"gt": 100.5}}, lambda a, c: number(a["price"]) > 100.5),
    "lte": ({"price": {"lte": 10.5}}, lambda a, c: number(a["price"]) <= 10.5),
    "not": ({"finish": {"not": "glossy"}}, lambda a, c: a.get("finish") != "glossy"),
    "exists": ({"finish": {"exists": True}}, lambda a, c: "finish" in a),
    "not exists": ({"outdoor": {"exists": False}}, lambda a, c: "outdoor" not in a),
    "boolean": ({"outdoor": True}, lambda a, c: a.get("outdoor") is True),
    "category": ({"category": "tile"}, lambda a, c: c == "tile"),
    "category in": ({"category": {"in": ["tile", "wood"]}}, lambda a, c: c in ("tile", "wood")),
    "category not": ({"category": {"not": "tile"}}, lambda a, c: c != "tile"),
    "category exists": ({"category": {"exists": False}}, lambda a, c: c is None),
    "category present": ({"category": {"exists": True}}, lambda a, c: c is not None),
    "several keys are AND": (
        {"color": {"in": ["red", "green"]}, "price": {"gte": 30}, "finish": {"not": "matte"}},
        lambda a, c: (
            a["color"] in ("red", "green") and number(a["price"]) >= 30 and a.get("finish") != "matte"
        ),
    ),
    "a list value is in": ({"color": ["black", "blue"]}, lambda a, c: a["color"] in ("black", "blue")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_filter_operator_lists_exactly_the_matching_products(
    service: ProductService, case: str
) -> None:
    filters, test = CASES[case]
    result = listed(service, filters)
    assert sorted(result) == expected(test)
    assert result, "each case should match something"


@pytest.mark.parametrize("case", list(CASES))
def test_the_per_row_form_of_a_filter_passes_exactly_the_listed_products(
    service: ProductService, case: str
) -> None:
    """The form that checks given products (a broad filter on a search's hits) means the same."""
    filters, test = CASES[case]
    parsed = Filters.parse(filters, 100)
    every_image = service.catalog.image_ids(Filters().clause())
    owners = service.catalog.owners(every_image, parsed.clause(per_row=True))
    assert set(owners) == set(service.catalog.image_ids(parsed.clause()).tolist())
    assert owners == {i: p for i, p in service.catalog.owners(every_image).items() if i in owners}
    records = service.catalog.get_by_ids(sorted(set(owners.values())))
    assert sorted(record.external_id for record in records.values()) == expected(test)


@pytest.mark.parametrize("case", ["in", "gte and lt", "not", "several keys are AND"])
def test_vector_search_honours_the_same_filters(service: ProductService, case: str) -> None:
    filters, test = CASES[case]
    answer = service.search(
        SearchQuery([Example(vector=tuple(unit(3)))], filters=Filters.parse(filters, 100), k=100)
    )
    assert sorted(hit.record.external_id for hit in answer.hits) == expected(test)


def test_similar_honours_filters_and_excludes_the_product(service: ProductService) -> None:
    filters, test = CASES["several keys are AND"]
    answer = service.search(
        SearchQuery([Example(product_id="p03")], filters=Filters.parse(filters, 100), k=100)
    )
    assert sorted(hit.record.external_id for hit in answer.hits) == [i for i in expected(test) if i != "p03"]


def test_an_attribute_no_product_has_is_an_empty_result(service: ProductService) -> None:
    assert listed(service, {"no_such_field": "x"}) == []
    assert listed(service, {"no_such_field": {"gte": 1}}) == []
    assert listed(service, {"color": {"in": []}}) == []


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"price": {"between": [1, 2]}}, "filters.price: unknown operator 'between'"),
        ({"price": {"gte": "ten"}}, "filters.price.gte must be a finite number"),
        ({"color": {"in": "red"}}, "filters.color.in must be a list"),
        ({"color": {"exists": "yes"}}, "filters.color.exists must be true or false"),
        ({"color": {}}, "filters.color is an empty object"),
        ({"color": None}, "filters.color must be a string, number or boolean"),
        ({"category": {"lt": 3}}, "filters.category"),
        ("red", "filters must be an object"),
    ],
)
def test_a_malformed_filter_is_bad_input_naming_the_key(filters: object, message: str) -> None:
    with pytest.raises(BadInput) as raised:
        Filters.parse(filters, 100)
    assert message in raised.value.message


def test_facets_equal_counts_computed_here(service: ProductService) -> None:
    filters, test = CASES["gte and lt"]
    answer = service.list(
        Filters.parse(filters, 100), limit=5, facets=["color", "finish", "category", "none"]
    )
    matching = [row for row in ROWS if test(row["attributes"], row["category"])]
    for field in ("color", "finish"):
        counts: dict[str, int] = {}
        for row in matching:
            if field in row["attributes"]:
                counts[row["attributes"][field]] = counts.get(row["attributes"][field], 0) + 1
        assert answer.facets[field] == counts, field
    categories: dict[str, int] = {}
    for row in matching:
        if row["category"]:
            categories[row["category"]] = categories.get(row["category"], 0) + 1
    assert answer.facets["category"] == categories
    assert answer.facets["none"] == {}
    assert answer.total == len(matching) and len(answer.records) == 5


def test_listing_pages_in_id_order(service: ProductService) -> None:
    first = service.list(Filters(), offset=0, limit=10)
    second = service.list(Filters(), offset=10, limit=10)
    ids = [r.external_id for r in first.records + second.records]
    assert ids == sorted(row["id"] for row in ROWS)[:20]
    assert first.total == second.total == len(ROWS)


def test_search_offset_continues_where_the_previous_page_stopped(service: ProductService) -> None:
    query = tuple(unit(11))
    everything = service.search(SearchQuery([Example(vector=query)], k=12)).hits
    page = service.search(SearchQuery([Example(vector=query)], k=4, offset=4)).hits
    assert [h.record.external_id for h in page] == [h.record.external_id for h in everything[4:8]]


def test_lexical_ranking_finds_a_sku_code_and_words(service: ProductService) -> None:
    by_code = service.search(SearchQuery([Example(text="TX-4471")], mode="lexical"))
    assert [hit.record.external_id for hit in by_code.hits][:1] == ["p07"]
    words = service.search(SearchQuery([Example(text="ceramic")], mode="lexical", k=100))
    assert sorted(hit.record.external_id for hit in words.hits) == sorted(
        row["id"] for row in ROWS if "ceramic" in row["title"]
    )
    filtered = service.search(
        SearchQuery(
            [Example(text="ceramic tile")],
            mode="lexical",
            k=100,
            filters=Filters.parse({"color": "red"}, 100),
        )
    )
    assert {hit.record.external_id for hit in filtered.hits} <= set(
        expected(lambda a, c: a["color"] == "red")
    )


def test_lexical_index_follows_updates_and_removals_in_the_same_transaction(
    service: ProductService, tmp_path: Path
) -> None:
    catalog = service.catalog
    catalog.upsert([ProductWrite("p07", "Renamed", None, {"color": "red"})])  # the SKU is gone
    assert service.search(SearchQuery([Example(text="TX-4471")], mode="lexical")).hits == []
    assert [
        h.record.external_id
        for h in service.search(SearchQuery([Example(text="renamed")], mode="lexical")).hits
    ] == ["p07"]
    row = ROWS[7]
    catalog.upsert([ProductWrite("p07", row["title"], row["category"], row["attributes"])])
    catalog.remove(["p05"])
    assert "p05" not in [
        h.record.external_id
        for h in service.search(SearchQuery([Example(text="ceramic")], mode="lexical", k=100)).hits
    ]
    catalog.upsert(
        [
            ProductWrite(
                "p05",
                ROWS[5]["title"],
                ROWS[5]["category"],
                ROWS[5]["attributes"],
                images=[ImageWrite("https://img.example/p05.jpg", embedding=unit(5), embedding_model=MODEL)],
            )
        ]
    )


# Found by mutation testing (make mutants): the exact bounds and messages ------------------------------------

OPERATORS_LIST = "in, not, exists, gte, gt, lte, lt"


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"a": 1, "b": 2, "c": 3}, "filters has 3 keys; the limit is 2 (VITRINE_MAX_ATTRIBUTES)"),
        ({"": 1}, "filter keys must be 1 to 256 characters: ''"),
        ({"k" * 257: 1}, f"filter keys must be 1 to 256 characters: {'k' * 80!r}"),
        ({"color": [f"v{i}" for i in range(1001)]}, "filters.color may list at most 1000 values"),
        ({"color": {"in": [f"v{i}" for i in range(1001)]}}, "filters.color.in may list at most 1000 values"),
        ({"color": {"not": ["red", None]}}, "filters.color.not[1] must be a string, number or boolean"),
        ({"color": ["red", None]}, "filters.color[1] must be a string, number or boolean"),
        ({"color": {"in": [None]}}, "filters.color.in[0] must be a string, number or boolean"),
        ({"price": float("nan")}, "filters.price must be a finite number"),
        ({"price": [1.0, float("inf")]}, "filters.price[1] must be a finite number"),
    ],
)
def test_each_bound_and_message_is_exact(filters: object, message: str) -> None:
    with pytest.raises(BadInput) as raised:
        Filters.parse(filters, 2)
    assert raised.value.message == message


def test_the_bounds_themselves_are_allowed() -> None:
    assert len(Filters.parse({"a": 1, "b": 2}, 2).conditions) == 2
    Filters.parse({"k" * 256: 1}, 2)
    Filters.parse({"color": [f"v{i}" for i in range(1000)]}, 2)
    assert Filters.parse({"price": 1.5}, 2)


def test_unknown_and_empty_operators_list_the_operators() -> None:
    for filters, start in (
        ({"color": {}}, "filters.color is an empty object; use one of "),
        ({"color": {"like": "r"}}, "filters.color: unknown operator 'like'; use one of "),
    ):
        with pytest.raises(BadInput) as raised:
            Filters.parse(filters, 2)
        assert raised.value.message == start + OPERATORS_LIST


@pytest.mark.parametrize("case", list(CASES))
def test_the_per_row_form_tests_each_attribute_by_a_correlated_lookup(case: str) -> None:
    """The per-row form must never list every product an attribute test matches (the reason it exists):
    each attribute condition is an EXISTS correlated to the product row, none an IN over a subquery."""
    filters, _ = CASES[case]
    sql = str(Filters.parse(filters, 100).clause(per_row=True).compile())
    assert "products.id IN (SELECT" not in sql, sql
    if any(key != "category" for key in filters):
        assert "EXISTS (SELECT" in sql and "product_attributes.product_id = products.id" in sql, sql


@pytest.mark.parametrize("case", [c for c in CASES if not c.startswith("category")])
def test_the_default_form_tests_each_attribute_by_an_indexed_lookup(case: str) -> None:
    """Listing and filtered search use the set form: one indexed (key, value) lookup per attribute
    condition, never a correlated EXISTS per product row."""
    filters, _ = CASES[case]
    sql = str(Filters.parse(filters, 100).clause().compile())
    assert "IN (SELECT product_attributes.product_id" in sql, sql
    assert "product_attributes.product_id = products.id" not in sql, sql


# Fields of the tags table (issue 19) ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "field"), [("tags.color", "color"), ("tags.", None), ("color", None), ("tag.color", None)]
)
def test_a_tags_field_names_its_tag(name: str, field: str | None) -> None:
    assert tag_field(name) == field


def test_a_range_on_a_tag_is_refused_with_its_reason() -> None:
    with pytest.raises(BadInput) as raised:
        Filters.parse({"tags.color": {"gt": 1}}, 100)
    assert raised.value.message == "filters.tags.color: tags are text; ranges apply to numeric attributes"
