"""The taxonomy, re-tagging and the catalog audit. Translation only: the logic is in
search.catalog.tag_service."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from api.body import read_request_json
from api.deps import admitted
from api.state import ServiceState
from search.catalog.taxonomy import Taxonomy

router = APIRouter()

_TAXONOMY_SCHEMA = {
    "type": "object",
    "example": {
        "attributes": {
            "color": {
                "values": ["red", {"value": "navy", "synonyms": ["dark blue"]}],
                "prompts": ["a photo of a {} product"],
                "multi_label": False,
                "min_score": 0.5,
            }
        }
    },
}


@router.get("/taxonomy", summary="The taxonomy the catalog is tagged by, and the re-tag's progress")
async def get_taxonomy(state: ServiceState = Depends(admitted)) -> dict[str, Any]:
    products = state.require_products()
    return await run_in_threadpool(products.tagging.status)


@router.put(
    "/taxonomy",
    summary="Store a taxonomy (its prompts are embedded once); the catalog is re-tagged in the background",
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": _TAXONOMY_SCHEMA}}}
    },
)
async def put_taxonomy(request: Request, state: ServiceState = Depends(admitted)) -> JSONResponse:
    products = state.require_products()
    taxonomy = Taxonomy.parse(await read_request_json(request, state))
    await run_in_threadpool(products.tagging.set_taxonomy, taxonomy)
    products.tagging.start_retag()
    return JSONResponse(await run_in_threadpool(products.tagging.status), status_code=202)


@router.get("/audit", summary="Products whose merchant value contradicts a confident tag of the same name")
async def audit(
    attribute: str = Query(..., description="a taxonomy attribute, e.g. category"),
    min_score: float | None = Query(None, allow_inf_nan=False, description="default: its threshold"),
    limit: int = Query(100),
    offset: int = Query(0),
    state: ServiceState = Depends(admitted),
) -> dict[str, Any]:
    products = state.require_products()
    products.limits.check_page(offset, limit)
    rows, total, used = await run_in_threadpool(products.tagging.audit, attribute, min_score, limit, offset)
    return {
        "results": [row.as_dict() for row in rows],
        "count": len(rows),
        "total": total,
        "offset": offset,
        "limit": limit,
        "attribute": attribute,
        "min_score": used,
    }
