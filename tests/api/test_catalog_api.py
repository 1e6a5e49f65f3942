"""The catalog API's request and answer shapes: PUT says what changed, PATCH changes only what it names,
GET /products lists with filters, facets and paging, and filters work the same on /search and /similar."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pytest

from search.catalog.compose import compose, normalise
from search.model.encoder import Encoder
from tests.support.http import assert_error
from tests.support.images import b64, encode_png, patterned_image
from tests.support.servers import LiveServer

StartServer = Callable[..., LiveServer]
COLORS = ("red", "blue", "green")


def png(seed: int) -> str:
    return b64(encode_png(patterned_image(seed)))


@pytest.fixture
def server(start_server: StartServer) -> LiveServer:
    server = start_server()
    for i in range(12):
        body = {
            "image": png(600 + i),
            "title": f"Tile {i}",
            "category": "tile" if i % 2 else "wood",
            "color": COLORS[i % 3],
            "price": 10 * i,
        }
        assert server.client.put(f"/products/p{i:02d}", json=body).status_code == 201
    return server


def results(response: object) -> list[str]:
    assert response.status_code == 200, response.text  # type: ignore[attr-defined]
    return [item["id"] for item in response.json()["results"]]  # type: ignore[attr-defined]


def test_put_answers_exactly_what_changed_and_clears_fields_left_out(server: LiveServer) -> None:
    response = server.client.put("/products/p01", json={"title": "Only a title"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "updated"
    assert body["changes"] == {
        "title": {"from": "Tile 1", "to": "Only a title"},
        "category": {"from": "tile", "to": None},
        "attributes.color": {"from": "blue", "to": None},
        "attributes.price": {"from": 10, "to": None},
    }
    assert body["product"]["attributes"] == {} and body["product"]["category"] is None
    assert len(body["product"]["images"]) == 1  # images left out are kept


def test_patch_changes_only_the_named_fields(server: LiveServer, encoder: Encoder) -> None:
    response = server.client.patch("/products/p02", json={"price": 25, "color": None, "finish": "matte"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["changes"] == {
        "attributes.color": {"from": "green", "to": None},
        "attributes.finish": {"from": None, "to": "matte"},
        "attributes.price": {"from": 20, "to": 25},
    }
    product = server.client.get("/products/p02").json()
    assert (product["title"], product["category"]) == ("Tile 2", "wood")
    assert product["attributes"] == {"price": 25, "finish": "matte"}
    again = server.client.patch("/products/p02", json={"price": 25})
    assert again.json()["status"] == "unchanged" and again.json()["changes"] == {}
    assert_error(server.client.patch("/products/no-such", json={"title": "x"}), 404)
    assert "no field" in assert_error(server.client.patch("/products/p02", json={}), 400)
    assert "title must be a string" in assert_error(
        server.client.patch("/products/p02", json={"title": 3}), 400
    )


def test_listing_filters_pages_and_counts_facets(server: LiveServer) -> None:
    filters = {"price": {"gte": 20, "lt": 100}, "color": {"in": ["red", "green"]}}
    expected = sorted(
        f"p{i:02d}" for i in range(12) if 20 <= 10 * i < 100 and COLORS[i % 3] in ("red", "green")
    )
    first = server.client.get(
        "/products", params={"filters": json.dumps(filters), "limit": 3, "facets": "color,category"}
    )
    body = first.json()
    assert results(first) == expected[:3]
    assert body["total"] == len(expected)
    colors: dict[str, int] = {}
    categories: dict[str, int] = {}
    for pid in expected:
        i = int(pid[1:])
        colors[COLORS[i % 3]] = colors.get(COLORS[i % 3], 0) + 1
        category = "tile" if i % 2 else "wood"
        categories[category] = categories.get(category, 0) + 1
    assert body["facets"] == {"color": colors, "category": categories}
    rest = server.client.get("/products", params={"filters": json.dumps(filters), "limit": 3, "offset": 3})
    assert results(rest) == expected[3:6]
    assert results(server.client.get("/products", params={"filters": '{"no_such": 1}'})) == []
    assert "filters.price" in assert_error(
        server.client.get("/products", params={"filters": '{"price": {"gte": "x"}}'}), 400
    )


def test_search_pages_with_offset_and_limit_and_counts_facets(server: LiveServer) -> None:
    body = {"image": png(605), "mode": "vector"}
    everything = results(server.client.post("/search", json={**body, "k": 12}))
    page = server.client.post("/search", json={**body, "limit": 4, "offset": 4, "facets": ["color"]})
    assert results(page) == everything[4:8]
    assert page.json()["facets"] == {"color": {"red": 4, "blue": 4, "green": 4}}
    filtered = server.client.post(
        "/search", json={**body, "filters": {"color": "red"}, "facets": ["category"]}
    )
    assert filtered.json()["facets"] == {"category": {"wood": 2, "tile": 2}}
    message = assert_error(
        server.client.post("/search", json={**body, "filters": {"price": {"lt": "cheap"}}}), 400
    )
    assert "filters.price.lt" in message


def test_similar_honours_every_filter(server: LiveServer) -> None:
    filters = {"color": {"not": "red"}, "price": {"lte": 80}}
    response = server.client.get("/products/p05/similar", params={"k": 20, "filters": json.dumps(filters)})
    expected = {f"p{i:02d}" for i in range(12) if COLORS[i % 3] != "red" and 10 * i <= 80} - {"p05"}
    assert set(results(response)) == expected
    by_category = server.client.get("/products/p05/similar", params={"k": 20, "category": "wood"})
    assert set(results(by_category)) == {f"p{i:02d}" for i in range(0, 12, 2)}


def test_composed_query_vector_equals_the_formula(server: LiveServer, encoder: Encoder) -> None:
    # q = normalise(2 * n(text) + 1 * n(image) - 0.5 * n(product p07's image)), n = normalise
    text = "striped tile"
    body = {
        "positive": [{"text": text, "weight": 2}, {"image": png(611)}],
        "negative": [{"product_id": "p07", "weight": 0.5}],
        "mode": "vector",
        "k": 12,
    }
    answer = server.client.post("/search", json=body).json()["results"]
    t = encoder.embed_texts([text])[0]
    i = encoder.embed_images([patterned_image(611)])[0]
    n = encoder.embed_images([patterned_image(607)])[0]
    expected = normalise(2 * normalise(t) + normalise(i) - 0.5 * normalise(n))
    np.testing.assert_allclose(compose([(t, 2.0), (i, 1.0)], [(n, 0.5)]), expected, atol=1e-6)
    # Every answer's score is its best image's cosine with that vector; the negative product is excluded.
    assert "p07" not in [item["id"] for item in answer]
    for item in answer:
        stored = encoder.embed_images([patterned_image(600 + int(item["id"][1:]))])[0]
        assert item["score"] == pytest.approx(float(stored @ expected), abs=1e-4), item["id"]


def test_a_negative_example_moves_its_neighbours_down(server: LiveServer, encoder: Encoder) -> None:
    anchor = png(604)
    plain = results(server.client.post("/search", json={"image": anchor, "k": 12}))
    # The product nearest to p09 (other than p09 itself) among the plain results:
    neighbours = results(server.client.get("/products/p09/similar", params={"k": 3}))
    pushed = server.client.post(
        "/search", json={"positive": [{"image": anchor}], "negative": [{"product_id": "p09"}], "k": 12}
    )
    ranked = results(pushed)
    assert "p09" not in ranked
    moved = [pid for pid in neighbours if pid in plain and pid in ranked]
    assert moved and all(ranked.index(pid) >= plain.index(pid) for pid in moved), (plain, ranked)
    assert any(ranked.index(pid) > plain.index(pid) for pid in moved), (plain, ranked)


def test_single_input_forms_are_unchanged_and_bad_compositions_are_400(server: LiveServer) -> None:
    assert_error(server.client.post("/search", json={"text": "a", "image": png(1)}), 400)
    assert "positive[0]" in assert_error(server.client.post("/search", json={"positive": [{}]}), 400)
    assert "not both" in assert_error(
        server.client.post("/search", json={"text": "a", "positive": [{"text": "b"}]}), 400
    )
    message = assert_error(
        server.client.post("/search", json={"positive": [{"text": "a", "weight": -1}]}), 400
    )
    assert "weight" in message
    assert "mode" in assert_error(
        server.client.post("/search", json={"image": png(1), "mode": "lexical"}), 400
    )


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
@pytest.mark.parametrize("mode", [None, "vector", "lexical", "hybrid"])
def test_an_empty_text_query_is_400_in_every_mode(server: LiveServer, text: str, mode: str | None) -> None:
    body = {"text": text} if mode is None else {"text": text, "mode": mode}
    assert (
        assert_error(server.client.post("/search", json=body), 400)
        == "text is empty; give words to search for"
    )
    composed = {"positive": [{"text": "oak"}], "negative": [{"text": text}]}
    assert "text is empty" in assert_error(server.client.post("/search", json=composed), 400)
