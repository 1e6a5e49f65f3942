"""Start-up: `python -m api` fails fast and clearly without a model; probes and /info tell what is served."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from devtools.api_process import clean_env, free_port, start_api
from tests.support.http import assert_error
from tests.support.servers import LiveServer


def api_process(model: str, port: int, tmp_path: Path, **extra_env: str) -> subprocess.Popen:
    env = clean_env()
    env.update(HF_HUB_OFFLINE="1", VITRINE_MODEL=model, VITRINE_DATA_DIR=str(tmp_path / "data"), **extra_env)
    return start_api(env, port)


@pytest.fixture(scope="module")
def failed_starts(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[int | None, str, str]]:
    """Two start-ups that must fail, run at the same time (each is mostly importing torch): "missing"
    names a model folder that does not exist, "invalid" sets VITRINE_DEVICE=tpu. Exit code, stdout, stderr."""
    root = tmp_path_factory.mktemp("failed-starts")
    started = {
        "missing": api_process(str(root / "no-such-model"), free_port(), root / "missing"),
        "invalid": api_process(str(tiny_model_dir), free_port(), root / "invalid", VITRINE_DEVICE="tpu"),
    }
    finished = {}
    try:
        for name, process in started.items():
            stdout, stderr = process.communicate(timeout=60)
            finished[name] = (process.returncode, stdout, stderr)
    finally:
        for process in started.values():
            process.kill()
    return finished


def test_missing_model_folder_exits_nonzero_with_one_clear_message(failed_starts):
    returncode, stdout, stderr = failed_starts["missing"]
    output = stdout + stderr
    assert returncode != 0
    assert "Traceback" not in output
    assert output.count("vitrine could not start") == 1
    assert "VITRINE_MODEL" in stderr
    assert "no such folder" in stderr


def test_invalid_setting_exits_nonzero_naming_the_variable(failed_starts):
    returncode, stdout, stderr = failed_starts["invalid"]
    assert returncode != 0
    assert "Traceback" not in stdout + stderr
    assert "VITRINE_DEVICE='tpu'" in stderr


def test_python_m_api_serves_the_model_named_by_vitrine_model(tiny_model_dir, tmp_path):
    port = free_port()
    process = api_process(str(tiny_model_dir), port, tmp_path)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, process.communicate()[1]
                try:
                    if client.get("/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "server did not become ready"
                time.sleep(0.1)
            info = client.get("/info").json()
            response = client.post(
                "/", json={"inputs": ["ceramic tile"], "parameters": {"mode": "text_embedding"}}
            )
        assert info["model"] == str(tiny_model_dir)
        assert info["random_weights"] is True
        assert len(response.json()[0]["embedding"]) == 32
    finally:
        process.terminate()
        process.communicate(timeout=30)


@pytest.fixture
def loading_itself(make_settings):
    """A server that loads the tiny model itself in the background (no shared encoder)."""
    server = LiveServer(create_app(make_settings())).start()
    yield server
    server.stop()


def test_info_reports_the_model_device_dtype_and_dimension(loading_itself, tiny_model_dir):
    response = loading_itself.client.get("/info")
    assert response.status_code == 200
    info = response.json()
    assert info["model"] == str(tiny_model_dir)
    assert info["model_type"] == "siglip"
    assert info["embedding_dim"] == 32
    assert info["image_size"] == 32
    assert info["max_text_length"] == 64
    assert info["device"] == "cpu"
    assert info["dtype"] == "float32"


def test_info_reports_random_weights(loading_itself):
    assert loading_itself.client.get("/info").json()["random_weights"] is True


def test_ready_is_200_once_the_model_is_loaded(loading_itself):
    response = loading_itself.client.get("/ready")
    assert response.status_code == 200
    assert response.json()["status"] == "ready"


def test_health_is_200(loading_itself):
    response = loading_itself.client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.fixture
def failed_to_load(make_settings, tmp_path):
    """A server whose model cannot load, once it has given up."""
    server = LiveServer(create_app(make_settings(model=str(tmp_path / "missing")))).start(wait_ready=False)
    deadline = time.monotonic() + 30
    while "VITRINE_MODEL" not in server.client.get("/ready").text:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    yield server
    server.stop()


def test_ready_is_503_with_the_load_error_when_the_model_cannot_load(failed_to_load):
    message = assert_error(failed_to_load.client.get("/ready"), 503)
    assert "no such folder" in message


def test_health_stays_200_when_the_model_cannot_load(failed_to_load):
    assert failed_to_load.client.get("/health").status_code == 200


def test_inference_is_503_when_the_model_cannot_load(failed_to_load):
    response = failed_to_load.client.post(
        "/", json={"inputs": ["a"], "parameters": {"mode": "text_embedding"}}
    )
    assert "VITRINE_MODEL" in assert_error(response, 503)
    assert_error(failed_to_load.client.get("/info"), 503)
