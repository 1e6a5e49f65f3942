"""A first start with no export: torch serves at once, the export is built in a child and switched to.

The export is the tiny model's OpenVINO int8 (what ``auto`` prefers on CPU), in a cache folder of the
test's own. Subprocess tests run ``python -m api`` as a user would: the signals and the children are
the subject.
"""

from __future__ import annotations

import base64
import logging
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from api.app import create_app
from devtools.api_process import clean_env, free_port, start_api
from search.model.weights import Checkpoint
from tests.support.images import encode_png, patterned_image
from tests.support.indexer import run_indexer_in_process
from tests.support.servers import LiveServer
from tests.support.settings import indexer_settings, settings_for

TEXTS = ["ceramic tile", "oak table", "a red chair", "striped wallpaper"]
SWITCH_TIMEOUT_S = 300  # two export steps of the tiny model on a busy 2-core machine


def first_start(model: Path, tmp_path: Path, **extra_env: str) -> tuple[subprocess.Popen[str], httpx.Client]:
    """``python -m api`` on a fresh data folder and a fresh export cache, runtime and dtype ``auto``."""
    env = clean_env()
    env.update(
        HF_HUB_OFFLINE="1",
        VITRINE_MODEL=str(model),
        VITRINE_DEVICE="cpu",
        VITRINE_DATA_DIR=str(tmp_path / "data"),
        VITRINE_CACHE_DIR=str(tmp_path / "cache"),
        **extra_env,
    )
    port = free_port()
    # The log goes to a file: a pipe nobody reads until the end fills up (an access line per request)
    # and then blocks the server's next log write.
    log = (tmp_path / "server.log").open("w")
    process = start_api(env, port, output=log)
    process.log_path = tmp_path / "server.log"
    return process, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)


