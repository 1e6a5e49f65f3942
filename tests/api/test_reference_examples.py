"""Every request and response example of endpoint-reference.txt, sent to the app.

The reference's image URLs are served by the local image server under the same paths; every example also
runs with the images as raw base64 and as data: URIs. Responses must have exactly the documented shape,
and every number must equal the plain transformers computation (tests/support/reference.py) on the
picture the bytes decode to.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.images import b64, encode_png, patterned_image
from tests.support.reference import (
    decoded,
    load_reference,
    ref_image_embeddings,
    ref_similarity,
    ref_text_embeddings,
    ref_zero_shot,
)

SOURCES = ["url", "base64", "data_uri"]
TOL = 1e-5

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


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    return load_reference(tiny_model_dir)


class Pictures:
    """image(name, source) -> the input string for a reference image (a URL, base64 or a data URI);
    ``of(inputs)`` -> the pictures those inputs decode to, for the reference computation."""

    def __init__(self, image_server) -> None:
        self.image_server = image_server
        self.decoded: dict[str, object] = {}

    def __call__(self, name: str, source: str) -> str:
        seed = sum(name.encode()) % 97
        fmt = "PNG" if name.endswith(".png") else "JPEG"
        data = encode_png(patterned_image(seed), fmt)
        if source == "url":
            value = self.image_server.add(f"/products/{name}", data)
        elif source == "base64":
            value = b64(data)
        else:
            value = f"data:image/{fmt.lower()};base64,{b64(data)}"
        self.decoded[value] = decoded(data)
        return value

    def of(self, inputs: str | list[str]) -> list[object]:
        return [self.decoded[value] for value in ([inputs] if isinstance(inputs, str) else inputs)]


@pytest.fixture
def image(image_server) -> Pictures:
    return Pictures(image_server)


@pytest.fixture
def post(shared_server):
    def send(payload: dict) -> object:
        response = shared_server.client.post("/", json=payload, headers={"Authorization": "Bearer hf_xxxxx"})
        assert response.status_code == 200, response.text
        return response.json()

    return send


def assert_ranking(value: object, labels: list[str], expected: np.ndarray) -> None:
    """A zero-shot answer for one image: [{"label": str, "score": float}, ...], every label, sorted by
    score, each score the reference's softmax for that label (``expected`` is in ``labels`` order)."""
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
    got = {item["label"]: item["score"] for item in value}
    np.testing.assert_allclose([got[label] for label in labels], expected, atol=TOL)


def assert_embeddings(value: object, expected: np.ndarray) -> None:
    """[{"embedding": [dim floats]}, ...] with one entry per input, also for a single input, each the
    reference's unit vector."""
    assert isinstance(value, list)
    assert len(value) == len(expected)
    for item in value:
        assert isinstance(item, dict)
        assert list(item) == ["embedding"]
        assert isinstance(item["embedding"], list)
        assert len(item["embedding"]) == expected.shape[1]
        assert all(isinstance(x, float) for x in item["embedding"])
    np.testing.assert_allclose([item["embedding"] for item in value], expected, atol=TOL)


def assert_similarity(value: object, expected: np.ndarray) -> None:
    assert isinstance(value, dict)
    assert set(value) == {"similarity_scores", "image_count", "text_count"}
    images, texts = expected.shape
    assert type(value["image_count"]) is int and value["image_count"] == images
    assert type(value["text_count"]) is int and value["text_count"] == texts
    matrix = value["similarity_scores"]
    assert isinstance(matrix, list) and len(matrix) == images
    for row in matrix:
        assert isinstance(row, list) and len(row) == texts
        assert all(isinstance(x, float) for x in row)
    np.testing.assert_allclose(matrix, expected, atol=TOL)


# Zero-shot classification -------------------------------------------------------------------------------


@pytest.mark.parametrize("source", SOURCES)
def test_zero_shot_single_image(post, image, reference, source):
    labels = ["label1", "label2", "label3"]
    inputs = image("single.jpg", source)
    result = post({"inputs": inputs, "parameters": {"candidate_labels": labels}})
    assert_ranking(result, labels, ref_zero_shot(reference, image.of(inputs), labels)[0])


