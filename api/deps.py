"""Request-scoped access to the server's state, and admission."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import Depends, Request

from api.state import ServiceState


async def get_state(request: Request) -> ServiceState:
    # async on purpose: FastAPI runs a plain ``def`` dependency in the request thread pool, so under
    # load every route, /ready included, first waited for a free worker thread just to read this.
    return request.app.state.vitrine


async def admitted(state: ServiceState = Depends(get_state)) -> AsyncIterator[ServiceState]:
    """The state, for a route that uses the model or the catalog: one of VITRINE_MAX_PENDING_REQUESTS
    slots is held while it runs, and past them the route answers 429 at once, before it reads a body
    or queues for a thread."""
    with state.admit():
        yield state
