"""Shared fixtures: a tiny random SigLIP checkpoint, a local image server, a real uvicorn server."""

from __future__ import annotations

import base64
import contextlib
import csv
import fcntl
import io
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import uvicorn
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from PIL import Image

from api.server import server_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from api.settings import ServerSettings
from devtools.random_model import write_random_model
from search.endpoint import InferenceService
from search.model.encoder import BatchSettings, Encoder
from search.settings import Settings
from search.wiring import Components, quiet_transformers

# Property-based fuzz (tests/test_fuzz.py): a quick default, a long profile by command
# (pytest tests/test_fuzz.py --hypothesis-profile=fuzz-long). Cases talk to a live server: no deadline.
_FUZZ = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
hypothesis_settings.register_profile("fuzz-quick", max_examples=30, **_FUZZ)
hypothesis_settings.register_profile("fuzz-long", max_examples=3400, **_FUZZ)
hypothesis_settings.load_profile("fuzz-quick")

# Images -------------------------------------------------------------------------------------------------


def image_bytes(
    color: tuple[int, ...] = (200, 30, 30),
    size: tuple[int, int] = (64, 48),
    fmt: str = "PNG",
    mode: str = "RGB",
) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, fmt)
    return buffer.getvalue()


def patterned_image(seed: int, size: tuple[int, int] = (64, 64)) -> Image.Image:
    """A picture that differs from other seeds in colour and structure (random weights need contrast)."""
    image = Image.new("RGB", size, ((seed * 67) % 256, (seed * 131) % 256, (seed * 29) % 256))
    step = 4 + seed % 7
    pixels = image.load()
    for x in range(size[0]):
        for y in range(size[1]):
            if ((x // step) + (y // step)) % 2:
                pixels[x, y] = ((seed * 17) % 256, 255 - (seed * 53) % 256, (seed * 97) % 256)
    return image


def encode_png(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# Tiny model ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    quiet_transformers()
    return write_random_model("tiny", tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="session")
def encoder(tiny_model_dir: Path) -> Encoder:
    return Encoder.load(
        str(tiny_model_dir),
        device="cpu",
        dtype="float32",
        batching=BatchSettings(image_batch=4, text_batch=4),
    )


@pytest.fixture
def count_image_embeddings(encoder: Encoder, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many images the (shared, in-process) encoder embedded since the fixture started: every
    image forward pass goes through ``embed_pixels``."""
    calls = [0]
    original = encoder.embed_pixels

    def counting(pixels: object) -> object:
        calls[0] += len(pixels)  # type: ignore[arg-type]
        return original(pixels)  # type: ignore[arg-type]

    monkeypatch.setattr(encoder, "embed_pixels", counting)
    return calls


def settings_for(model_dir: Path, data_dir: Path, **overrides: object) -> ServerSettings:
    """Test settings: the tiny model on CPU in float32, the given data folder, loopback images allowed."""
    values: dict[str, object] = {
        "model": str(model_dir),
        "data_dir": data_dir,
        "url_allow_hosts": ["127.0.0.1"],
        "device": "cpu",
        "dtype": "float32",
    }
    values.update(overrides)
    return ServerSettings(**values)


@pytest.fixture
def make_settings(tiny_model_dir: Path, tmp_path: Path) -> Callable[..., ServerSettings]:
    """Settings for a test: the tiny model, a fresh data folder, loopback images allowed."""

    def make(**overrides: object) -> ServerSettings:
        return settings_for(tiny_model_dir, tmp_path / "data", **overrides)

    return make


@pytest.fixture
def inference(encoder: Encoder, make_settings: Callable[..., Settings]) -> Iterator[InferenceService]:
    """The endpoint logic without the web server, on the shared tiny encoder."""
    runtime = Components.start(make_settings(), encoder)
    yield runtime.endpoint
    runtime.close()


def assert_error(response: httpx.Response, status: int) -> str:
    """The contract's error shape: the status, JSON ``{"error": "<message>"}`` and nothing else."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["error"]
    assert isinstance(body["error"], str) and body["error"]
    return body["error"]


# PostgreSQL ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def postgres_database_lock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The scratch database of VITRINE_TEST_POSTGRES_URL is one: held while a module uses it, so that
    pytest-xdist workers (``make test`` runs two) never empty it under each other."""
    # The parent of a worker's base temp folder is shared by all workers of the run.
    path = tmp_path_factory.getbasetemp().parent / "postgres.lock"
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


# Local image server -------------------------------------------------------------------------------------


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    # Set: the answer waits until the test sets it (at most 30 s), however long that takes.
    gate: threading.Event | None = None
    # False: no Content-Length, the body ends when the connection closes (what a lying server does).
    send_length: bool = True


class ImageServer:
    """A real HTTP server on 127.0.0.1 whose routes a test sets: ``server.add("/a.png", Route(...))``."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: dict[str, int] = {}
        # Requests being answered at once, and the most seen since reset_concurrency().
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        routes, hits, server = self.routes, self.hits, self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits[self.path] = hits.get(self.path, 0) + 1
                route = routes.get(self.path)
                if route is None:
                    self.send_error(404)
                    return
                if route.delay or route.gate:
                    with server._lock:
                        server.in_flight += 1
                        server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    if route.gate:
                        route.gate.wait(30)
                    time.sleep(route.delay)
                    with server._lock:
                        server.in_flight -= 1
                self.send_response(route.status)
                for key, value in route.headers.items():
                    self.send_header(key, value)
                if route.send_length:
                    self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                try:
                    self.wfile.write(route.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def reset_concurrency(self) -> None:
        with self._lock:
            self.max_in_flight = self.in_flight

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def add(self, path: str, body: bytes = b"", **kwargs: object) -> str:
        self.routes[path] = Route(body=body, **kwargs)
        return self.url(path)

    def redirect(self, path: str, target: str, status: int = 302) -> str:
        self.routes[path] = Route(status=status, headers={"Location": target})
        return self.url(path)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="session")
def image_server() -> Iterator[ImageServer]:
    server = ImageServer()
    yield server
    server.close()


# Real uvicorn server ------------------------------------------------------------------------------------


class LiveServer:
    """The app under a real uvicorn server on 127.0.0.1, in a thread; ``client`` talks to it over TCP."""

    def __init__(self, app: object) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        config = server_config(app, "127.0.0.1", self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.client = httpx.Client(base_url=self.base_url, timeout=60)

    def start(self, wait_ready: bool = True) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                response = self.client.get("/ready" if wait_ready else "/health")
                if response.status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError("server did not become ready")

    def stop(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture
def start_server(
    encoder: Encoder, make_settings: Callable[..., Settings]
) -> Iterator[Callable[..., LiveServer]]:
    """Start a server with settings overrides: ``start_server(api_tokens=["t"])``."""
    from api.app import create_app

    servers: list[LiveServer] = []

    def start(**overrides: object) -> LiveServer:
        settings = make_settings(**overrides)
        server = LiveServer(create_app(settings, encoder=encoder)).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(start_server: Callable[..., LiveServer]) -> LiveServer:
    return start_server()


@pytest.fixture(scope="module")
def start_shared_server(
    encoder: Encoder, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., LiveServer]]:
    """Like ``start_server``, but one server per distinct settings for a whole module, for tests that only
    send stateless inference requests (a server per test costs about 0.3 s to start and stop)."""
    from api.app import create_app

    servers: dict[str, LiveServer] = {}

    def start(**overrides: object) -> LiveServer:
        key = repr(sorted(overrides.items()))
        if key not in servers:
            settings = settings_for(tiny_model_dir, tmp_path_factory.mktemp("data"), **overrides)
            servers[key] = LiveServer(create_app(settings, encoder=encoder)).start()
        return servers[key]

    yield start
    for server in servers.values():
        server.stop()


@pytest.fixture(scope="module")
def shared_server(start_shared_server: Callable[..., LiveServer]) -> LiveServer:
    """The default server, shared by a module's stateless tests."""
    return start_shared_server()


# Catalog: the indexer CLI (in-process, or as a real subprocess), and an indexed sample catalog ---------------

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_PRODUCTS = 40


def indexer_settings(model_dir: Path, data_dir: Path, **overrides: object) -> Settings:
    """An indexer run's settings: the tiny model on CPU in float32 (as the test servers use it). Unlike
    ``settings_for``, no loopback hosts are allowed unless a test says so."""
    values: dict[str, object] = {
        "model": str(model_dir),
        "data_dir": data_dir,
        "device": "cpu",
        "dtype": "float32",
    }
    values.update(overrides)
    return Settings(**values)


def run_indexer_in_process(
    settings: Settings, *args: object, encoder: Encoder | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m indexer ARGS`` as a call (``indexer.__main__.run``): stdout, stderr (log lines
    included, formatted as the CLI's own) and the exit code, as a subprocess run would give them. The
    ``encoder``, when given, is used instead of loading ``settings.model`` again."""
    from indexer.__main__ import run

    argv = [str(arg) for arg in args]
    stdout, stderr = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code = run(argv, settings, encoder)
            except SystemExit as exited:  # argparse: a usage error (2) or --help (0)
                code = exited.code if isinstance(exited.code, int) else 1
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    return subprocess.CompletedProcess(["indexer", *argv], code, stdout.getvalue(), stderr.getvalue())


@pytest.fixture(scope="session")
def indexer_cli(tiny_model_dir: Path, encoder: Encoder) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``indexer_cli(data_dir, "add", manifest, index_type="hnsw")``: the indexer CLI in-process on the
    shared tiny encoder; keyword arguments are settings overrides."""

    def run(data_dir: Path, *args: object, **overrides: object) -> subprocess.CompletedProcess[str]:
        return run_indexer_in_process(
            indexer_settings(tiny_model_dir, data_dir, **overrides), *args, encoder=encoder
        )

    return run


def indexer_env(model_dir: Path, data_dir: Path) -> dict[str, str]:
    """The environment of an indexer subprocess: the settings of ``indexer_settings``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("VITRINE_")}
    env.update(
        VITRINE_MODEL=str(model_dir),
        VITRINE_DATA_DIR=str(data_dir),
        VITRINE_DEVICE="cpu",
        VITRINE_DTYPE="float32",
        HF_HUB_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    return env


def indexer_command(*args: object) -> list[str]:
    return [sys.executable, "-m", "indexer", *(str(arg) for arg in args)]


def start_indexer(model_dir: Path, data_dir: Path, *args: object) -> subprocess.Popen[str]:
    """``python -m indexer`` as a process of its own, in the background: only for what a call cannot
    show (signals, a killed run, a second process writing at the same time). A run is mostly start-up
    (importing torch and transformers, about 5 s)."""
    return subprocess.Popen(
        indexer_command(*args),
        cwd=REPO_ROOT,
        env=indexer_env(model_dir, data_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish_indexer(process: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    try:
        stdout, stderr = process.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def summary_of(result: subprocess.CompletedProcess[str]) -> str:
    """An indexer run's output, for assertion messages."""
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr[-3000:]}"


@dataclass
class IndexedCatalog:
    """A sample catalog (manifest.csv + images/) and the data folder the indexer CLI filled from it."""

    manifest: Path
    data_dir: Path
    rows: list[dict[str, str]]

    @property
    def ids(self) -> list[str]:
        return [row["id"] for row in self.rows]

    def row(self, product_id: str) -> dict[str, str]:
        return next(row for row in self.rows if row["id"] == product_id)

    def image_path(self, product_id: str) -> Path:
        return self.manifest.parent / self.row(product_id)["image"]

    def image_bytes(self, product_id: str) -> bytes:
        return self.image_path(product_id).read_bytes()


def read_manifest_rows(manifest: Path) -> list[dict[str, str]]:
    with manifest.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="session")
def indexed_catalog(
    tmp_path_factory: pytest.TempPathFactory, indexer_cli: Callable[..., subprocess.CompletedProcess[str]]
) -> IndexedCatalog:
    """40 generated products (64 px) indexed once per session by the indexer CLI.

    Read-only: tests that write take ``catalog_copy`` instead."""
    root = tmp_path_factory.mktemp("catalog")
    data_dir = root / "data"
    sample = indexer_cli(data_dir, "sample", root / "sample", "--count", SAMPLE_PRODUCTS, "--size", 64)
    assert sample.returncode == 0, summary_of(sample)
    manifest = root / "sample" / "manifest.csv"
    added = indexer_cli(data_dir, "add", manifest, "--no-progress")
    assert added.returncode == 0, summary_of(added)
    assert f"{SAMPLE_PRODUCTS} added" in added.stdout, summary_of(added)
    return IndexedCatalog(manifest, data_dir, read_manifest_rows(manifest))


def copy_catalog(source: IndexedCatalog, root: Path) -> IndexedCatalog:
    """``source`` copied under ``root``: root/sample (manifest and images) and root/data."""
    shutil.copytree(source.manifest.parent, root / "sample")
    shutil.copytree(source.data_dir, root / "data")
    manifest = root / "sample" / source.manifest.name
    return IndexedCatalog(manifest, root / "data", read_manifest_rows(manifest))


@pytest.fixture
def catalog_copy(indexed_catalog: IndexedCatalog, tmp_path: Path) -> IndexedCatalog:
    """A private copy of the indexed catalog: its data folder is the one ``make_settings`` and
    ``start_server`` use (tmp_path / "data"), its manifest and images may be edited."""
    return copy_catalog(indexed_catalog, tmp_path)