@pytest.mark.parametrize("source", SOURCES)
def test_zero_shot_batch_gives_a_list_of_rankings(post, image, reference, source):
    labels = ["label1", "label2", "label3"]
    inputs = [image("image1.jpg", source), image("image2.png", source)]
    result = post({"inputs": inputs, "parameters": {"candidate_labels": labels}})
    assert isinstance(result, list) and len(result) == 2
    for ranking, expected in zip(result, ref_zero_shot(reference, image.of(inputs), labels), strict=True):
        assert_ranking(ranking, labels, expected)


@pytest.mark.parametrize("source", SOURCES)
def test_zero_shot_with_explicit_mode(post, image, reference, source):
    labels = ["ceramic tile", "porcelain tile", "natural stone"]
    inputs = image("tile.jpg", source)
    payload = {"inputs": inputs, "parameters": {"candidate_labels": labels, "mode": "zero_shot"}}
    assert_ranking(post(payload), labels, ref_zero_shot(reference, image.of(inputs), labels)[0])


@pytest.mark.parametrize("source", SOURCES)
def test_zero_shot_batch_of_one_is_a_list_of_one_ranking(post, image, reference, source):
    labels = ["wood flooring", "laminate"]
    inputs = [image("floor.jpg", source)]
    result = post({"inputs": inputs, "parameters": {"candidate_labels": labels}})
    assert isinstance(result, list) and len(result) == 1
    assert_ranking(result[0], labels, ref_zero_shot(reference, image.of(inputs), labels)[0])


@pytest.mark.parametrize("source", SOURCES)
def test_curl_zero_shot_with_ten_catalog_labels(post, image, reference, source):
    inputs = image("tile-001.jpg", source)
    payload = {"inputs": inputs, "parameters": {"candidate_labels": TILE_LABELS}}
    assert_ranking(post(payload), TILE_LABELS, ref_zero_shot(reference, image.of(inputs), TILE_LABELS)[0])


# Image embedding ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", SOURCES)
def test_image_embedding_single_is_a_list_of_one(post, image, reference, source):
    inputs = image("single.jpg", source)
    result = post({"inputs": inputs, "parameters": {"mode": "image_embedding"}})
    assert_embeddings(result, ref_image_embeddings(reference, image.of(inputs)))


@pytest.mark.parametrize("source", SOURCES)
def test_image_embedding_batch_of_three(post, image, reference, source):
    inputs = [image("image1.jpg", source), image("image2.png", source), image("image3.jpg", source)]
    result = post({"inputs": inputs, "parameters": {"mode": "image_embedding"}})
    assert_embeddings(result, ref_image_embeddings(reference, image.of(inputs)))


@pytest.mark.parametrize("source", SOURCES)
def test_curl_image_embedding_of_catalog_products(post, image, reference, source):
    inputs = [image(f"tile-00{i}.jpg", source) for i in (1, 2, 3)]
    result = post({"inputs": inputs, "parameters": {"mode": "image_embedding"}})
    assert_embeddings(result, ref_image_embeddings(reference, image.of(inputs)))


def test_embedding_dimension_comes_from_the_model_config(encoder, tiny_model_dir):
    import json

    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert encoder.info.embedding_dim == config["vision_config"]["hidden_size"] == 32


# Text embedding -----------------------------------------------------------------------------------------


def test_text_embedding_single_is_a_list_of_one(post, reference):
    text = "a photo of ceramic floor tiles"
    result = post({"inputs": text, "parameters": {"mode": "text_embedding"}})
    assert_embeddings(result, ref_text_embeddings(reference, [text]))


def test_text_embedding_batch_of_three(post, reference):
    texts = ["ceramic tile with matte finish", "glossy porcelain tile", "natural wood flooring"]
    result = post({"inputs": texts, "parameters": {"mode": "text_embedding"}})
    assert_embeddings(result, ref_text_embeddings(reference, texts))


def test_curl_text_embedding_of_four_product_texts(post, reference):
    texts = [
        "matte finish ceramic tile 60x60cm",
        "glossy white porcelain tile",
        "rustic oak wood flooring",
        "inverter heat pump 12kW",
    ]
    result = post({"inputs": texts, "parameters": {"mode": "text_embedding"}})
    assert_embeddings(result, ref_text_embeddings(reference, texts))


