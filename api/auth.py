"""Bearer-token authentication for every route but the probes."""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import error_response

OPEN_PATHS = frozenset({"/health", "/ready", "/docs", "/openapi.json", "/ui"})
# Static page assets (Swagger UI, the /ui page): no data in them, and a browser cannot attach a token
# to a <script src>. Every API call those pages make still needs the token.
OPEN_PREFIXES = ("/static/", "/ui/")


def _is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def token_matches(presented: str, tokens: list[bytes]) -> bool:
    # Constant-time comparison against every token, so timing tells nothing about which one nearly matched.
    candidate = presented.encode()
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(candidate, token)
    return matched


class BearerAuth:
    """ASGI middleware: 401 ``{"error": ...}`` unless the request carries a configured token."""

    def __init__(self, app: ASGIApp, tokens: list[str]) -> None:
        self.app = app
        self.tokens = [token.encode() for token in tokens]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.tokens or _is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        header = ""
        for key, value in scope["headers"]:
            if key == b"authorization":
                header = value.decode("latin-1")
                break
        scheme, _, presented = header.partition(" ")
        if not header:
            message = "missing Authorization header; send 'Authorization: Bearer <token>'"
        elif scheme.lower() != "bearer" or not token_matches(presented.strip(), self.tokens):
            message = "invalid token"
        else:
            await self.app(scope, receive, send)
            return
        response = error_response(401, message, {"WWW-Authenticate": "Bearer"}, path=scope["path"])
        await response(scope, receive, send)
