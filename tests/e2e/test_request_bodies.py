"""Issue 6, classes 4 and 6 (bodies) and 7 (server-level errors): admission before the body is read,
parsing off the event loop, strict JSON as 400, and ``{"error"}`` even from the HTTP server itself."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from api.body import parse_body as parse_json
from search.errors import BadInput
from tests.support.http import assert_error
from tests.support.images import image_bytes


def raw_request(port: int, data: bytes, timeout: float = 20) -> tuple[int, dict[str, str], bytes]:
    """Send bytes on a fresh TCP connection; the status, headers and body of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < _length(answer):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def _length(answer: bytes) -> int:
    for line in answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def assert_raw_error(status: int, headers: dict[str, str], body: bytes, expected: int) -> None:
    assert status == expected, body
    assert headers["content-type"] == "application/json"
    parsed = json.loads(body)
    assert list(parsed) == ["error"] and isinstance(parsed["error"], str)


# 4. The event loop -----------------------------------------------------------------------------------------


def test_busy_server_answers_429_before_reading_the_body(start_server, image_server):
    server = start_server(max_pending_requests=1)
    slow_url = image_server.add("/bodies/slow.png", image_bytes(), delay=1.5)
    thread = threading.Thread(
        target=server.client.post,
        args=("/",),
        kwargs={"json": {"inputs": slow_url, "parameters": {"mode": "image_embedding"}}},
    )
    thread.start()
    for _ in range(300):
        if image_server.hits.get("/bodies/slow.png"):
            break
        time.sleep(0.01)
    # Headers only: a 50 MB body is announced and never sent. The answer comes without reading it.
    head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50000000\r\n\r\n"
    status, headers, body = raw_request(server.port, head)
    thread.join()
    assert_raw_error(status, headers, body, 429)


def test_a_body_of_more_json_values_than_the_limit_is_413_before_it_is_parsed(start_server):
    server = start_server(max_request_bytes=64 * 1024 * 1024)
    # Two million numbers took seconds to parse, holding the interpreter lock all along; they are
    # counted in the bytes first now, and refused without being built.
    payload = json.dumps({"text": list(range(2_000_000))}).encode()
    started = time.monotonic()
    response = server.client.post("/search", content=payload)
    assert "VITRINE_MAX_JSON_VALUES" in assert_error(response, 413)
    assert time.monotonic() - started < 30  # bounded; the timing itself is measured by bench/


def test_a_body_not_received_in_time_is_408(start_shared_server):
    server = start_shared_server(request_body_timeout=0.5)
    head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    status, headers, body = raw_request(server.port, head)
    assert_raw_error(status, headers, body, 408)


# 6. Strict JSON ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '{"inputs": NaN}',
        '{"inputs": Infinity}',
        '{"inputs": -Infinity}',
        '{"inputs": 1e400}',
        '{"inputs": ' + "9" * 4301 + "}",
        '{"inputs": 99999999999999999999}',
        '{"inputs": "\\ud800"}',
        '{"\\udc00": 1}',
        '{"inputs": ["ok", {"deep": ["\\ud800x"]}]}',
    ],
)
def test_strict_json_refuses_what_nothing_downstream_can_hold(text):
    with pytest.raises(BadInput):
        parse_json(text.encode())


def test_strict_json_keeps_ordinary_values():
    text = '{"a": [1, -2, 3.5, 9223372036854775807, "caf\\u00e9 \\ud83d\\ude00", null, true]}'
    assert parse_json(text.encode()) == json.loads(text)


@pytest.mark.parametrize("path", ["/", "/search", "/products/p1"])
@pytest.mark.parametrize("value", ["9" * 4301, "NaN", "1e400", '"\\ud800"'])
def test_hostile_numbers_and_surrogates_are_400_on_every_body_route(shared_server, path, value):
    method = "PUT" if path.startswith("/products") else "POST"
    body = f'{{"inputs": {value}, "text": {value}, "title": {value}}}'
    response = shared_server.client.request(
        method, path, content=body.encode(), headers={"Content-Type": "application/json"}
    )
    assert_error(response, 400)
    # The connection (and the server) are fine afterwards.
    assert shared_server.client.get("/health").status_code == 200


def test_lone_surrogate_in_a_text_is_400(shared_server):
    body = '{"inputs": ["ok", "\\ud800"], "parameters": {"mode": "text_embedding"}}'
    assert_error(shared_server.client.post("/", content=body.encode()), 400)


def test_many_filter_keys_are_400(start_shared_server):
    server = start_shared_server(max_attributes=100)
    filters = {f"k{i}": "v" for i in range(1200)}
    message = assert_error(server.client.post("/search", json={"text": "tile", "filters": filters}), 400)
    assert "VITRINE_MAX_ATTRIBUTES" in message


def test_nan_min_score_is_400(shared_server):
    assert_error(shared_server.client.get("/products/x/similar", params={"min_score": "nan"}), 400)
    body = b'{"text": "tile", "min_score": NaN}'
    assert_error(shared_server.client.post("/search", content=body), 400)


# 7. Errors from the HTTP server itself ----------------------------------------------------------------------


def test_a_70_kb_path_is_a_json_400(shared_server):
    request = b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    assert_raw_error(*raw_request(shared_server.port, request), 400)


@pytest.mark.parametrize("length", [b"abc", b"-1", b"5\r\nContent-Length: 7"])
def test_a_bad_content_length_is_a_json_400(shared_server, length):
    request = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: " + length + b"\r\n\r\nhello"
    assert_raw_error(*raw_request(shared_server.port, request), 400)


def test_an_oversized_header_block_is_a_json_400(shared_server):
    request = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n"
    assert_raw_error(*raw_request(shared_server.port, request), 400)


def test_garbage_instead_of_http_is_a_json_400(shared_server):
    assert_raw_error(*raw_request(shared_server.port, b"NOT HTTP AT ALL\r\n\r\n"), 400)


def test_head_health_is_200(shared_server):
    response = shared_server.client.head("/health")
    assert response.status_code == 200
