"""The app under test, two ways: in this process through Starlette's TestClient (the default: no socket,
no thread to start), or under a real uvicorn on 127.0.0.1 for tests about the HTTP server itself (body
timeouts, disconnects, protocol errors, signals, the browser). Both expose ``client`` and ``app``."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.server import server_config

READY_WITHIN_S = 60


def _wait_ready(client: httpx.Client, path: str) -> None:
    deadline = time.monotonic() + READY_WITHIN_S
    while time.monotonic() < deadline:
        try:
            if client.get(path).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.01)  # an in-process start is ready in tens of milliseconds
    raise RuntimeError("server did not become ready")


class InProcessServer:
    """The ASGI app, lifespan included, called in-process: ``client`` is an httpx client whose requests
    never leave the process. Client timeouts do not apply here (a test about them is an e2e test)."""

    base_url = "http://testserver"

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.client = TestClient(app, base_url=self.base_url, raise_server_exceptions=False)

    def start(self, wait_ready: bool = True) -> InProcessServer:
        self.client.__enter__()  # runs the lifespan's startup in the client's event loop thread
        _wait_ready(self.client, "/ready" if wait_ready else "/health")
        return self

    def stop(self) -> None:
        self.client.__exit__(None, None, None)


class LiveServer:
    """The app under a real uvicorn server on 127.0.0.1, in a thread; ``client`` talks to it over TCP."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
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
        _wait_ready(self.client, "/ready" if wait_ready else "/health")
        return self

    def stop(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(timeout=30)


TestServer = InProcessServer | LiveServer
