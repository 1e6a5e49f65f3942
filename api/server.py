"""The HTTP server around the app: uvicorn, with its own protocol-level errors in the contract's shape.

Errors that uvicorn answers before the app ever sees a request (a malformed request line, a bad
Content-Length, an oversized header block) are plain text in uvicorn; here they are
``{"error": ...}`` like every other error. ``server_config`` is what `python -m api` and the tests run.
"""

from __future__ import annotations

import json

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

# An h11 connection buffers at most this many bytes of an unfinished request line and headers.
MAX_HEADER_BYTES = 64 * 1024


def _error_bytes(message: str) -> bytes:
    return json.dumps({"error": f"invalid HTTP request: {message}"}).encode()


def _response(body: bytes, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    lines = [b"HTTP/1.1 400 Bad Request\r\n"]
    lines += [name + b": " + value + b"\r\n" for name, value in default_headers]
    lines += [
        b"content-type: application/json\r\n",
        b"content-length: " + str(len(body)).encode() + b"\r\n",
        b"connection: close\r\n\r\n",
        body,
    ]
    return b"".join(lines)


class JsonErrorH11Protocol(H11Protocol):
    def send_400_response(self, msg: str) -> None:
        self.transport.write(_response(_error_bytes(msg), self.server_state.default_headers))
        self.transport.close()


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class JsonErrorHttpToolsProtocol(HttpToolsProtocol):
        """httptools has no limit of its own on the request line and headers: this one has."""

        _head_bytes = 0

        def on_message_begin(self) -> None:
            self._head_bytes = 0
            super().on_message_begin()

        def on_url(self, url: bytes) -> None:
            self._count(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count(len(name) + len(value))
            super().on_header(name, value)

        def _count(self, size: int) -> None:
            self._head_bytes += size
            if self._head_bytes > MAX_HEADER_BYTES:
                # Raised inside the parser's callback: httptools reports a parser error -> 400 below.
                raise ValueError("request line and headers too large")

        def send_400_response(self, msg: str) -> None:
            self.transport.write(_response(_error_bytes(msg), self.server_state.default_headers))
            self.transport.close()

    HTTP_PROTOCOL: type = JsonErrorHttpToolsProtocol
except ImportError:  # uvicorn without httptools: the pure-Python parser
    HTTP_PROTOCOL = JsonErrorH11Protocol


def server_config(app: object, host: str, port: int, **options: object) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=HTTP_PROTOCOL,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        **options,
    )