def wait_ready(process: subprocess.Popen[str], client: httpx.Client, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, process.log_path.read_text()
        try:
            response = client.get("/ready")
            if response.status_code == 200:
                return response.json()
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "server did not become ready"
        time.sleep(0.05)


def export_children(process: subprocess.Popen[str]) -> list[psutil.Process]:
    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [child for child in children if "search.model.backends.export_job" in " ".join(child.cmdline())]


def export_running(process: subprocess.Popen[str]) -> bool:
    try:
        return bool(export_children(process))
    except psutil.Error:  # a child that ended while it was looked at
        return False


def embed(client: httpx.Client, inputs: list[str], mode: str) -> np.ndarray:
    response = client.post("/", json={"inputs": inputs, "parameters": {"mode": mode}})
    assert response.status_code == 200, response.text
    return np.array([row["embedding"] for row in response.json()], dtype=np.float64)


def image_inputs() -> list[str]:
    return [
        "data:image/png;base64," + base64.b64encode(encode_png(patterned_image(seed))).decode()
        for seed in (1, 2)
    ]


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def stop(process: subprocess.Popen[str]) -> str:
    """End the server (if the test has not) and return its log."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    return process.log_path.read_text()


def test_ready_before_the_export_then_switched_with_answers_within_0999(tiny_model_dir, tmp_path):
    process, client = first_start(tiny_model_dir, tmp_path)
    try:
        first = wait_ready(process, client)
        assert first["model"]["serving"].startswith("torch-")
        assert first["model"]["export"] == "building", first
        assert first["model"]["phase"].startswith(
            f"serving {first['model']['serving']}; building openvino-int8, "
        )
        info = client.get("/info").json()
        assert info["runtime"] == "torch" and "building openvino-int8" in info["phase"]
        assert "vitrine_export_building 1.0" in client.get("/metrics").text
        texts_before, images_before = (
            embed(client, TEXTS, "text_embedding"),
            embed(client, image_inputs(), "image_embedding"),
        )

        # Requests all through the switch: every one answered, every answer within 0.999 of torch's.
        # Back to back whenever no export child runs (the server loads the export and switches then);
        # while a child converts, one every 20 ms: a loop of back-to-back requests (hundreds a second)
        # took a core from the child (and from the other test worker) for the whole build.
        during: list[np.ndarray] = []
        switched = threading.Event()

        def keep_asking() -> None:
            with httpx.Client(base_url=client.base_url, timeout=120) as own:
                while not switched.is_set():
                    during.append(embed(own, TEXTS, "text_embedding"))
                    if export_running(process):
                        time.sleep(0.02)

        asker = threading.Thread(target=keep_asking)
        asker.start()
        try:
            deadline = time.monotonic() + SWITCH_TIMEOUT_S
            while client.get("/info").json()["runtime"] != "openvino":
                assert process.poll() is None
                assert time.monotonic() < deadline, client.get("/ready").json()
                time.sleep(0.2)
        finally:
            switched.set()
            asker.join()
        info = client.get("/info").json()
        assert (info["runtime"], info["dtype"], info["phase"]) == (
            "openvino",
            "int8",
            "serving openvino-int8",
        )
        assert "vitrine_export_progress_percent 100.0" in client.get("/metrics").text
        texts_after, images_after = (
            embed(client, TEXTS, "text_embedding"),
            embed(client, image_inputs(), "image_embedding"),
        )
        assert row_cosines(texts_before, texts_after).min() >= 0.999
        assert row_cosines(images_before, images_after).min() >= 0.999
        assert during and min(row_cosines(texts_before, answer).min() for answer in during) >= 0.999
    finally:
        log = stop(process)
    assert "building openvino-int8, " in log  # progress lines while it builds
    assert "switched from torch-" in log and "to openvino-int8" in log
    assert "Traceback" not in log


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_the_export_stops_everything_within_2s_and_leaves_no_export(
    tiny_model_dir, tmp_path, signum
):
    process, client = first_start(tiny_model_dir, tmp_path)
    try:
        wait_ready(process, client)
        deadline = time.monotonic() + 60
        while not (children := export_children(process)):
            assert time.monotonic() < deadline, "no export child started"
            time.sleep(0.05)
        # Well into the step: the child writes its temporary folder in the cache.
        deadline = time.monotonic() + 300
        while not list((tmp_path / "cache").glob("exports/*/.tmp-*")):
            assert time.monotonic() < deadline and export_children(process), "no export step started writing"
            time.sleep(0.05)
        process.send_signal(signum)
        started = time.monotonic()
        process.wait(timeout=10)
        took = time.monotonic() - started
    finally:
        log = stop(process)
    assert took < 2.0, f"the server took {took:.1f} s to stop"
    for child in children:
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    left = [path.relative_to(tmp_path) for path in (tmp_path / "cache").rglob("*") if path.is_dir()]
    assert not [path for path in left if path.name.startswith(".tmp-")], left
    assert not list((tmp_path / "cache").rglob("openvino-int8")), left
    assert "Traceback" not in log


def test_a_memory_budget_below_the_export_need_gives_one_line_and_torch_serves(
    tiny_model_dir, tmp_path, caplog
):
    settings = settings_for(
        tiny_model_dir, tmp_path / "data", runtime="auto", dtype="auto", export_memory_budget=1_000_000
    )
    # The export's own logger, read directly: in a long test session another library's logging set-up
    # (a dictConfig disables the loggers that exist) once left caplog's root handler without the line.
    logger = logging.getLogger("search.model.background_export")
    was_disabled, logger.disabled = logger.disabled, False
    records: list[logging.LogRecord] = []
    collect = logging.Handler(logging.INFO)
    collect.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(collect)
    try:
        server = LiveServer(create_app(settings)).start()
        try:
            export = server.app.state.vitrine.components.export
            assert export is not None and export.wait(30)
            info = server.client.get("/info").json()
            response = server.client.post(
                "/", json={"inputs": ["oak"], "parameters": {"mode": "text_embedding"}}
            )
        finally:
            server.stop()
    finally:
        logger.removeHandler(collect)
        logger.disabled = was_disabled
    assert response.status_code == 200
    assert info["runtime"] == "torch" and info["export"] == "skipped"
    assert "openvino-int8 export skipped" in info["phase"]
    lines = [record.getMessage() for record in records if "not building the" in record.getMessage()]
    assert len(lines) == 1, lines
    assert "\n" not in lines[0]
    assert "VITRINE_EXPORT_MEMORY_BUDGET" in lines[0] and "`python -m indexer export-model`" in lines[0]
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").rglob("*.xml"))


def test_two_data_folders_share_one_export_cache(tiny_model_dir, tmp_path):
    """The export `indexer export-model` builds for one data folder serves a server on another at once."""
    cache = tmp_path / "shared-cache"
    # In-process (the CLI's own entry point): a process of its own only added its start-up (torch).
    built = run_indexer_in_process(
        indexer_settings(tiny_model_dir, tmp_path / "first", runtime="auto", dtype="auto", cache_dir=cache),
        "export-model",
    )
    assert built.returncode == 0, built.stderr
    assert "runtime openvino, int8" in built.stdout
    settings = settings_for(
        tiny_model_dir, tmp_path / "second", runtime="auto", dtype="auto", cache_dir=cache
    )
    server = LiveServer(create_app(settings)).start()
    try:
        info = server.client.get("/info").json()
        components = server.app.state.vitrine.components
    finally:
        server.stop()
    assert (info["runtime"], info["dtype"]) == ("openvino", "int8")
    assert components.export is None  # nothing left to build
    key = Checkpoint(str(tiny_model_dir)).export_key[:16]
    assert (cache / "exports" / key / "openvino-int8" / "manifest.json").is_file()
    for data in ("first", "second"):
        assert not (tmp_path / data / "models").exists()
