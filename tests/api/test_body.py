"""Reading a request body (api/body.py) on a real Starlette Request fed chunk by chunk: the size limit at
its edge, declared and streamed; the time limit; the empty body; the JSON limits taken from the settings.
Each exact message is what a client reads in its 400/408/413."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from types import SimpleNamespace

import pytest
from starlette.requests import Request

from api.body import parse_body, read_body, read_request_json
from api.errors import RequestTimeout
from search.errors import BadInput, TooLarge
from search.strict_json import JsonLimits


def request(chunks: Iterable[bytes], content_length: int | str | None = None, stall: bool = False) -> Request:
    """A POST whose body arrives in ``chunks`` (then, with ``stall``, nothing more, ever)."""
    pending = list(chunks)
    headers = [] if content_length is None else [(b"content-length", str(content_length).encode())]

    async def receive() -> dict:
        if pending:
            chunk = pending.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(pending) or stall}
        if stall:
            # Long past any timeout a test sets; then the body ends (so a missing timeout fails the test
            # with the wrong answer instead of hanging it).
            await asyncio.sleep(2)
            stall_over = {"type": "http.request", "body": b"", "more_body": False}
            return stall_over
        raise AssertionError("the body was read past its end")

    return Request({"type": "http", "method": "POST", "path": "/", "headers": headers}, receive)


def unread(content_length: int) -> Request:
    """A request whose body must not be read at all (its declared length is refused first)."""

    async def receive() -> dict:
        raise AssertionError("the body was read although its declared length is over the limit")

    headers = [(b"content-length", str(content_length).encode())]
    return Request({"type": "http", "method": "POST", "path": "/", "headers": headers}, receive)


def read(req: Request, max_bytes: int = 10, timeout: float = 5.0) -> bytes:
    return asyncio.run(read_body(req, max_bytes, timeout))


# Size ------------------------------------------------------------------------------------------------------


def test_chunks_are_joined_in_order():
    assert read(request([b"ab", b"", b"cde", b"f"])) == b"abcdef"


def test_a_body_of_exactly_the_limit_is_read():
    assert read(request([b"12345", b"67890"], content_length=10)) == b"1234567890"


def test_a_declared_length_over_the_limit_is_refused_before_reading():
    with pytest.raises(TooLarge) as refused:
        read(unread(11))
    assert str(refused.value) == ("request body is 11 bytes; the limit is 10 (VITRINE_MAX_REQUEST_BYTES)")


@pytest.mark.parametrize("declared", ["abc", "-5", "", None])
def test_a_declared_length_that_is_not_a_number_is_ignored_and_the_stream_counted(declared):
    assert read(request([b"0123456789"], content_length=declared)) == b"0123456789"
    with pytest.raises(TooLarge, match="larger than 10 bytes"):
        read(request([b"0123456789", b"x"], content_length=declared))


def test_a_stream_longer_than_it_declared_is_cut_at_the_limit():
    # A client that declares 4 bytes and sends 11 in small chunks: each chunk is under the limit, the sum
    # is not.
    with pytest.raises(TooLarge) as refused:
        read(request([b"1234", b"5678", b"9x", b"y"], content_length=4))
    assert str(refused.value) == "request body is larger than 10 bytes (VITRINE_MAX_REQUEST_BYTES)"


def test_one_byte_over_the_limit_is_refused():
    with pytest.raises(TooLarge):
        read(request([b"12345678901"]))


# Time ------------------------------------------------------------------------------------------------------


def test_a_body_that_stops_arriving_is_a_timeout_naming_the_setting():
    with pytest.raises(RequestTimeout) as slow:
        read(request([b'{"in'], stall=True), timeout=0.05)
    assert str(slow.value) == "request body not received within 0.05 s (VITRINE_REQUEST_BODY_TIMEOUT)"


def test_a_body_within_its_time_is_read():
    assert read(request([b"{}"]), timeout=0.05) == b"{}"


# Parsing ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"", b"  \n\t "])
def test_an_empty_body_says_what_to_send(body):
    with pytest.raises(BadInput) as empty:
        parse_body(body)
    assert str(empty.value) == ('request body is empty; send JSON like {"inputs": ..., "parameters": {...}}')


def test_a_body_is_parsed_strictly_and_named_request_body():
    assert parse_body(b' {"a": [1, 2.5, "x"]} ') == {"a": [1, 2.5, "x"]}
    with pytest.raises(BadInput) as bad:
        parse_body(b'{"a": NaN}')
    assert str(bad.value).startswith("request body is not valid JSON")


def test_the_json_limits_given_are_the_ones_applied():
    assert parse_body(b"[1, 2]", JsonLimits(max_values=3)) == [1, 2]
    with pytest.raises(TooLarge, match="more than 3 JSON values"):
        parse_body(b"[1, 2, 3]", JsonLimits(max_values=3))


def settings_state(max_request_bytes: int, timeout: float, max_json_values: int) -> SimpleNamespace:
    settings = SimpleNamespace(
        max_request_bytes=max_request_bytes, request_body_timeout=timeout, max_json_values=max_json_values
    )
    return SimpleNamespace(settings=settings)


def test_read_request_json_applies_each_server_setting():
    state = settings_state(max_request_bytes=12, timeout=0.05, max_json_values=3)
    assert asyncio.run(read_request_json(request([b"[1,", b" 2]"]), state)) == [1, 2]
    with pytest.raises(TooLarge, match="more than 3 JSON values"):
        asyncio.run(read_request_json(request([b"[1, 2, 3]"]), state))
    with pytest.raises(TooLarge, match="larger than 12 bytes"):
        asyncio.run(read_request_json(request([b"[1, 2, 3, 4, 5]"]), state))
    with pytest.raises(RequestTimeout, match=r"within 0\.05 s"):
        asyncio.run(read_request_json(request([b"[1"], stall=True), state))
