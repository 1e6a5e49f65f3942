"""Issue 6, class 7: /ready fails (503) whenever the service cannot serve: the catalog database is
unreachable, or every admission slot is taken. /health stays a plain liveness answer."""

from __future__ import annotations

import base64
import threading
import time

from tests.support.http import assert_error
from tests.support.images import image_bytes


def ready_until(server, status: int, seconds: float = 10.0):
    """/ready's answer once it is ``status`` (the database is checked every second in the background)."""
    deadline = time.monotonic() + seconds
    while True:
        answer = server.client.get("/ready")
        if answer.status_code == status or time.monotonic() > deadline:
            return answer
        time.sleep(0.1)


def test_ready_is_503_while_the_database_is_unreachable_and_recovers(start_server, tmp_path):
    server = start_server()
    assert server.client.get("/ready").status_code == 200
    catalog = server.app.state.vitrine.components.products.catalog
    data_dir, moved = tmp_path / "data", tmp_path / "moved"
    data_dir.rename(moved)
    catalog.engine.dispose()  # pooled connections would keep the moved file open
    try:
        message = assert_error(ready_until(server, 503), 503)
        assert message == "not ready: the catalog database cannot be read"  # the detail is in the log
        assert server.client.get("/health").status_code == 200
    finally:
        moved.rename(data_dir)
    assert ready_until(server, 200).status_code == 200


def test_ready_is_503_when_the_database_check_hangs(start_server):
    """A check that never returns (a hung database) turns /ready to 503 once no check has succeeded
    for the check interval plus its timeout; /ready itself keeps answering at once."""
    server = start_server()
    probe = server.app.state.vitrine.database_probe
    probe.timeout, probe.stale_after = 0.5, 1.5
    hang = threading.Event()
    original = probe.catalog.revision
    probe.catalog.revision = lambda: hang.wait(30) and original()
    try:
        # Polled for at most 8 s: the answer must turn within stale_after + timeout, far inside that.
        answer = ready_until(server, 503, seconds=8)
        assert "did not answer in time" in assert_error(answer, 503)
    finally:
        hang.set()
        probe.catalog.revision = original
    assert ready_until(server, 200).status_code == 200


def test_ready_is_503_while_every_admission_slot_is_taken(start_server, image_server):
    server = start_server(max_pending_requests=1)
    slow_url = image_server.add("/ready/slow.png", image_bytes(), delay=1.5)
    body = {"inputs": slow_url, "parameters": {"mode": "image_embedding"}}
    thread = threading.Thread(target=server.client.post, args=("/",), kwargs={"json": body})
    thread.start()
    for _ in range(300):
        if image_server.hits.get("/ready/slow.png"):
            break
        time.sleep(0.01)
    busy = server.client.get("/ready")
    thread.join()
    assert "VITRINE_MAX_PENDING_REQUESTS" in assert_error(busy, 503)
    assert server.client.get("/ready").status_code == 200


def test_ready_answers_at_once_while_the_index_is_being_updated(start_server):
    """/ready answers from the background database check and never waits for index work: with the
    index's update lock held (a long catch-up after another process wrote to the catalog), a probe that
    refreshed the index itself would hang until its deadline and answer 503."""
    server = start_server()
    products = server.app.state.vitrine.components.products
    before = server.client.get("/ready").json()
    with products.catalog.engine.begin() as connection:  # a write by another process (the indexer)
        connection.exec_driver_sql("UPDATE catalog_state SET revision = revision + 1 WHERE id = 1")
    with products.sync._lock:
        deadline = time.monotonic() + 10
        while True:
            answer = server.client.get("/ready", timeout=10)
            assert answer.status_code == 200
            body = answer.json()
            if (
                body["catalog"]["revision"] == before["catalog"]["revision"] + 1
                or time.monotonic() > deadline
            ):
                break
            time.sleep(0.1)
    assert body["catalog"]["revision"] == before["catalog"]["revision"] + 1
    assert body["index"]["revision"] == before["index"]["revision"]  # caught up by the next search


def test_ready_answers_while_every_request_thread_is_busy(start_server):
    """Searches stuck inside the request thread pool (waiting for an index catch-up) take every worker
    thread; /ready must not need one. (Its state dependency once ran in that pool: the probe then waited
    behind the very work it judges.)"""
    server = start_server()
    state = server.app.state.vitrine
    assert (
        server.client.put(
            "/products/p1", json={"image": base64.b64encode(image_bytes()).decode()}
        ).status_code
        == 201
    )
    products = state.components.products
    with products.catalog.engine.begin() as connection:  # another process wrote: searches catch up first
        connection.exec_driver_sql("UPDATE catalog_state SET revision = revision + 1 WHERE id = 1")
    stuck = 48  # more than the thread pool's 40 workers, and more than the database pool's 15 connections
    statuses: list[int] = []

    def search() -> None:
        statuses.append(server.client.post("/search", json={"product_id": "p1"}, timeout=20).status_code)

    with products.sync._lock:
        threads = [threading.Thread(target=search) for _ in range(stuck)]
        for thread in threads:
            thread.start()
        for _ in range(500):
            if state.in_flight >= stuck:
                break
            time.sleep(0.01)
        assert state.in_flight >= stuck
        answer = server.client.get("/ready", timeout=15)
        assert answer.status_code == 200
        assert state.in_flight >= stuck  # answered while every search was still stuck
    started = time.monotonic()
    for thread in threads:
        thread.join()
    # Waiting for the index lock holds no pooled connection: the catch-up gets one, and every search
    # answers (it once held one each, starved the catch-up for the pool's 30 s timeout, and answered 500).
    assert statuses == [200] * stuck
    assert time.monotonic() - started < 15
