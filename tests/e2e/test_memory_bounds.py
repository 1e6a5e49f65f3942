"""Issue 6, classes 2 and 3: tiny requests cannot make the server's memory balloon.

A real `python -m api` process on the tiny model; each hostile request is followed by a look at the
server's peak resident memory (VmHWM, reset through /proc/PID/clear_refs before each request).
The bounds are generous (hundreds of MB) against the gigabytes
the same requests cost before; no timing is measured.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devtools.api_process import clean_env, free_port, start_api
from devtools.hostile_images import plain_jpeg, png_declaring
from tests.support.images import b64

MiB = 1024 * 1024
GROWTH_BOUND = 700 * MiB


def memory_status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field}")


class ServerProcess:
    def __init__(self, model_dir: Path, data_dir: Path) -> None:
        self.port = free_port()
        env = clean_env()
        env.update(
            HF_HUB_OFFLINE="1",
            VITRINE_MODEL=str(model_dir),
            VITRINE_DATA_DIR=str(data_dir),
            VITRINE_DEVICE="cpu",
            VITRINE_DTYPE="float32",
            VITRINE_LOG_LEVEL="WARNING",
        )
        self.process = start_api(env, self.port, output=subprocess.DEVNULL)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=120)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if self.client.get("/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("server did not become ready")

    def start_measuring(self) -> int:
        """Reset the peak (so one test's peak is not hidden behind another's); the resident memory now."""
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")
        return memory_status(self.process.pid, "VmRSS")

    @property
    def peak(self) -> int:
        return memory_status(self.process.pid, "VmHWM")

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


@pytest.fixture(scope="module")
def api_process(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tiny_model_dir, tmp_path_factory.mktemp("memory"))
    # Warm up both towers so that what follows measures the requests, not first-use allocations.
    server.client.post("/", json={"inputs": b64(plain_jpeg(64)), "parameters": {"mode": "image_embedding"}})
    server.client.post("/", json={"inputs": ["warm"], "parameters": {"mode": "text_embedding"}})
    yield server
    server.stop()


def test_pngs_declaring_40_million_pixels_are_refused_before_decoding(api_process):
    before = api_process.start_measuring()
    body = {"inputs": [b64(png_declaring(1, 40_000_000))] * 8, "parameters": {"mode": "image_embedding"}}
    response = api_process.client.post("/", json=body)
    assert response.status_code == 413, response.text
    assert "VITRINE_MAX_DECODE_BYTES" in response.json()["error"]
    assert api_process.peak - before < GROWTH_BOUND


def test_large_jpegs_are_decoded_at_reduced_scale(api_process):
    before = api_process.start_measuring()
    image = b64(plain_jpeg(6000))
    response = api_process.client.post(
        "/", json={"inputs": [image] * 16, "parameters": {"mode": "image_embedding"}}
    )
    assert response.status_code == 200, response.text
    assert api_process.peak - before < GROWTH_BOUND


def test_a_megabytes_long_text_costs_no_more_than_the_tokens_read(api_process):
    before = api_process.start_measuring()
    body = {"inputs": "tile " * 1_600_000, "parameters": {"mode": "text_embedding"}}  # 8 MB
    assert api_process.client.post("/", json=body).status_code == 200
    assert api_process.peak - before < GROWTH_BOUND


def test_a_template_of_many_placeholders_is_not_expanded_past_the_cap(api_process):
    before = api_process.start_measuring()
    body = {
        "inputs": b64(plain_jpeg(64)),
        "parameters": {"candidate_labels": ["a" * 1000, "b" * 1000], "hypothesis_template": "{}" * 10_000},
    }
    assert api_process.client.post("/", json=body).status_code == 200
    assert api_process.peak - before < GROWTH_BOUND
