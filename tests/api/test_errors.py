"""Errors: the reference's three messages verbatim, and every other failure as {"error": str}, never 500/422."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.support.http import assert_error
from tests.support.images import b64, encode_png, image_bytes, patterned_image

GOOD = b64(encode_png(patterned_image(1)))


def post(server, payload):
    return server.client.post("/", json=payload)


# The reference's three messages, verbatim ------------------------------------------------------------------


@pytest.mark.parametrize("labels", ["absent", None, []])
def test_zero_shot_without_labels_says_candidate_labels_is_required(shared_server, labels):
    parameters = {"mode": "zero_shot"}
    if labels != "absent":
        parameters["candidate_labels"] = labels
    message = assert_error(post(shared_server, {"inputs": GOOD, "parameters": parameters}), 400)
    assert message == "candidate_labels is required for zero-shot classification"


@pytest.mark.parametrize("parameters", [{}, {"mode": "image_embedding"}])
def test_null_image_input_says_unsupported_image_input_type_nonetype(shared_server, parameters):
    message = assert_error(post(shared_server, {"inputs": None, "parameters": parameters}), 400)
    assert message == "Unsupported image input type: <class 'NoneType'>"


@pytest.mark.parametrize(("value", "type_name"), [(5, "int"), (1.5, "float"), (True, "bool"), ({}, "dict")])
def test_unsupported_image_input_names_the_python_type(shared_server, value, type_name):
    message = assert_error(
        post(shared_server, {"inputs": value, "parameters": {"mode": "image_embedding"}}), 400
    )
    assert message == f"Unsupported image input type: <class '{type_name}'>"


def test_unknown_mode_lists_the_supported_modes(shared_server):
    message = assert_error(post(shared_server, {"inputs": GOOD, "parameters": {"mode": "invalid_mode"}}), 400)
    assert (
        message
        == "Unknown mode: invalid_mode. Supported: zero_shot, image_embedding, text_embedding, similarity"
    )


# Malformed requests ------------------------------------------------------------------------------------------


def test_malformed_json_is_400(shared_server):
    response = shared_server.client.post(
        "/", content=b'{"inputs": ', headers={"content-type": "application/json"}
    )
    assert "not valid JSON" in assert_error(response, 400)


def test_empty_body_is_400(shared_server):
    assert_error(shared_server.client.post("/", content=b""), 400)


def test_body_that_is_not_utf8_is_400(shared_server):
    assert_error(shared_server.client.post("/", content=b'{"inputs": "\xff\xfe"}'), 400)


def test_deeply_nested_json_is_400(shared_server):
    assert_error(shared_server.client.post("/", content=b"[" * 100_000 + b"]" * 100_000), 400)


@pytest.mark.parametrize("body", [b"[]", b'["a"]', b'"text"', b"5", b"null", b"true"])
def test_body_that_is_not_an_object_is_400(shared_server, body):
    assert "JSON object" in assert_error(shared_server.client.post("/", content=body), 400)


def test_missing_inputs_is_400(shared_server):
    assert "inputs" in assert_error(post(shared_server, {"parameters": {"mode": "text_embedding"}}), 400)


def test_inputs_number_for_text_embedding_is_400(shared_server):
    assert_error(post(shared_server, {"inputs": 42, "parameters": {"mode": "text_embedding"}}), 400)


@pytest.mark.parametrize("labels", ["ceramic tile", 5, {"a": 1}, [1, 2], ["a", None]])
def test_candidate_labels_not_a_list_of_strings_is_400(shared_server, labels):
    message = assert_error(
        post(shared_server, {"inputs": GOOD, "parameters": {"candidate_labels": labels}}), 400
    )
    assert "candidate_labels" in message


@pytest.mark.parametrize("parameters", ["zero_shot", [], 5])
def test_parameters_not_an_object_is_400(shared_server, parameters):
    message = assert_error(post(shared_server, {"inputs": ["a"], "parameters": parameters}), 400)
    assert "parameters" in message


@pytest.mark.parametrize("mode", ["image_embedding", "text_embedding", "zero_shot"])
def test_empty_inputs_list_is_400(shared_server, mode):
    parameters = {"mode": mode, "candidate_labels": ["a"]}
    assert "empty" in assert_error(post(shared_server, {"inputs": [], "parameters": parameters}), 400)


@pytest.mark.parametrize("inputs", [{"images": [], "texts": ["a"]}, {"image": GOOD, "texts": []}])
def test_empty_similarity_lists_are_400(shared_server, inputs):
    assert "empty" in assert_error(
        post(shared_server, {"inputs": inputs, "parameters": {"mode": "similarity"}}), 400
    )


def test_non_string_text_is_named_by_index(shared_server):
    message = assert_error(
        post(shared_server, {"inputs": ["a", 7], "parameters": {"mode": "text_embedding"}}), 400
    )
    assert "inputs[1]" in message


@pytest.mark.parametrize(
    "parameters",
    [
        {"top_k": 0},
        {"top_k": "2"},
        {"multi_label": "yes"},
        {"hypothesis_template": 5},
        {"hypothesis_template": "x"},
    ],
)
def test_bad_zero_shot_options_are_400(shared_server, parameters):
    payload = {"inputs": GOOD, "parameters": {"candidate_labels": ["a", "b"], **parameters}}
    assert_error(post(shared_server, payload), 400)


def test_similarity_without_texts_is_400(shared_server):
    assert_error(post(shared_server, {"inputs": {"image": GOOD}, "parameters": {"mode": "similarity"}}), 400)


def test_similarity_with_inputs_not_an_object_is_400(shared_server):
    assert_error(post(shared_server, {"inputs": GOOD, "parameters": {"mode": "similarity"}}), 400)


def test_similarity_with_both_image_and_images_is_400(shared_server):
    inputs = {"image": GOOD, "images": [GOOD], "texts": ["a"]}
    assert_error(post(shared_server, {"inputs": inputs, "parameters": {"mode": "similarity"}}), 400)


# Bad image data ----------------------------------------------------------------------------------------------


def test_bad_base64_is_400(shared_server):
    message = assert_error(
        post(shared_server, {"inputs": "not base64 !!", "parameters": {"mode": "image_embedding"}}), 400
    )
    assert "base64" in message


def test_empty_image_string_is_400(shared_server):
    assert_error(post(shared_server, {"inputs": "  ", "parameters": {"mode": "image_embedding"}}), 400)


def test_text_file_as_image_is_400(shared_server):
    text = b64(b"name,price\nceramic tile,12.50\n" * 20)
    message = assert_error(
        post(shared_server, {"inputs": text, "parameters": {"mode": "image_embedding"}}), 400
    )
    assert "not a supported image" in message


def test_tiff_image_is_400(shared_server):
    tiff = b64(image_bytes(fmt="TIFF"))
    message = assert_error(
        post(shared_server, {"inputs": tiff, "parameters": {"mode": "image_embedding"}}), 400
    )
    assert "not a supported image" in message


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image_is_400(shared_server, fmt):
    data = encode_png(patterned_image(3, size=(128, 128)), fmt)
    truncated = b64(data[: len(data) // 2])
    message = assert_error(
        post(shared_server, {"inputs": truncated, "parameters": {"mode": "image_embedding"}}), 400
    )
    assert "truncated" in message


def test_image_over_max_image_bytes_is_413(start_shared_server):
    server = start_shared_server(max_image_bytes=2000)
    big = b64(encode_png(patterned_image(4, size=(200, 200)), "BMP"))
    message = assert_error(post(server, {"inputs": big, "parameters": {"mode": "image_embedding"}}), 413)
    assert "VITRINE_MAX_IMAGE_BYTES" in message


def test_image_over_max_image_pixels_is_400_naming_the_input(start_shared_server):
    server = start_shared_server(max_image_pixels=10_000)
    buffer = io.BytesIO()
    Image.new("L", (200, 200)).save(buffer, "PNG")  # a few hundred bytes, 40,000 pixels
    payload = {"inputs": [GOOD, b64(buffer.getvalue())], "parameters": {"mode": "image_embedding"}}
    message = assert_error(post(server, payload), 400)
    assert message.startswith("inputs[1]:")
    assert "VITRINE_MAX_IMAGE_PIXELS" in message


def test_failing_input_in_a_batch_is_named_by_its_index(shared_server):
    payload = {"inputs": [GOOD, GOOD, b64(b"plain text"), GOOD], "parameters": {"mode": "image_embedding"}}
    assert assert_error(post(shared_server, payload), 400).startswith("inputs[2]:")


def test_failing_similarity_image_is_named_by_its_index(shared_server):
    inputs = {"images": [GOOD, "%%%"], "texts": ["a"]}
    message = assert_error(post(shared_server, {"inputs": inputs, "parameters": {"mode": "similarity"}}), 400)
    assert message.startswith("inputs.images[1]:")


def test_null_inside_a_batch_keeps_the_reference_wording_and_names_the_index(shared_server):
    message = assert_error(
        post(shared_server, {"inputs": [GOOD, None], "parameters": {"mode": "image_embedding"}}), 400
    )
    assert message == "Unsupported image input type: <class 'NoneType'> (inputs[1])"


# Limits --------------------------------------------------------------------------------------------------------


def test_too_many_images_is_413(start_shared_server):
    server = start_shared_server(max_images_per_request=2)
    message = assert_error(
        post(server, {"inputs": [GOOD] * 3, "parameters": {"mode": "image_embedding"}}), 413
    )
    assert "VITRINE_MAX_IMAGES_PER_REQUEST" in message


def test_too_many_texts_is_413(start_shared_server):
    server = start_shared_server(max_texts_per_request=2)
    message = assert_error(
        post(server, {"inputs": ["a", "b", "c"], "parameters": {"mode": "text_embedding"}}), 413
    )
    assert "VITRINE_MAX_TEXTS_PER_REQUEST" in message


def test_too_many_candidate_labels_is_413(start_shared_server):
    server = start_shared_server(max_texts_per_request=2)
    assert_error(post(server, {"inputs": GOOD, "parameters": {"candidate_labels": ["a", "b", "c"]}}), 413)


def test_body_over_max_request_bytes_is_413(start_shared_server):
    server = start_shared_server(max_request_bytes=2048)
    message = assert_error(
        post(server, {"inputs": ["x" * 3000], "parameters": {"mode": "text_embedding"}}), 413
    )
    assert "VITRINE_MAX_REQUEST_BYTES" in message


def test_chunked_body_over_max_request_bytes_is_413(start_shared_server):
    server = start_shared_server(max_request_bytes=2048)

    def chunks():
        yield b'{"inputs": ["'
        for _ in range(10):
            yield b"x" * 500
        yield b'"]}'

    # A generator body goes out chunked, without a Content-Length to check up front.
    response = server.client.post("/", content=chunks())
    assert "VITRINE_MAX_REQUEST_BYTES" in assert_error(response, 413)


# Not the inference route ----------------------------------------------------------------------------------------


def test_unknown_route_is_404_in_the_error_shape(shared_server):
    assert_error(shared_server.client.get("/no-such-route"), 404)


def test_wrong_method_is_405_in_the_error_shape(shared_server):
    assert_error(shared_server.client.delete("/"), 405)
    assert_error(shared_server.client.put("/", json={"inputs": "a"}), 405)


# Never a 500 or a 422 ---------------------------------------------------------------------------------------------

STRANGE_PAYLOADS = [
    {"inputs": [[GOOD]], "parameters": {"mode": "image_embedding"}},
    {"inputs": [{"image": GOOD}], "parameters": {"mode": "image_embedding"}},
    {"inputs": {"image": 5, "texts": ["a"]}},
    {"inputs": {"image": GOOD, "texts": [5]}},
    {"inputs": {"image": GOOD, "texts": "a"}, "parameters": {"mode": "text_embedding"}},
    {"inputs": {"images": None, "text": None}},
    {"inputs": GOOD, "parameters": {"mode": 5}},
    {"inputs": GOOD, "parameters": {"mode": None, "candidate_labels": "a,b"}},
    {"inputs": GOOD, "parameters": {"candidate_labels": [""] * 3, "top_k": 10**30}},
    {"inputs": GOOD, "parameters": {"candidate_labels": ["a"], "hypothesis_template": "{} {} {0}"}},
    {"inputs": "data:image/png;base64,", "parameters": {"mode": "image_embedding"}},
    {"inputs": "data:image/png,rawbytes", "parameters": {"mode": "image_embedding"}},
    {"inputs": "data:", "parameters": {"mode": "image_embedding"}},
    {"inputs": "héllo wörld ✓", "parameters": {"mode": "image_embedding"}},
    {"inputs": "a-b_c", "parameters": {"mode": "image_embedding"}},
    {"inputs": "http://", "parameters": {"mode": "image_embedding"}},
    {"inputs": "http://[::1", "parameters": {"mode": "image_embedding"}},
    {"inputs": "https://exa mple.invalid/a.png", "parameters": {"mode": "image_embedding"}},
    {"inputs": "http://example.invalid:99999/a.png", "parameters": {"mode": "image_embedding"}},
    {"inputs": "http://a..invalid/a.png", "parameters": {"mode": "image_embedding"}},
    {"inputs": "http://bücher.invalid/größe.png", "parameters": {"mode": "image_embedding"}},
    {"inputs": ["", ""], "parameters": {"mode": "text_embedding"}},
    {"inputs": "\u0000", "parameters": {"mode": "text_embedding"}},
]


@pytest.mark.parametrize("payload", STRANGE_PAYLOADS)
def test_strange_payloads_get_a_client_error_not_500_or_422(shared_server, payload):
    response = post(shared_server, payload)
    assert response.status_code not in (422, 500)
    if response.status_code != 200:
        assert_error(response, response.status_code)
        assert 400 <= response.status_code < 500
