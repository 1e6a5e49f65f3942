"""/docs describes the hand-read request bodies, so the interactive docs can send real requests."""

from __future__ import annotations


def test_openapi_documents_the_inference_body_with_an_example_per_mode(server):
    spec = server.client.get("/openapi.json").json()
    body = spec["paths"]["/"]["post"]["requestBody"]["content"]["application/json"]
    assert set(body["examples"]) == {"zero_shot", "image_embedding", "text_embedding", "similarity"}
    assert body["schema"]["required"] == ["inputs"]


def test_openapi_documents_the_search_and_product_bodies(server):
    spec = server.client.get("/openapi.json").json()
    search = spec["paths"]["/search"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"text", "image", "product_id", "k", "filters", "min_score"} <= set(search["properties"])
    put = spec["paths"]["/products/{product_id}"]["put"]["requestBody"]["content"]["application/json"][
        "schema"
    ]
    assert "image" in put["properties"]
