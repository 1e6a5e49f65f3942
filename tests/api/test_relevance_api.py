"""The relevance features over HTTP: cut-offs and sort on /search (the total that passed), explain on
each hit, and POST /search/explain."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.http import assert_error
from tests.support.images import b64, encode_png, patterned_image
from tests.support.servers import LiveServer

StartServer = Callable[..., LiveServer]


def png(seed: int) -> str:
    return b64(encode_png(patterned_image(seed)))


@pytest.fixture
def server(start_server: StartServer) -> LiveServer:
    server = start_server()
    for i in range(12):
        body = {
            "image": png(700 + i),
            "title": f"Tile {i} {'glazed' if i % 3 == 0 else 'rough'}",
            "category": "tile" if i % 2 else "wood",
            "price": (i * 7) % 12,
        }
        assert server.client.put(f"/products/p{i:02d}", json=body).status_code == 201
    return server


def test_search_sorts_the_hits_above_the_cut_off_and_says_how_many(server: LiveServer) -> None:
    body = {"image": png(705), "mode": "vector", "k": 12}
    scores = sorted(hit["score"] for hit in server.client.post("/search", json=body).json()["results"])
    cut = (scores[4] + scores[5]) / 2  # 7 products above it
    sorted_body = {
        **body,
        "k": 3,
        "min_vector_score": cut,
        "sort": [{"field": "price", "order": "desc"}],
        "facets": ["category"],
    }
    pages = [server.client.post("/search", json={**sorted_body, "offset": o}).json() for o in (0, 3, 6)]
    assert [page["total"] for page in pages] == [7, 7, 7]
    hits = [hit for page in pages for hit in page["results"]]
    assert len(hits) == 7 and len({hit["id"] for hit in hits}) == 7
    assert all(hit["score"] >= cut for hit in hits)
    prices = [hit["attributes"]["price"] for hit in hits]
    assert prices == sorted(prices, reverse=True)
    assert sum(pages[0]["facets"]["category"].values()) == 7
    assert "total" not in server.client.post("/search", json=body).json()  # no sort, no total


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"sort": [{"field": "price", "order": "up"}]}, "sort"),
        ({"sort": []}, "sort must be a list"),
        ({"sort": [{"order": "asc"}]}, "sort.0.field"),
        ({"min_lexical_score": 1}, "min_lexical_score applies to the lexical"),
        ({"min_vector_score": "high"}, "min_vector_score"),
    ],
)
def test_a_bad_sort_or_cut_off_is_a_400_naming_it(server: LiveServer, extra: dict, message: str) -> None:
    response = server.client.post("/search", json={"image": png(705), "mode": "vector", **extra})
    assert message in assert_error(response, 400)


def test_explain_on_search_and_why_not_over_http(server: LiveServer) -> None:
    body = {"text": "tile glazed", "mode": "hybrid", "k": 3, "explain": True}
    hits = server.client.post("/search", json=body).json()["results"]
    for hit in hits:
        parts = [
            hit["explain"][side]["contribution"] for side in ("lexical", "vector") if hit["explain"][side]
        ]
        assert sum(parts) + hit["explain"]["exact_match_boost"] == pytest.approx(hit["score"], rel=1e-12)
    assert (
        "explain" not in server.client.post("/search", json={**body, "explain": False}).json()["results"][0]
    )
    inside = server.client.post("/search/explain", json={"query": body, "product_id": hits[0]["id"]}).json()
    assert inside["in_results"] and inside["rank"] == 1 and inside["excluded_by"] is None
    filtered = {**body, "filters": {"category": "wood"}}
    tile = next(f"p{i:02d}" for i in range(1, 12, 2))
    answer = server.client.post("/search/explain", json={"query": filtered, "product_id": tile}).json()
    assert answer["excluded_by"] == {"filter": "category"} and answer["in_results"] is False


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"query": {"text": "tile"}}, 400, "product_id"),
        ({"query": {"text": "tile"}, "product_id": 7}, 400, "product_id must be a non-empty string"),
        ({"query": {"text": "tile", "k": 0}, "product_id": "p01"}, 400, "k must be"),
        ({"query": {"text": "tile"}, "product_id": "nope"}, 404, "no product with id 'nope'"),
    ],
)
def test_why_not_refuses_bad_bodies(server: LiveServer, body: dict, status: int, message: str) -> None:
    assert message in assert_error(server.client.post("/search/explain", json=body), status)
