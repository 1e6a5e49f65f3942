"""handler.EndpointHandler (Hugging Face custom handler) answers exactly as the HTTP server does."""

from __future__ import annotations

import math

import pytest

from search.errors import VitrineError
from tests.support.images import b64, encode_png, patterned_image


@pytest.fixture(scope="module")
def handler(tiny_model_dir, tmp_path_factory):
    from handler import EndpointHandler

    # The handler reads its settings from the environment, as on a Hugging Face endpoint.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VITRINE_URL_ALLOW_HOSTS", "127.0.0.1")
        env.setenv("VITRINE_DEVICE", "cpu")
        env.setenv("VITRINE_DTYPE", "float32")
        env.setenv("VITRINE_DATA_DIR", str(tmp_path_factory.mktemp("handler-data")))
        instance = EndpointHandler(str(tiny_model_dir))
    yield instance
    instance.components.close()


@pytest.fixture(scope="module")
def images(image_server):
    """Three reference images, as URLs on the local image server and as base64."""
    data = [encode_png(patterned_image(seed)) for seed in (21, 22, 23)]
    urls = [image_server.add(f"/handler/tile-00{i}.png", item) for i, item in enumerate(data, 1)]
    return {"url": urls, "base64": [b64(item) for item in data]}


def reference_payloads(images: list[str]) -> list[dict]:
    one, two, three = images
    return [
        {"inputs": one, "parameters": {"candidate_labels": ["label1", "label2", "label3"]}},
        {"inputs": [one, two], "parameters": {"candidate_labels": ["label1", "label2", "label3"]}},
        {"inputs": one, "parameters": {"mode": "image_embedding"}},
        {"inputs": [one, two, three], "parameters": {"mode": "image_embedding"}},
        {"inputs": "a photo of ceramic floor tiles", "parameters": {"mode": "text_embedding"}},
        {
            "inputs": ["ceramic tile with matte finish", "glossy porcelain tile", "natural wood flooring"],
            "parameters": {"mode": "text_embedding"},
        },
        {
            "inputs": {"image": one, "texts": ["description 1", "description 2", "description 3"]},
            "parameters": {"mode": "similarity"},
        },
        {
            "inputs": {"images": [one, two], "texts": ["ceramic tile", "wood flooring", "heat pump"]},
            "parameters": {"mode": "similarity"},
        },
        {
            "inputs": one,
            "parameters": {"candidate_labels": ["ceramic floor tile", "company logo"], "multi_label": True},
        },
    ]


def assert_same_json(got: object, expected: object, path: str = "$") -> None:
    """Same structure, keys, types and strings; numbers within 1e-6."""
    if isinstance(expected, float):
        assert isinstance(got, float), path
        assert math.isclose(got, expected, abs_tol=1e-6), f"{path}: {got} != {expected}"
    elif isinstance(expected, dict):
        assert isinstance(got, dict) and list(got) == list(expected), path
        for key in expected:
            assert_same_json(got[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), path
        for i, (a, b) in enumerate(zip(got, expected, strict=True)):
            assert_same_json(a, b, f"{path}[{i}]")
    else:
        assert type(got) is type(expected) and got == expected, f"{path}: {got!r} != {expected!r}"


@pytest.mark.parametrize("source", ["url", "base64"])
@pytest.mark.parametrize("index", range(9))
def test_handler_answers_reference_payloads_like_the_server(handler, shared_server, images, source, index):
    payload = reference_payloads(images[source])[index]
    response = shared_server.client.post("/", json=payload)
    assert response.status_code == 200, response.text
    assert_same_json(handler(payload), response.json())


ERROR_PAYLOADS = [
    {"inputs": b64(encode_png(patterned_image(1))), "parameters": {"mode": "zero_shot"}},
    {"inputs": None},
    {"inputs": "x", "parameters": {"mode": "invalid_mode"}},
    {"inputs": ["%%%", "%%%"], "parameters": {"mode": "image_embedding"}},
    {"inputs": [], "parameters": {"mode": "text_embedding"}},
    {"inputs": "a", "parameters": "zero_shot"},
]


@pytest.mark.parametrize("payload", ERROR_PAYLOADS)
def test_handler_raises_the_servers_error_message(handler, shared_server, payload):
    response = shared_server.client.post("/", json=payload)
    assert response.status_code == 400
    with pytest.raises(VitrineError) as raised:
        handler(payload)
    assert str(raised.value) == response.json()["error"]


def test_handler_raises_the_three_documented_messages(handler):
    image = b64(encode_png(patterned_image(1)))
    expected = [
        (
            {"inputs": image, "parameters": {"mode": "zero_shot"}},
            "candidate_labels is required for zero-shot classification",
        ),
        ({"inputs": None}, "Unsupported image input type: <class 'NoneType'>"),
        (
            {"inputs": image, "parameters": {"mode": "invalid_mode"}},
            "Unknown mode: invalid_mode. Supported: zero_shot, image_embedding, text_embedding, similarity",
        ),
    ]
    for payload, message in expected:
        with pytest.raises(VitrineError) as raised:
            handler(payload)
        assert str(raised.value) == message


def test_handler_without_weights_in_its_path_loads_vitrine_model(tiny_model_dir, tmp_path, monkeypatch):
    from handler import EndpointHandler

    monkeypatch.setenv("VITRINE_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("VITRINE_DEVICE", "cpu")
    # The subject is which model loads; auto's conversion of it is tested in tests/unit/model.
    monkeypatch.setenv("VITRINE_RUNTIME", "torch")
    monkeypatch.setenv("VITRINE_DATA_DIR", str(tmp_path / "data"))
    instance = EndpointHandler(str(tmp_path))  # a repository folder with handler.py but no config.json
    try:
        result = instance({"inputs": ["ceramic tile"], "parameters": {"mode": "text_embedding"}})
        assert len(result[0]["embedding"]) == 32
    finally:
        instance.components.close()
