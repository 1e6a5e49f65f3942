"""Reading a JSON request body: streamed within a size and time limit, then parsed by the core's one
strict, bounded JSON reader (``search.strict_json``) off the event loop."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from api.errors import RequestTimeout
from api.state import ServiceState
from search.errors import BadInput, TooLarge
from search.strict_json import JsonLimits, parse_json


async def read_request_json(request: Request, state: ServiceState) -> Any:
    """The body under the server's limits (VITRINE_MAX_REQUEST_BYTES, VITRINE_REQUEST_BODY_TIMEOUT,
    VITRINE_MAX_JSON_VALUES)."""
    settings = state.settings
    body = await read_body(request, settings.max_request_bytes, settings.request_body_timeout)
    return await run_in_threadpool(parse_body, body, JsonLimits(max_values=settings.max_json_values))


def parse_body(body: bytes, limits: JsonLimits | None = None) -> Any:
    if not body.strip():
        raise BadInput('request body is empty; send JSON like {"inputs": ..., "parameters": {...}}')
    return parse_json(body, "request body", limits or JsonLimits())


async def read_body(request: Request, max_bytes: int, timeout: float) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise TooLarge(
            f"request body is {declared} bytes; the limit is {max_bytes} (VITRINE_MAX_REQUEST_BYTES)"
        )
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_bytes:
                    raise TooLarge(
                        f"request body is larger than {max_bytes} bytes (VITRINE_MAX_REQUEST_BYTES)"
                    )
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout(
            f"request body not received within {timeout:g} s (VITRINE_REQUEST_BODY_TIMEOUT)"
        ) from None
    return b"".join(chunks)
