"""Clients that just work: the openai client on /v1/embeddings, InferenceClient on /embed, vitrine.Client."""

from __future__ import annotations

import base64

import huggingface_hub
import numpy as np
import openai
import pytest
from huggingface_hub import InferenceClient

from tests.support.images import encode_png, patterned_image
from vitrine import Client, VitrineAPIError

TEXTS = ["beige matte ceramic floor tile", "oak flooring"]


def reference_embeddings(server, inputs: list[str], mode: str) -> np.ndarray:
    response = server.client.post("/", json={"inputs": inputs, "parameters": {"mode": mode}})
    assert response.status_code == 200, response.text
    return np.array([row["embedding"] for row in response.json()], dtype=np.float32)


def openai_client(server, api_key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=api_key, max_retries=0, timeout=60)


def as_array(embedding: list[float] | str) -> np.ndarray:
    if isinstance(embedding, str):  # asked for base64 explicitly: little-endian float32 bytes
        return np.frombuffer(base64.b64decode(embedding), dtype="<f4")
    return np.array(embedding, dtype=np.float32)


# None: the client's default, which asks for base64 on the wire and decodes it itself.
@pytest.mark.parametrize("encoding_format", [None, "float", "base64"])
def test_openai_client_text_embeddings_equal_post_root(shared_server, encoding_format):
    extra = {"encoding_format": encoding_format} if encoding_format else {}
    answer = openai_client(shared_server).embeddings.create(
        model="google/siglip2-base-patch16-512", input=TEXTS, **extra
    )
    got = np.array([as_array(item.embedding) for item in answer.data])
    np.testing.assert_array_equal(got, reference_embeddings(shared_server, TEXTS, "text_embedding"))
    assert [item.index for item in answer.data] == [0, 1]
    assert answer.usage.prompt_tokens > 0


def test_openai_client_image_embeddings_from_data_uris_and_urls_equal_post_root(shared_server, image_server):
    png = encode_png(patterned_image(3))
    data_uri = "data:image/png;base64," + base64.b64encode(png).decode()
    url = image_server.add("/openai-client.png", png, headers={"Content-Type": "image/png"})
    answer = openai_client(shared_server).embeddings.create(
        model="siglip", input=[data_uri, url], extra_body={"modality": "image"}
    )
    got = np.array([item.embedding for item in answer.data], dtype=np.float32)
    np.testing.assert_array_equal(
        got, reference_embeddings(shared_server, [data_uri, url], "image_embedding")
    )
    np.testing.assert_array_equal(got[0], got[1])


def test_openai_client_errors_are_its_own_exceptions(start_shared_server):
    server = start_shared_server(api_tokens=["s3cret"])
    with pytest.raises(openai.AuthenticationError) as unauthenticated:
        openai_client(server, "wrong").embeddings.create(model="m", input="x")
    assert unauthenticated.value.body == {
        "message": "invalid token",
        "type": "authentication_error",
        "param": None,
        "code": None,
    }
    with pytest.raises(openai.BadRequestError) as refused:
        openai_client(server, "s3cret").embeddings.create(model="m", input="x", dimensions=8)
    # OpenAI's error shape on /v1/*, so the client shows the message itself, not only "Error code: 400".
    assert refused.value.body["type"] == "invalid_request_error"
    assert "cannot be shortened" in refused.value.body["message"]
    assert "cannot be shortened" in str(refused.value)
    assert len(openai_client(server, "s3cret").embeddings.create(model="m", input="x").data) == 1


def test_inference_client_feature_extraction_reads_the_embed_route(shared_server, monkeypatch):
    # The suite runs with HF_HUB_OFFLINE=1, which would stop the client before it reaches loopback.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    vectors = InferenceClient(model=f"{shared_server.base_url}/embed").feature_extraction(TEXTS[0])
    np.testing.assert_array_equal(vectors, reference_embeddings(shared_server, TEXTS[:1], "text_embedding"))


def test_python_client_searches_writes_and_deletes(catalog_copy, start_server, tmp_path):
    server = start_server(api_tokens=["t0ken"])
    photo = tmp_path / "oak.png"
    photo.write_bytes(encode_png(patterned_image(11)))
    with Client(server.base_url, token="t0ken") as vitrine:
        assert vitrine.ready()
        results = vitrine.search(text="tile", k=3)
        assert len(results.hits) == 3 and all(isinstance(hit.score, float) for hit in results.hits)
        status, product = vitrine.put_product("client-1", image=photo, title="Oak plank", color="oak")
        assert (status, product.title, product.attributes) == ("created", "Oak plank", {"color": "oak"})
        assert vitrine.search(image=photo, k=1).ids == ["client-1"]
        assert "client-1" not in vitrine.similar("client-1", k=5).ids
        assert vitrine.get_product("client-1").id == "client-1"
        assert vitrine.product_image("client-1") == photo.read_bytes()
        scores = vitrine.zero_shot(photo, ["oak", "tile"])
        assert set(scores) == {"oak", "tile"} and abs(sum(scores.values()) - 1) < 1e-6
        vitrine.delete_product("client-1")
        with pytest.raises(VitrineAPIError) as missing:
            vitrine.get_product("client-1")
        assert missing.value.status == 404
    with Client(server.base_url) as anonymous, pytest.raises(VitrineAPIError) as refused:
        anonymous.search(text="tile")
    assert refused.value.status == 401
