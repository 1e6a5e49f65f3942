"""Shared fixtures: a tiny random SigLIP checkpoint, a local image server, a real uvicorn server."""

from __future__ import annotations

import base64
import io
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import uvicorn
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from search.encoder import Encoder
from search.random_model import write_random_model
from search.runtime import quiet_transformers
from search.settings import Settings

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
    return Encoder.load(str(tiny_model_dir), device="cpu", dtype="float32", batch_size=4)


@pytest.fixture
def make_settings(tiny_model_dir: Path, tmp_path: Path) -> Callable[..., Settings]:
    """Settings for a test: the tiny model, a fresh data folder, loopback images allowed."""

    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "model": str(tiny_model_dir),
            "data_dir": tmp_path / "data",
            "url_allow_hosts": ["127.0.0.1"],
            "device": "cpu",
            "dtype": "float32",
        }
        values.update(overrides)
        return Settings(**values)

    return make


# Local image server -------------------------------------------------------------------------------------


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class ImageServer:
    """A real HTTP server on 127.0.0.1 whose routes a test sets: ``server.add("/a.png", Route(...))``."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: dict[str, int] = {}
        routes, hits = self.routes, self.hits

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits[self.path] = hits.get(self.path, 0) + 1
                route = routes.get(self.path)
                if route is None:
                    self.send_error(404)
                    return
                if route.delay:
                    time.sleep(route.delay)
                self.send_response(route.status)
                for key, value in route.headers.items():
                    self.send_header(key, value)
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
        config = uvicorn.Config(app, log_level="warning", lifespan="on")
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
