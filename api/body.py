"""Reading a JSON request body within the size limit, with errors in the contract's shape."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from search.errors import BadInput, TooLarge


async def read_json(request: Request, max_bytes: int) -> Any:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise TooLarge(
            f"request body is {declared} bytes; the limit is {max_bytes} (VITRINE_MAX_REQUEST_BYTES)"
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise TooLarge(f"request body is larger than {max_bytes} bytes (VITRINE_MAX_REQUEST_BYTES)")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        raise BadInput('request body is empty; send JSON like {"inputs": ..., "parameters": {...}}')
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise BadInput("request body is not UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise BadInput(
            f"request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise BadInput("request body is nested too deeply") from None
