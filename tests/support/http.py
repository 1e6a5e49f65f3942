"""HTTP helpers: the contract's error shape, and a real local image server whose routes a test sets."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx


def assert_error(response: httpx.Response, status: int) -> str:
    """The contract's error shape: the status, JSON ``{"error": "<message>"}`` and nothing else."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["error"]
    assert isinstance(body["error"], str) and body["error"]
    return body["error"]


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
        # The headers of the last request of each path.
        self.request_headers: dict[str, dict[str, str]] = {}
        # Requests being answered at once, and the most seen since reset_concurrency().
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        routes, hits, server, seen = self.routes, self.hits, self, self.request_headers

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits[self.path] = hits.get(self.path, 0) + 1
                seen[self.path] = dict(self.headers)
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
        # A short poll: close() (shutdown) waits up to one poll interval, 0.5 s by default, in every test.
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
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
