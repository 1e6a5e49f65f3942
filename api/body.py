"""Reading a JSON request body: streamed within a size and time limit, parsed strictly off the event loop.

Strict means what every later step can store and process: no NaN or Infinity (JSON has neither; SQL
and the index would turn them into nulls or errors), no integer beyond 64 bits (Python refuses over
4,300 digits with a ValueError), no lone UTF-16 surrogate in any string or key (UTF-8 cannot encode
one, so SQLite, PostgreSQL and the tokenizer all fail on it).
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from api.state import ServiceState
from search.errors import BadInput, TooLarge, VitrineError

INT_LIMIT = 2**63  # what SQL integers and JSON readers elsewhere agree on
_OUT_OF_RANGE = "request body has an integer out of range (64-bit at most)"


class RequestTimeout(VitrineError):
    status = 408


async def read_request_json(request: Request, state: ServiceState) -> Any:
    """The body under the server's limits (VITRINE_MAX_REQUEST_BYTES, VITRINE_REQUEST_BODY_TIMEOUT)."""
    settings = state.settings
    return await read_json(request, settings.max_request_bytes, settings.request_body_timeout)


async def read_json(request: Request, max_bytes: int, timeout: float) -> Any:
    """The request's JSON body. 413 past ``max_bytes``, 408 when not received within ``timeout`` s."""
    body = await read_body(request, max_bytes, timeout)
    # Parsing a large body takes seconds of CPU: on the event loop it would stall every other request.
    return await run_in_threadpool(parse_json, body)


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


def parse_json(body: bytes) -> Any:
    """Strict JSON (see the module's docstring); BadInput with the reason for anything else."""
    if not body.strip():
        raise BadInput('request body is empty; send JSON like {"inputs": ..., "parameters": {...}}')
    try:
        value = json.loads(body, parse_constant=_reject_constant, parse_float=_finite)
    except UnicodeDecodeError:
        raise BadInput("request body is not UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise BadInput(
            f"request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise BadInput("request body is nested too deeply") from None
    except ValueError:  # int() refuses literals of more than 4,300 digits
        raise BadInput(_OUT_OF_RANGE) from None
    _check_values(value)
    return value


def _reject_constant(name: str) -> None:
    raise BadInput(f"request body is not valid JSON: {name} is not a JSON number (numbers must be finite)")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadInput(f"request body has a number out of range (numbers must be finite): {text[:30]}")
    return value


def _check_values(value: Any) -> None:
    """Integers within 64 bits, strings and keys valid Unicode, everywhere in the document."""
    # Iterative: the parser already bounds nesting, a recursive walk would hit the limit again.
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, dict):
            for key in item:
                _check_text(key)
            pending.extend(item.values())
        elif type(item) is int and not -INT_LIMIT <= item < INT_LIMIT:
            raise BadInput(_OUT_OF_RANGE)


def _check_text(text: str) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise BadInput(
                "request body has a lone UTF-16 surrogate (like \\ud800) in a string: not valid Unicode"
            ) from None
