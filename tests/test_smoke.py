from tests.conftest import b64, image_bytes


def test_server_answers_zero_shot_over_http(server, image_server):
    url = image_server.add("/smoke.png", image_bytes())
    response = server.client.post("/", json={"inputs": url, "parameters": {"candidate_labels": ["a", "b"]}})
    assert response.status_code == 200
    body = response.json()
    assert [item["label"] for item in body] != []
    assert abs(sum(item["score"] for item in body) - 1) < 1e-6


def test_base64_image_embedding(server):
    response = server.client.post(
        "/", json={"inputs": b64(image_bytes()), "parameters": {"mode": "image_embedding"}}
    )
    assert response.status_code == 200
    assert len(response.json()[0]["embedding"]) == 32
