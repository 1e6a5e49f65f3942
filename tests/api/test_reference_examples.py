"""Every request and response example of endpoint-reference.txt, sent to a real server.

The reference's image URLs are served by the local image server under the same paths; every example also
runs with the images as raw base64 and as data: URIs. Responses must have exactly the documented shape.
"""

from __future__ import annotations

import pytest

from tests.support.images import b64, encode_png, patterned_image

SOURCES = ["url", "base64", "data_uri"]

TILE_LABELS = [
    "ceramic floor tile",
    "porcelain wall tile",
    "natural stone slab",
    "mosaic tile sheet",
    "wood laminate plank",
    "vinyl flooring",
    "heat pump outdoor unit",
    "heat pump indoor unit",
    "technical diagram",
    "company logo",
]


@pytest.fixture
def image(image_server):
    """image(name, source) -> the input string for a reference image, as a URL, base64 or data URI."""

    def make(name: str, source: str) -> str:
        seed = sum(name.encode()) % 97
        fmt = "PNG" if name.endswith(".png") else "JPEG"
        data = encode_png(patterned_image(seed), fmt)
        if source == "url":
            return image_server.add(f"/products/{name}", data)
        if source == "base64":
            return b64(data)
        return f"data:image/{fmt.lower()};base64,{b64(data)}"

    return make


@pytest.fixture
def post(shared_server):
    def send(payload: dict) -> object:
        response = shared_server.client.post("/", json=payload, headers={"Authorization": "Bearer hf_xxxxx"})
        assert response.status_code == 200, response.text
        return response.json()

    return send


def assert_ranking(value: object, labels: list[str]) -> None:
    """A zero-shot answer for one image: [{"label": str, "score": float}, ...], every label, sorted."""
    assert isinstance(value, list)
    assert len(value) == len(labels)
    for item in value:
        assert isinstance(item, dict)
        assert list(item) == ["label", "score"]
        assert isinstance(item["label"], str)
        assert isinstance(item["score"], float)
        assert 0.0 <= item["score"] <= 1.0
    assert sorted(item["label"] for item in value) == sorted(labels)
    scores = [item["score"] for item in value]
    assert scores == sorted(scores, reverse=True)
    assert sum(scores) == pytest.approx(1.0, abs=1e-5)


def assert_embeddings(value: object, count: int, dim: int) -> None:
    """[{"embedding": [dim floats]}, ...] with one entry per input, also for a single input."""
    assert isinstance(value, list)
    assert len(value) == count
    for item in value:
        assert isinstance(item, dict)
        assert list(item) == ["embedding"]
        assert isinstance(item["embedding"], list)
        assert len(item["embedding"]) == dim
        assert all(isinstance(x, float) for x in item["embedding"])
        assert sum(x * x for x in item["embedding"]) == pytest.approx(1.0, abs=1e-5)


def assert_similarity(value: object, images: int, texts: int) -> None:
    assert isinstance(value, dict)
    assert set(value) == {"similarity_scores", "image_count", "text_count"}
    assert type(value["image_count"]) is int and value["image_count"] == images
    assert type(value["text_count"]) is int and value["text_count"] == texts
    matrix = value["similarity_scores"]
    assert isinstance(matrix, list) and len(matrix) == images
    for row in matrix:
        assert isinstance(row, list) and len(row) == texts
        assert all(isinstance(x, float) and -1.0 - 1e-6 <= x <= 1.0 + 1e-6 for x in row)


# Zero-shot classification -------------------------------------------------------------------------------


@pytest.mark.parametrize("source", SOURCES)
def test_zero_shot_single_image(post, image, source):
    labels = ["label1", "label2", "label3"]
    result = post({"inputs": image("single.jpg", source), "parameters": {"candidate_labels": labels}})
    assert_ranking(result, labels)


@pytest.mark.parametrize("source", SOURCES)
def test_zero_shot_batch_gives_a_list_of_rankings(post, image, source):
    labels = ["label1", "label2", "label3"]
    inputs = [image("image1.jpg", source), image("image2.png", source)]
    result = post({"inputs": inputs, "parameters": {"candidate_labels": labels}})
    assert isinstance(result, list) and len(result) == 2
    for ranking in result:
        assert_ranking(ranking, labels)


