"""Bounded work in flight: past VITRINE_MAX_PENDING_REQUESTS the server answers 429 at once."""

from __future__ import annotations

import threading

from tests.support.images import image_bytes


def test_request_past_the_pending_limit_gets_429_and_the_first_still_succeeds(start_server, image_server):
    server = start_server(max_pending_requests=1)
    slow_url = image_server.add("/slow-overload.png", image_bytes(), delay=1.5)
    first: dict[str, object] = {}

    def send_slow() -> None:
        response = server.client.post(
            "/", json={"inputs": slow_url, "parameters": {"mode": "image_embedding"}}
        )
        first["status"] = response.status_code

    thread = threading.Thread(target=send_slow)
    thread.start()
    # Wait until the slow request is in flight (its image fetch has reached the image server).
    for _ in range(200):
        if image_server.hits.get("/slow-overload.png"):
            break
        threading.Event().wait(0.01)
    response = server.client.post("/", json={"inputs": ["a text"], "parameters": {"mode": "text_embedding"}})
    thread.join()

    assert response.status_code == 429
    assert set(response.json()) == {"error"}
    assert "VITRINE_MAX_PENDING_REQUESTS" in response.json()["error"]
    assert response.headers.get("retry-after") == "1"
    assert first["status"] == 200


def test_database_url_setting_overrides_the_data_folder(start_server, tmp_path):
    database = tmp_path / "elsewhere" / "catalog.db"
    server = start_server(database_url=f"sqlite:///{database}")
    assert server.client.get("/ready").json()["index"] == {"loaded": True, "size": 0, "revision": 0}
    assert database.is_file()
    assert not (tmp_path / "data" / "vitrine.db").exists()
