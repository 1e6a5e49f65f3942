"""The OpenAPI document as the API really behaves: a bearer-token scheme (so /docs has an Authorize
button), and per route only the error statuses it can send (never FastAPI's unused 422)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
    "example": {"error": "what went wrong and what to do"},
}
_MEANING = {
    400: "Bad input",
    401: "Missing or invalid bearer token (when VITRINE_API_TOKENS is set)",
    404: "Not found",
    408: "The request body did not arrive within VITRINE_REQUEST_BODY_TIMEOUT",
    409: "The catalog was embedded by another model than the one served (the message names both)",
    413: "Too large (body, image, or too many inputs)",
    429: "Too many requests in flight, or image decoding memory in use; retry shortly",
    503: "The model is still loading or failed to load; for /ready also: database unreadable, or busy",
}
# Statuses besides success that each route sends (see search.errors and api/); 401 only with tokens.
_ROUTE_ERRORS: dict[tuple[str, str], tuple[int, ...]] = {
    ("post", "/"): (400, 401, 408, 413, 429, 503),
    ("post", "/v1/embeddings"): (400, 401, 408, 413, 429, 503),
    ("post", "/embed"): (400, 401, 408, 413, 429, 503),
    ("post", "/search"): (400, 401, 404, 408, 409, 413, 429, 503),
    ("get", "/products/{product_id}"): (401, 404, 409, 503),
    ("put", "/products/{product_id}"): (400, 401, 408, 409, 413, 429, 503),
    ("delete", "/products/{product_id}"): (401, 404, 409, 503),
    ("get", "/products/{product_id}/similar"): (400, 401, 404, 409, 429, 503),
    ("get", "/products/{product_id}/image"): (401, 404, 409, 503),
    ("get", "/ready"): (503,),
    ("get", "/info"): (401, 503),
}
_PUBLIC = {("get", "/health"), ("get", "/ready")}  # the only routes BearerAuth lets through
BEARER = "bearer"


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = describe(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def describe(app: FastAPI) -> dict[str, Any]:
    spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = spec.setdefault("components", {})
    components.setdefault("securitySchemes", {})[BEARER] = {
        "type": "http",
        "scheme": "bearer",
        "description": "One of VITRINE_API_TOKENS; not needed when the server runs without tokens.",
    }
    components.setdefault("schemas", {})["Error"] = _ERROR_SCHEMA
    for name in ("HTTPValidationError", "ValidationError"):
        components["schemas"].pop(name, None)
    spec["security"] = [{BEARER: []}]
    for path, operations in spec.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            if (method, path) in _PUBLIC:
                operation["security"] = []
            for status in _ROUTE_ERRORS.get((method, path), (401,)):
                responses[str(status)] = {
                    "description": _MEANING[status],
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                }
    return spec