@pytest.mark.parametrize("source", SOURCES)
def test_zero_shot_with_explicit_mode(post, image, source):
    labels = ["ceramic tile", "porcelain tile", "natural stone"]
    payload = {
        "inputs": image("tile.jpg", source),
        "parameters": {"candidate_labels": labels, "mode": "zero_shot"},
    }
    assert_ranking(post(payload), labels)


@pytest.mark.parametrize("source", SOURCES)
def test_zero_shot_batch_of_one_is_a_list_of_one_ranking(post, image, source):
    labels = ["wood flooring", "laminate"]
    result = post({"inputs": [image("floor.jpg", source)], "parameters": {"candidate_labels": labels}})
    assert isinstance(result, list) and len(result) == 1
    assert_ranking(result[0], labels)


@pytest.mark.parametrize("source", SOURCES)
def test_curl_zero_shot_with_ten_catalog_labels(post, image, source):
    payload = {"inputs": image("tile-001.jpg", source), "parameters": {"candidate_labels": TILE_LABELS}}
    assert_ranking(post(payload), TILE_LABELS)


# Image embedding ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", SOURCES)
def test_image_embedding_single_is_a_list_of_one(post, image, encoder, source):
    result = post({"inputs": image("single.jpg", source), "parameters": {"mode": "image_embedding"}})
    assert_embeddings(result, 1, encoder.info.embedding_dim)


@pytest.mark.parametrize("source", SOURCES)
def test_image_embedding_batch_of_three(post, image, encoder, source):
    inputs = [image("image1.jpg", source), image("image2.png", source), image("image3.jpg", source)]
    result = post({"inputs": inputs, "parameters": {"mode": "image_embedding"}})
    assert_embeddings(result, 3, encoder.info.embedding_dim)


@pytest.mark.parametrize("source", SOURCES)
def test_curl_image_embedding_of_catalog_products(post, image, encoder, source):
    inputs = [image(f"tile-00{i}.jpg", source) for i in (1, 2, 3)]
    result = post({"inputs": inputs, "parameters": {"mode": "image_embedding"}})
    assert_embeddings(result, 3, encoder.info.embedding_dim)


def test_embedding_dimension_comes_from_the_model_config(encoder, tiny_model_dir):
    import json

    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert encoder.info.embedding_dim == config["vision_config"]["hidden_size"] == 32


# Text embedding -----------------------------------------------------------------------------------------


def test_text_embedding_single_is_a_list_of_one(post, encoder):
    result = post({"inputs": "a photo of ceramic floor tiles", "parameters": {"mode": "text_embedding"}})
    assert_embeddings(result, 1, encoder.info.embedding_dim)


def test_text_embedding_batch_of_three(post, encoder):
    texts = ["ceramic tile with matte finish", "glossy porcelain tile", "natural wood flooring"]
    result = post({"inputs": texts, "parameters": {"mode": "text_embedding"}})
    assert_embeddings(result, 3, encoder.info.embedding_dim)


def test_curl_text_embedding_of_four_product_texts(post, encoder):
    texts = [
        "matte finish ceramic tile 60x60cm",
        "glossy white porcelain tile",
        "rustic oak wood flooring",
        "inverter heat pump 12kW",
    ]
    result = post({"inputs": texts, "parameters": {"mode": "text_embedding"}})
    assert_embeddings(result, 4, encoder.info.embedding_dim)


# Similarity ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", SOURCES)
def test_similarity_single_image_three_texts(post, image, source):
    texts = ["description 1", "description 2", "description 3"]
    payload = {
        "inputs": {"image": image("single.jpg", source), "texts": texts},
        "parameters": {"mode": "similarity"},
    }
    assert_similarity(post(payload), 1, 3)


@pytest.mark.parametrize("source", SOURCES)
def test_similarity_two_images_three_texts(post, image, source):
    inputs = {
        "images": [image("image1.jpg", source), image("image2.png", source)],
        "texts": ["ceramic tile", "wood flooring", "heat pump"],
    }
    assert_similarity(post({"inputs": inputs, "parameters": {"mode": "similarity"}}), 2, 3)


