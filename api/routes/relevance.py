"""Relevance routes: why a product is or is not in a search's results (POST /search/explain).
``explain: true`` on /search itself lives with /search (api/routes/catalog.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool

from api.body import read_request_json
from api.deps import admitted
from api.schemas import SearchBody, parse_search
from api.state import ServiceState
from search.catalog.why_not import why_not
from search.errors import BadInput

router = APIRouter()

_BODY = {
    "type": "object",
    "required": ["query", "product_id"],
    "properties": {"query": SearchBody.model_json_schema(), "product_id": {"type": "string"}},
}


@router.post(
    "/search/explain",
    summary="Why a product is or is not in a search's results: its rank in each list and what removed it",
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": _BODY}}}},
)
async def explain_search(request: Request, state: ServiceState = Depends(admitted)) -> dict[str, Any]:
    products = state.require_products()
    body = await read_request_json(request, state)
    if not isinstance(body, dict) or set(body) != {"query", "product_id"}:
        raise BadInput('body must be {"query": {...the /search body...}, "product_id": "..."}')
    product_id = body["product_id"]
    if not isinstance(product_id, str) or not product_id:
        raise BadInput("product_id must be a non-empty string")
    query = parse_search(body["query"], state.limits)
    return await run_in_threadpool(why_not, products.finder, query, product_id)
