"""Model work that ends when its client goes: a disconnect cancels what the request still waits for.

The blocking work runs in a worker thread inside a ``CancelScope`` (search/model/batching.py). If the client
disconnects first, the scope is cancelled: rows still queued for the model are dropped before they cost
compute, and the worker thread stops waiting at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from search.model.batching import CancelScope, cancel_scope


async def run_cancellable(request: Request, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    scope = CancelScope()

    def work() -> Any:
        with cancel_scope(scope):
            return function(*args, **kwargs)

    task = asyncio.ensure_future(run_in_threadpool(work))
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            scope.cancel()
        return await task
    except asyncio.CancelledError:
        scope.cancel()  # the server is shutting down or the handler itself was cancelled
        raise
    finally:
        watcher.cancel()


async def _disconnected(request: Request) -> None:
    # The body has been read, so the next ASGI message is the disconnect (or nothing until the response).
    while (await request.receive())["type"] != "http.disconnect":
        pass
