"""Zero-shot tags through the API on the tiny random model: the consistency rule against POST /, the formula
with prompt ensembles and synonyms, thresholds, tags on writes and after a taxonomy change (no image
embedded again), merchant attributes untouched, tags.* in filters and facets, and the audit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from search.catalog.tag_service import TaggingService
from search.model.encoder import Encoder
from tests.support.http import assert_error
from tests.support.images import b64, encode_png, patterned_image
from tests.support.servers import InProcessServer

StartServer = Callable[..., InProcessServer]
COLORS = ["red", "blue", "green", "black"]
STYLES = ["modern", "rustic", "classic"]
CATEGORIES = ("tile", "wood", "stone")
PRODUCTS = 12


def png(seed: int) -> str:
    return b64(encode_png(patterned_image(seed)))


def taxonomy(color_min: float = 0.0, style_min: float = 0.0, **extra: Any) -> dict[str, Any]:
    return {
        "attributes": {
            "color": {"values": COLORS, "prompts": ["a photo of a {} tile"], "min_score": color_min},
            "style": {
                "values": STYLES,
                "prompts": ["a {} interior"],
                "multi_label": True,
                "min_score": style_min,
            },
            **extra,
        }
    }


@pytest.fixture
def server(start_server: StartServer) -> InProcessServer:
    server = start_server()
    for i in range(PRODUCTS):
        body = {
            "image": png(700 + i),
            "title": f"Tile {i}",
            "category": CATEGORIES[i % 3],
            "color": COLORS[(i + 1) % 4],  # the merchant's colour: the tags never overwrite it
        }
        assert server.client.put(f"/products/p{i:02d}", json=body).status_code == 201
    return server


def tagging(server: InProcessServer) -> TaggingService:
    return server.app.state.vitrine.components.products.tagging


def put_taxonomy(server: InProcessServer, document: dict[str, Any]) -> dict[str, Any]:
    response = server.client.put("/taxonomy", json=document)
    assert response.status_code == 202, response.text
    status = tagging(server).wait(60)
    assert status.state == "done", status
    return server.client.get("/taxonomy").json()


def product(server: InProcessServer, product_id: str) -> dict[str, Any]:
    response = server.client.get(f"/products/{product_id}")
    assert response.status_code == 200, response.text
    return response.json()


def zero_shot(server: InProcessServer, image: str, labels: list[str], template: str, multi: bool) -> dict:
    body = {
        "inputs": image,
        "parameters": {"candidate_labels": labels, "hypothesis_template": template, "multi_label": multi},
    }
    response = server.client.post("/", json=body)
    assert response.status_code == 200, response.text
    return {item["label"]: item["score"] for item in response.json()}


# The consistency rule -------------------------------------------------------------------------------------


def test_one_prompt_tags_equal_the_zero_shot_endpoint_single_and_multi_label(server: InProcessServer) -> None:
    put_taxonomy(server, taxonomy())
    service = tagging(server)
    tagger = service.tagger()
    for i in range(PRODUCTS):
        pid = f"p{i:02d}"
        row_id = server.app.state.vitrine.components.products.catalog.get(pid).id
        color_scores, style_scores = service.product_scores(tagger, [row_id])[row_id]
        color = zero_shot(server, png(700 + i), COLORS, "a photo of a {} tile", False)
        style = zero_shot(server, png(700 + i), STYLES, "a {} interior", True)
        np.testing.assert_allclose(color_scores, [color[v] for v in COLORS], rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(style_scores, [style[v] for v in STYLES], rtol=1e-4, atol=1e-6)
        tags = product(server, pid)["tags"]
        best = max(color, key=color.get)
        assert tags["color"]["value"] == best
        assert tags["color"]["score"] == pytest.approx(color[best], rel=1e-4, abs=1e-6)
        shown = {item["value"]: item["score"] for item in tags["style"]["values"]}
        assert shown == pytest.approx(style, rel=1e-4, abs=1e-6)  # min_score 0: every value


# The formula ----------------------------------------------------------------------------------------------


def test_prompt_ensembles_synonyms_and_several_images_follow_the_formula(
    server: InProcessServer, encoder: Encoder
) -> None:
    prompts = ["a photo of a {} tile", "a close-up of {} ceramic"]
    values = ["red", {"value": "navy", "synonyms": ["dark blue", "indigo"]}, "green"]
    document = {"attributes": {"color": {"values": values, "prompts": prompts, "min_score": 0.0}}}
    images = [png(900), png(901)]
    assert server.client.put("/products/two", json={"images": images, "title": "Two"}).status_code == 201
    put_taxonomy(server, document)

    def value_vector(names: list[str]) -> np.ndarray:
        texts = [prompt.replace("{}", name) for name in names for prompt in prompts]
        mean = encoder.embed_texts(texts).astype(np.float64).mean(axis=0)
        return mean / np.linalg.norm(mean)

    matrix = np.stack(
        [value_vector(["red"]), value_vector(["navy", "dark blue", "indigo"]), value_vector(["green"])]
    )
    stored = np.stack(
        [vector for _, vector in server.app.state.vitrine.components.products.catalog.embeddings("two")]
    )
    logits = encoder.logit_scale * (stored.astype(np.float64) @ matrix.T) + encoder.logit_bias
    per_image = np.exp(logits - logits.max(axis=1, keepdims=True))
    per_image /= per_image.sum(axis=1, keepdims=True)
    expected = per_image.mean(axis=0)  # a product's score: the mean over its images
    tags = product(server, "two")["tags"]
    names = ["red", "navy", "green"]
    assert tags["color"] == {
        "value": names[int(expected.argmax())],
        "score": pytest.approx(expected.max(), rel=1e-4),
    }


# Thresholds -----------------------------------------------------------------------------------------------


def test_nothing_below_a_threshold_appears(server: InProcessServer) -> None:
    put_taxonomy(server, taxonomy())
    everything = {p["id"]: p["tags"] for p in server.client.get("/products").json()["results"]}
    color_scores = sorted(tags["color"]["score"] for tags in everything.values())
    style_scores = sorted(v["score"] for tags in everything.values() for v in tags["style"]["values"])
    color_min, style_min = color_scores[len(color_scores) // 2], style_scores[len(style_scores) // 2]
    put_taxonomy(server, taxonomy(color_min, style_min))
    for pid, before in everything.items():
        tags = product(server, pid)["tags"]
        if before["color"]["score"] >= color_min:
            assert tags["color"] == before["color"]
        else:
            assert "color" not in tags  # unknown, never a forced guess
        kept = [v for v in before["style"]["values"] if v["score"] >= style_min]
        assert tags.get("style", {"values": []})["values"] == kept


def test_a_malformed_taxonomy_is_a_400_naming_the_attribute(server: InProcessServer) -> None:
    bad = taxonomy(pattern={"values": ["checks", "stripes"], "prompts": ["no placeholder"]})
    message = assert_error(server.client.put("/taxonomy", json=bad), 400)
    assert "'pattern'" in message and "prompts[0]" in message
    message = assert_error(server.client.put("/taxonomy", json=taxonomy(color_min=1.5)), 400)
    assert "'color'" in message and "min_score" in message
    message = assert_error(
        server.client.put("/taxonomy", json={"attributes": {"finish": {"values": ["matte"]}}}), 400
    )
    assert "'finish'" in message
    assert server.client.get("/taxonomy").json()["version"] == 0  # nothing was stored


# Every path -----------------------------------------------------------------------------------------------


def test_a_put_with_a_new_image_is_tagged_in_its_own_answer(server: InProcessServer) -> None:
    put_taxonomy(server, taxonomy())
    response = server.client.put("/products/new", json={"image": png(4242), "title": "New"})
    assert response.status_code == 201, response.text
    tags = response.json()["product"]["tags"]
    color = zero_shot(server, png(4242), COLORS, "a photo of a {} tile", False)
    assert tags["color"]["value"] == max(color, key=color.get)
    # A PATCH that replaces the picture re-tags in its answer too.
    response = server.client.patch("/products/new", json={"image": png(4343)})
    color = zero_shot(server, png(4343), COLORS, "a photo of a {} tile", False)
    assert response.json()["product"]["tags"]["color"]["score"] == pytest.approx(
        max(color.values()), rel=1e-4
    )


def test_a_taxonomy_change_retags_without_embedding_any_image(
    server: InProcessServer, count_image_embeddings: list[int]
) -> None:
    first = put_taxonomy(server, taxonomy())
    before = {p["id"]: p["tags"] for p in server.client.get("/products").json()["results"]}
    second = put_taxonomy(
        server, {"attributes": {"finish": {"values": ["matte", "glossy"], "min_score": 0.0}}}
    )
    after = {p["id"]: p["tags"] for p in server.client.get("/products").json()["results"]}
    assert count_image_embeddings == [0]
    assert second["version"] == first["version"] + 1
    assert second["retag"]["state"] == "done" and second["retag"]["done"] == PRODUCTS
    assert all(set(tags) == {"color", "style"} for tags in before.values())
    assert all(set(tags) == {"finish"} for tags in after.values())


def test_merchant_attributes_are_untouched(server: InProcessServer) -> None:
    before = {
        p["id"]: (p["attributes"], p["category"]) for p in server.client.get("/products").json()["results"]
    }
    put_taxonomy(server, taxonomy(category={"values": list(CATEGORIES), "min_score": 0.0}))
    listing = server.client.get("/products").json()["results"]
    assert {p["id"]: (p["attributes"], p["category"]) for p in listing} == before
    assert all("color" in p["tags"] and "category" in p["tags"] for p in listing)
    # The merchant's colour still filters as it did; the tag is its own field.
    merchant_red = {pid for pid, (attributes, _) in before.items() if attributes["color"] == "red"}
    response = server.client.get("/products", params={"filters": '{"color": "red"}'})
    assert {p["id"] for p in response.json()["results"]} == merchant_red


# Filters and facets on tags -------------------------------------------------------------------------------


def test_tag_filters_and_facets_on_search_similar_and_listing(server: InProcessServer) -> None:
    put_taxonomy(server, taxonomy(style_min=0.0))
    listing = server.client.get("/products").json()["results"]
    by_color: dict[str, set[str]] = {}
    for p in listing:
        by_color.setdefault(p["tags"]["color"]["value"], set()).add(p["id"])
    chosen = sorted(by_color)[:2]
    wanted = set().union(*(by_color[c] for c in chosen))
    filters = {"tags.color": {"in": chosen}}
    import json

    response = server.client.get("/products", params={"filters": json.dumps(filters), "facets": "tags.color"})
    body = response.json()
    assert {p["id"] for p in body["results"]} == wanted
    assert body["facets"]["tags.color"] == {c: len(by_color[c]) for c in chosen}
    response = server.client.post(
        "/search",
        json={"text": "tile", "mode": "vector", "k": 50, "filters": filters, "facets": ["tags.color"]},
    )
    assert {hit["id"] for hit in response.json()["results"]} == wanted
    assert response.json()["facets"]["tags.color"] == {c: len(by_color[c]) for c in chosen}
    similar = server.client.get(
        "/products/p00/similar", params={"k": 50, "filters": json.dumps({"tags.color": {"not": chosen}})}
    )
    assert {hit["id"] for hit in similar.json()["results"]} == {p["id"] for p in listing} - wanted - {"p00"}
    every = server.client.get("/products", params={"facets": "tags.style"}).json()["facets"]["tags.style"]
    assert every == {s: PRODUCTS for s in STYLES}  # min_score 0: every product has every style
    message = assert_error(
        server.client.post("/search", json={"text": "x", "filters": {"tags.color": {"gte": 1}}}), 400
    )
    assert "tags are text" in message


# Audit ----------------------------------------------------------------------------------------------------


def test_audit_lists_exactly_the_contradictions(server: InProcessServer) -> None:
    put_taxonomy(server, taxonomy(category={"values": list(CATEGORIES), "min_score": 0.0}))
    listing = server.client.get("/products").json()["results"]
    scores = sorted(p["tags"]["category"]["score"] for p in listing)
    min_score = scores[len(scores) // 3]
    expected = sorted(
        (
            {
                "id": p["id"],
                "attribute": "category",
                "given": p["category"],
                "predicted": p["tags"]["category"]["value"],
                "score": p["tags"]["category"]["score"],
            }
            for p in listing
            if p["tags"]["category"]["score"] >= min_score and p["tags"]["category"]["value"] != p["category"]
        ),
        key=lambda row: (-row["score"], row["id"]),
    )
    assert expected  # the random model disagrees with some merchant categories
    response = server.client.get("/audit", params={"attribute": "category", "min_score": min_score})
    body = response.json()
    assert body["results"] == expected and body["total"] == len(expected)
    page = server.client.get(
        "/audit", params={"attribute": "category", "min_score": min_score, "limit": 1, "offset": 1}
    )
    assert page.json()["results"] == expected[1:2]
    # The merchant's colour against the colour tags (an attribute, not a column).
    colors = server.client.get("/audit", params={"attribute": "color", "min_score": 0}).json()
    assert {row["id"] for row in colors["results"]} == {
        p["id"] for p in listing if p["attributes"]["color"] != p["tags"]["color"]["value"]
    }
    message = assert_error(server.client.get("/audit", params={"attribute": "nope"}), 400)
    assert "'nope'" in message
