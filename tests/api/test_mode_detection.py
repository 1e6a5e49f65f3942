"""Mode detection when parameters.mode is absent: the reference's table, row by row, in its order."""

from __future__ import annotations

import pytest

from search.endpoint import detect_mode
from tests.support.images import b64, encode_png, patterned_image

IMAGE = "https://catalog.example.com/products/tile-001.jpg"


# Row 1: inputs has image/images AND text/texts -> similarity ----------------------------------------------


@pytest.mark.parametrize("image_key", ["image", "images"])
@pytest.mark.parametrize("text_key", ["text", "texts"])
def test_image_and_text_keys_detect_similarity(image_key, text_key):
    assert detect_mode({image_key: IMAGE, text_key: ["a"]}, {}) == "similarity"


def test_similarity_keys_win_over_candidate_labels():
    assert detect_mode({"image": IMAGE, "texts": ["a"]}, {"candidate_labels": ["a"]}) == "similarity"


def test_image_key_without_text_key_is_not_similarity():
    assert detect_mode({"images": [IMAGE]}, {}) == "image_embedding"


def test_text_key_without_image_key_is_not_similarity():
    assert detect_mode({"texts": ["a"]}, {}) == "image_embedding"


# Row 2: parameters.candidate_labels present -> zero_shot ---------------------------------------------------


def test_candidate_labels_detect_zero_shot():
    assert detect_mode(IMAGE, {"candidate_labels": ["a", "b"]}) == "zero_shot"


def test_candidate_labels_win_over_an_array_of_short_strings():
    assert detect_mode(["short", "strings"], {"candidate_labels": ["a"]}) == "zero_shot"


def test_candidate_labels_present_but_empty_still_detect_zero_shot():
    # Present is what counts; zero_shot then answers with the reference's "required" message.
    assert detect_mode(IMAGE, {"candidate_labels": None}) == "zero_shot"


# Row 3: array of short strings (< 500 chars, no http prefix) -> text_embedding ------------------------------


def test_array_of_short_strings_detects_text_embedding():
    assert detect_mode(["ceramic tile", "wood flooring"], {}) == "text_embedding"


def test_string_of_499_characters_is_short():
    assert detect_mode(["x" * 499], {}) == "text_embedding"


def test_string_of_500_characters_is_not_short():
    assert detect_mode(["x" * 500], {}) == "image_embedding"


def test_one_long_string_in_the_array_makes_it_image_embedding():
    assert detect_mode(["short", "x" * 500], {}) == "image_embedding"


@pytest.mark.parametrize("first", ["http://example.com/a.jpg", "https://example.com/a.jpg", "httpd config"])
def test_a_string_starting_with_http_makes_it_image_embedding(first):
    assert detect_mode([first, "short"], {}) == "image_embedding"


def test_http_later_in_a_string_does_not_count():
    assert detect_mode(["see http://example.com"], {}) == "text_embedding"


def test_array_with_a_non_string_is_not_text_embedding():
    assert detect_mode(["short", 5], {}) == "image_embedding"


# Row 4: otherwise -> image_embedding ------------------------------------------------------------------------


def test_single_url_string_detects_image_embedding():
    assert detect_mode(IMAGE, {}) == "image_embedding"


def test_single_short_string_is_not_an_array_so_image_embedding():
    assert detect_mode("a photo of ceramic floor tiles", {}) == "image_embedding"


def test_null_inputs_detect_image_embedding():
    assert detect_mode(None, {}) == "image_embedding"


# Explicit mode ----------------------------------------------------------------------------------------------


def test_explicit_mode_overrides_candidate_labels(inference):
    result = inference(
        {"inputs": ["ceramic tile"], "parameters": {"mode": "text_embedding", "candidate_labels": ["a"]}}
    )
    assert list(result[0]) == ["embedding"]


def test_explicit_text_embedding_accepts_long_and_http_strings(inference):
    result = inference(
        {"inputs": ["http is a protocol", "y" * 600], "parameters": {"mode": "text_embedding"}}
    )
    assert len(result) == 2 and all(list(item) == ["embedding"] for item in result)


def test_explicit_image_embedding_overrides_similarity_keys(inference):
    image = b64(encode_png(patterned_image(1)))
    result = inference(
        {"inputs": {"image": image, "texts": ["a"]}, "parameters": {"mode": "image_embedding"}}
    )
    assert len(result) == 1 and list(result[0]) == ["embedding"]


# Over HTTP --------------------------------------------------------------------------------------------------


def test_http_array_of_texts_without_mode_gives_text_embeddings(shared_server):
    texts = ["ceramic tile", "wood flooring"]
    detected = shared_server.client.post("/", json={"inputs": texts}).json()
    explicit = shared_server.client.post(
        "/", json={"inputs": texts, "parameters": {"mode": "text_embedding"}}
    )
    assert detected == explicit.json()


def test_http_single_image_without_mode_gives_an_image_embedding(shared_server):
    image = b64(encode_png(patterned_image(2)))
    detected = shared_server.client.post("/", json={"inputs": image})
    explicit = shared_server.client.post(
        "/", json={"inputs": image, "parameters": {"mode": "image_embedding"}}
    )
    assert detected.status_code == 200
    assert detected.json() == explicit.json()


def test_http_candidate_labels_without_mode_give_zero_shot(shared_server):
    image = b64(encode_png(patterned_image(3)))
    response = shared_server.client.post(
        "/", json={"inputs": image, "parameters": {"candidate_labels": ["a", "b"]}}
    )
    assert response.status_code == 200
    assert [sorted(item) for item in response.json()] == [["label", "score"]] * 2


def test_http_image_and_texts_without_mode_give_similarity(shared_server):
    image = b64(encode_png(patterned_image(4)))
    response = shared_server.client.post("/", json={"inputs": {"image": image, "texts": ["a", "b"]}})
    assert response.status_code == 200
    assert response.json()["text_count"] == 2


def test_http_images_only_object_gives_image_embeddings(shared_server):
    images = [b64(encode_png(patterned_image(seed))) for seed in (5, 6)]
    response = shared_server.client.post("/", json={"inputs": {"images": images}})
    assert response.status_code == 200
    assert len(response.json()) == 2 and all(list(item) == ["embedding"] for item in response.json())


def test_http_explicit_mode_overrides_detection(shared_server):
    image = b64(encode_png(patterned_image(7)))
    response = shared_server.client.post(
        "/", json={"inputs": image, "parameters": {"mode": "image_embedding", "candidate_labels": ["a", "b"]}}
    )
    assert response.status_code == 200
    assert list(response.json()[0]) == ["embedding"]
