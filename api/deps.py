"""Request-scoped access to the server's state."""

from __future__ import annotations

from fastapi import Request

from api.state import ServiceState


async def get_state(request: Request) -> ServiceState:
    # async on purpose: FastAPI runs a plain ``def`` dependency in the request thread pool, so under
    # load every route, /ready included, first waited for a free worker thread just to read this.
    return request.app.state.vitrine
