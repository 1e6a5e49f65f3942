"""Request-scoped access to the server's state."""

from __future__ import annotations

from fastapi import Request

from api.state import ServiceState


def get_state(request: Request) -> ServiceState:
    return request.app.state.vitrine