@pytest.mark.parametrize("source", SOURCES)
def test_curl_similarity_of_an_unknown_product(post, image, source):
    inputs = {
        "image": image("unknown-product.jpg", source),
        "texts": [
            "beige ceramic floor tile with matte finish",
            "white glossy porcelain wall tile",
            "gray natural stone tile with rough texture",
            "colorful mosaic glass tile",
        ],
    }
    assert_similarity(post({"inputs": inputs, "parameters": {"mode": "similarity"}}), 1, 4)


@pytest.mark.parametrize("source", SOURCES)
def test_similarity_auto_detected_without_mode(post, image, source):
    inputs = {"image": image("single.jpg", source), "texts": ["a", "b"]}
    assert_similarity(post({"inputs": inputs}), 1, 2)


@pytest.mark.parametrize(
    ("image_key", "text_key", "texts", "text_count"),
    [("image", "text", "one text", 1), ("images", "text", "one text", 1), ("image", "texts", ["a"], 1)],
)
def test_similarity_accepts_singular_and_plural_keys(post, image, image_key, text_key, texts, text_count):
    value = image("single.jpg", "base64")
    images = [value, value] if image_key == "images" else value
    result = post({"inputs": {image_key: images, text_key: texts}, "parameters": {"mode": "similarity"}})
    assert_similarity(result, 2 if image_key == "images" else 1, text_count)


# The reference's Python client ----------------------------------------------------------------------------


def test_python_classify_product(post, image):
    labels = ["ceramic tile", "wood flooring"]
    assert_ranking(
        post({"inputs": image("tile-001.jpg", "url"), "parameters": {"candidate_labels": labels}}), labels
    )


def test_python_get_image_embedding(post, image, encoder):
    response = post({"inputs": image("tile-001.jpg", "url"), "parameters": {"mode": "image_embedding"}})
    embedding = response[0]["embedding"]
    assert len(embedding) == encoder.info.embedding_dim


def test_python_get_text_embedding(post, encoder):
    response = post({"inputs": "glossy porcelain tile", "parameters": {"mode": "text_embedding"}})
    assert len(response[0]["embedding"]) == encoder.info.embedding_dim


def test_python_get_similarity(post, image):
    texts = ["ceramic tile", "wood flooring", "heat pump"]
    payload = {
        "inputs": {"image": image("tile-001.jpg", "url"), "texts": texts},
        "parameters": {"mode": "similarity"},
    }
    scores = post(payload)["similarity_scores"][0]
    assert len(scores) == 3 and all(isinstance(x, float) for x in scores)


def test_python_classify_local_image_as_base64(post, image):
    labels = ["ceramic tile", "wood flooring", "company logo"]
    assert_ranking(
        post({"inputs": image("local.jpg", "base64"), "parameters": {"candidate_labels": labels}}), labels
    )


def test_same_image_by_url_base64_and_data_uri_gives_the_same_embedding(post, image):
    vectors = [
        post({"inputs": image("same.png", source), "parameters": {"mode": "image_embedding"}})[0]["embedding"]
        for source in SOURCES
    ]
    assert vectors[0] == pytest.approx(vectors[1], abs=1e-6)
    assert vectors[0] == pytest.approx(vectors[2], abs=1e-6)


# Compatibility with the Hugging Face toolkit's own routes ----------------------------------------------------


def test_predict_alias_answers_like_the_root_route(server):
    body = {"inputs": ["glossy porcelain tile"], "parameters": {"mode": "text_embedding"}}
    assert server.client.post("/predict", json=body).json() == server.client.post("/", json=body).json()


def test_query_parameters_stand_in_for_missing_parameters(server):
    response = server.client.post("/?mode=text_embedding", json={"inputs": "https://a.example/not-fetched"})
    assert response.status_code == 200
    assert len(response.json()) == 1 and len(response.json()[0]["embedding"]) == 32


def test_query_parameters_are_ignored_when_the_body_has_parameters(server):
    body = {"inputs": ["glossy porcelain tile"], "parameters": {"mode": "text_embedding"}}
    response = server.client.post("/?mode=similarity", json=body)
    assert response.status_code == 200
    assert len(response.json()) == 1


def test_query_values_are_read_as_numbers_and_booleans():
    from api.routes.inference import _query_value

    assert _query_value("3") == 3
    assert _query_value("true") is True
    assert _query_value("False") is False
    assert _query_value("zero_shot") == "zero_shot"


def test_get_root_is_a_liveness_answer(server):
    assert server.client.get("/").json() == {"status": "ok"}