# Similarity ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", SOURCES)
def test_similarity_single_image_three_texts(post, image, reference, source):
    texts = ["description 1", "description 2", "description 3"]
    inputs = image("single.jpg", source)
    payload = {"inputs": {"image": inputs, "texts": texts}, "parameters": {"mode": "similarity"}}
    assert_similarity(post(payload), ref_similarity(reference, image.of(inputs), texts))


@pytest.mark.parametrize("source", SOURCES)
def test_similarity_two_images_three_texts(post, image, reference, source):
    images = [image("image1.jpg", source), image("image2.png", source)]
    texts = ["ceramic tile", "wood flooring", "heat pump"]
    payload = {"inputs": {"images": images, "texts": texts}, "parameters": {"mode": "similarity"}}
    assert_similarity(post(payload), ref_similarity(reference, image.of(images), texts))


@pytest.mark.parametrize("source", SOURCES)
def test_curl_similarity_of_an_unknown_product(post, image, reference, source):
    inputs = image("unknown-product.jpg", source)
    texts = [
        "beige ceramic floor tile with matte finish",
        "white glossy porcelain wall tile",
        "gray natural stone tile with rough texture",
        "colorful mosaic glass tile",
    ]
    payload = {"inputs": {"image": inputs, "texts": texts}, "parameters": {"mode": "similarity"}}
    assert_similarity(post(payload), ref_similarity(reference, image.of(inputs), texts))


@pytest.mark.parametrize("source", SOURCES)
def test_similarity_auto_detected_without_mode(post, image, reference, source):
    inputs = image("single.jpg", source)
    result = post({"inputs": {"image": inputs, "texts": ["a", "b"]}})
    assert_similarity(result, ref_similarity(reference, image.of(inputs), ["a", "b"]))


@pytest.mark.parametrize(
    ("image_key", "text_key", "texts", "text_list"),
    [
        ("image", "text", "one text", ["one text"]),
        ("images", "text", "one text", ["one text"]),
        ("image", "texts", ["a"], ["a"]),
    ],
)
def test_similarity_accepts_singular_and_plural_keys(
    post, image, reference, image_key, text_key, texts, text_list
):
    value = image("single.jpg", "base64")
    images = [value, value] if image_key == "images" else value
    result = post({"inputs": {image_key: images, text_key: texts}, "parameters": {"mode": "similarity"}})
    assert_similarity(result, ref_similarity(reference, image.of(images), text_list))


# The reference's Python client ----------------------------------------------------------------------------


def test_python_classify_product(post, image, reference):
    labels = ["ceramic tile", "wood flooring"]
    inputs = image("tile-001.jpg", "url")
    result = post({"inputs": inputs, "parameters": {"candidate_labels": labels}})
    assert_ranking(result, labels, ref_zero_shot(reference, image.of(inputs), labels)[0])


def test_python_get_image_embedding(post, image, reference):
    inputs = image("tile-001.jpg", "url")
    response = post({"inputs": inputs, "parameters": {"mode": "image_embedding"}})
    np.testing.assert_allclose(
        response[0]["embedding"], ref_image_embeddings(reference, image.of(inputs))[0], atol=TOL
    )


def test_python_get_text_embedding(post, reference):
    response = post({"inputs": "glossy porcelain tile", "parameters": {"mode": "text_embedding"}})
    expected = ref_text_embeddings(reference, ["glossy porcelain tile"])[0]
    np.testing.assert_allclose(response[0]["embedding"], expected, atol=TOL)


def test_python_get_similarity(post, image, reference):
    texts = ["ceramic tile", "wood flooring", "heat pump"]
    inputs = image("tile-001.jpg", "url")
    payload = {"inputs": {"image": inputs, "texts": texts}, "parameters": {"mode": "similarity"}}
    scores = post(payload)["similarity_scores"][0]
    np.testing.assert_allclose(scores, ref_similarity(reference, image.of(inputs), texts)[0], atol=TOL)


def test_python_classify_local_image_as_base64(post, image, reference):
    labels = ["ceramic tile", "wood flooring", "company logo"]
    inputs = image("local.jpg", "base64")
    result = post({"inputs": inputs, "parameters": {"candidate_labels": labels}})
    assert_ranking(result, labels, ref_zero_shot(reference, image.of(inputs), labels)[0])


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
