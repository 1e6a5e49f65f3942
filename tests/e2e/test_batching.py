"""The scheduler behind a real server and the real tiny model: concurrent requests of all four modes and
search are answered exactly as alone; a full queue answers 429; a client that hangs up costs nothing."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from search.model.encoder import BatchSettings, Encoder
from tests.support.catalogs import IndexedCatalog
from tests.support.http import assert_error
from tests.support.images import b64, encode_png, patterned_image
from tests.support.servers import LiveServer
from tests.support.settings import settings_for


def image(seed: int) -> str:
    return b64(encode_png(patterned_image(seed, size=(40 + seed, 36))))


REQUESTS = [
    ("/", {"inputs": image(1), "parameters": {"candidate_labels": ["red tile", "oak plank", "stone"]}}),
    ("/", {"inputs": [image(2), image(3)], "parameters": {"mode": "image_embedding"}}),
    ("/", {"inputs": ["matte ceramic tile", "oak floor", "x"], "parameters": {"mode": "text_embedding"}}),
    ("/", {"inputs": {"image": image(4), "texts": ["beige tile", "grey stone"]}}),
    ("/search", {"text": "glossy porcelain tile", "k": 5}),
    ("/search", {"image": image(5), "k": 5}),
]


@pytest.fixture(scope="module")
def data_dir(indexed_catalog: IndexedCatalog, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("batching") / "data"
    shutil.copytree(indexed_catalog.data_dir, target)
    return target


def serve(encoder: Encoder, model_dir: Path, data_dir: Path) -> LiveServer:
    from api.app import create_app

    return LiveServer(create_app(settings_for(model_dir, data_dir), encoder=encoder)).start()


@pytest.fixture
def servers(encoder: Encoder, tiny_model_dir: Path, data_dir: Path) -> Iterator[tuple[LiveServer, Encoder]]:
    """A server that answers each request alone, and one whose scheduler waits long for batch-mates."""
    alone = serve(encoder.with_batching(BatchSettings(max_wait_ms=0)), tiny_model_dir, data_dir)
    batched_encoder = encoder.with_batching(BatchSettings(image_batch=16, text_batch=64, max_wait_ms=1000))
    batched = serve(batched_encoder, tiny_model_dir, data_dir)
    yield alone, batched, batched_encoder
    alone.stop()
    batched.stop()


def vectors_of(path: str, body: dict, answer: object) -> np.ndarray:
    """Every number of an answer, in order, for a tolerance comparison."""
    if path == "/search":
        return np.array([hit["score"] for hit in answer["results"]])
    if isinstance(answer, dict):
        return np.array(answer["similarity_scores"]).ravel()
    if "candidate_labels" in body.get("parameters", {}):
        return np.array([item["score"] for item in answer])
    return np.array([item["embedding"] for item in answer])


def test_concurrent_requests_of_every_mode_and_search_get_exactly_what_they_get_alone(servers):
    alone, batched, batched_encoder = servers
    expected = []
    for path, body in REQUESTS:
        response = alone.client.post(path, json=body)
        assert response.status_code == 200, response.text
        expected.append(response.json())
    with ThreadPoolExecutor(len(REQUESTS)) as pool:
        futures = [pool.submit(batched.client.post, path, json=body) for path, body in REQUESTS]
        answers = [future.result() for future in futures]
    for (path, body), want, response in zip(REQUESTS, expected, answers, strict=True):
        assert response.status_code == 200, response.text
        got = response.json()
        if path == "/search":
            assert [hit["id"] for hit in got["results"]] == [hit["id"] for hit in want["results"]]
        elif "candidate_labels" in body["parameters"] if "parameters" in body else False:
            assert [item["label"] for item in got] == [item["label"] for item in want]
        a, b = vectors_of(path, body, got), vectors_of(path, body, want)
        if a.ndim == 2:  # embeddings: cosine per row
            assert (np.sum(a * b, axis=1) >= 0.99999).all()
        else:
            np.testing.assert_allclose(a, b, atol=1e-5)
    # Shared passes: 5 images and 11 texts from 6 concurrent requests took fewer passes than requests.
    image_stats, text_stats = batched_encoder.images_queue.stats, batched_encoder.texts_queue.stats
    assert image_stats.rows == 5 and image_stats.batches < 4
    assert text_stats.batches < 4


class GatedRuntime:
    """The real tiny model, but each image pass first waits for the test to open a gate: so a test can
    keep the model busy for exactly as long as it needs (the model itself is untouched)."""

    def __init__(self, runtime: object) -> None:
        self.runtime = runtime
        self.choice = runtime.choice
        self.logit_scale, self.logit_bias = runtime.logit_scale, runtime.logit_bias
        self.gate = threading.Event()
        self.entered = threading.Event()

    def image_features(self, pixels: np.ndarray) -> np.ndarray:
        self.entered.set()
        assert self.gate.wait(30)
        return self.runtime.image_features(pixels)

    def text_features(self, input_ids: np.ndarray) -> np.ndarray:
        return self.runtime.text_features(input_ids)


def gated_encoder(encoder: Encoder, batching: BatchSettings) -> tuple[Encoder, GatedRuntime]:
    runtime = GatedRuntime(encoder.backend)
    return Encoder(runtime, encoder.processor, encoder.config, model_id="tiny", batching=batching), runtime


def in_thread(function, *args) -> threading.Thread:
    thread = threading.Thread(target=function, args=args)
    thread.start()
    return thread


def wait_until(condition, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def pixels(count: int) -> np.ndarray:
    return np.random.default_rng(count).uniform(-1, 1, (count, 3, 32, 32)).astype(np.float32)


def test_a_full_image_queue_answers_429_with_the_error_shape_and_texts_still_flow(
    encoder: Encoder, tiny_model_dir: Path, tmp_path: Path
):
    busy, runtime = gated_encoder(encoder, BatchSettings(image_batch=2, image_queue_max=8))
    server = serve(busy, tiny_model_dir, tmp_path / "data")
    try:
        held = in_thread(busy.embed_pixels, pixels(1))  # the model is busy with this one
        assert runtime.entered.wait(10)
        waiting = in_thread(busy.embed_pixels, pixels(8))  # a bulk job fills the queue
        wait_until(lambda: busy.images_queue.queued_rows == 8)
        response = server.client.post(
            "/", json={"inputs": image(1), "parameters": {"mode": "image_embedding"}}
        )
        message = assert_error(response, 429)
        assert "VITRINE_IMAGE_QUEUE_MAX=8" in message
        assert response.headers.get("retry-after") == "1"
        texts = server.client.post(
            "/", json={"inputs": ["still served"], "parameters": {"mode": "text_embedding"}}
        )
        assert texts.status_code == 200
        runtime.gate.set()
        held.join(30), waiting.join(30)
        after = server.client.post("/", json={"inputs": image(1), "parameters": {"mode": "image_embedding"}})
        assert after.status_code == 200
    finally:
        runtime.gate.set()
        server.stop()


def test_a_client_that_hangs_up_has_its_queued_images_dropped_and_blocks_no_one(
    encoder: Encoder, tiny_model_dir: Path, tmp_path: Path
):
    busy, runtime = gated_encoder(encoder, BatchSettings(image_batch=2))
    server = serve(busy, tiny_model_dir, tmp_path / "data")
    try:
        held = in_thread(busy.embed_pixels, pixels(1))
        assert runtime.entered.wait(10)
        body = {"inputs": [image(i) for i in range(4)], "parameters": {"mode": "image_embedding"}}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(server.base_url + "/", json=body, timeout=httpx.Timeout(10, read=0.5))
        # The server saw the disconnect and dropped the 4 queued images while the model was still busy.
        wait_until(lambda: busy.images_queue.stats.dropped_rows == 4)
        assert busy.images_queue.queued_rows == 0
        runtime.gate.set()
        held.join(30)
        after = server.client.post("/", json={"inputs": image(7), "parameters": {"mode": "image_embedding"}})
        assert after.status_code == 200
        assert busy.images_queue.stats.rows == 2  # the held image and this one: nothing of the gone client
    finally:
        runtime.gate.set()
        server.stop()
