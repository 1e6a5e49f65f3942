"""Near-duplicate products: one product's duplicates, the catalog's groups, and the merchandiser's
decisions. Translation only: the logic is in search.catalog.duplicate_groups (docs/duplicates.md)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool

from api.body import read_request_json
from api.deps import admitted
from api.state import ServiceState
from api.views import image_view
from search.catalog.duplicates import Match
from search.catalog.records import ProductRecord
from search.catalog.service import ProductService
from search.errors import BadInput

router = APIRouter()

_DECISION_BODY = {
    "type": "object",
    "required": ["products"],
    "properties": {
        "products": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2},
        "decision": {"enum": ["distinct", "duplicate"]},
    },
}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _match_view(match: Match, mine: ProductRecord, theirs: ProductRecord) -> dict[str, Any]:
    image = next((i for i in mine.images if i.id == match.image), None)
    other = next((i for i in theirs.images if i.id == match.other_image), None)
    view = {
        "id": theirs.external_id,
        "score": match.score,
        "image": image_view(mine, image) if image else None,
        "duplicate_image": image_view(theirs, other) if other else None,
        "exact": match.exact,
    }
    if match.decided:
        view["decision"] = "duplicate"
    return view


def _product_duplicates(
    products: ProductService, product_id: str, threshold: float | None, limit: int
) -> dict[str, Any]:
    service = products.duplicates
    matches = service.of_product(product_id, threshold, limit)
    mine = products.get(product_id)
    records = products.catalog.get_by_ids([m.product for m in matches])
    return {
        "id": product_id,
        "threshold": threshold or service.threshold(),
        "results": [_match_view(m, mine, records[m.product]) for m in matches if m.product in records],
    }


@router.get("/products/{product_id}/duplicates", summary="Other products with a near-identical image")
async def product_duplicates(
    product_id: str,
    threshold: float | None = Query(None, allow_inf_nan=False, description="cosine; default the catalog's"),
    limit: int = Query(10),
    state: ServiceState = Depends(admitted),
) -> dict[str, Any]:
    products = state.require_products()
    return await run_in_threadpool(_product_duplicates, products, product_id, threshold, limit)


def _groups(products: ProductService, threshold: float | None, offset: int, limit: int) -> dict[str, Any]:
    products.limits.check_page(offset, limit)
    groups, total, used = products.duplicates.list_groups(threshold, offset, limit)
    records = products.catalog.get_by_ids([p for group in groups for p in group.products])
    name = {pid: record.external_id for pid, record in records.items()}
    return {
        "groups": [
            {
                "products": [name[p] for p in group.products if p in name],
                "representative": name.get(group.representative),
                "min_score": group.min_score,
            }
            for group in groups
        ],
        "total": total,
        "threshold": used,
        "offset": offset,
        "limit": limit,
    }


@router.get("/duplicates", summary="Duplicate groups over the whole catalog, paged")
async def duplicate_groups(
    threshold: float | None = Query(None, allow_inf_nan=False),
    limit: int = Query(100),
    offset: int = Query(0),
    state: ServiceState = Depends(admitted),
) -> dict[str, Any]:
    products = state.require_products()
    return await run_in_threadpool(_groups, products, threshold, offset, limit)


def _decision_payload(payload: object, *, with_decision: bool) -> tuple[Any, Any]:
    if not isinstance(payload, dict):
        raise BadInput('body must be a JSON object like {"products": ["a", "b"], "decision": "distinct"}')
    unknown = sorted(set(payload) - ({"products", "decision"} if with_decision else {"products"}))
    if unknown:
        raise BadInput(f"unknown field {unknown[0]!r}")
    if with_decision and "decision" not in payload:
        raise BadInput('decision is required: "distinct" or "duplicate"')
    return payload.get("products"), payload.get("decision")


@router.post(
    "/duplicates/decisions",
    summary="Decide that two products are distinct (never reported again) or duplicates (always grouped)",
    openapi_extra=_body(_DECISION_BODY),
)
async def decide(request: Request, state: ServiceState = Depends(admitted)) -> dict[str, Any]:
    products = state.require_products()
    pair, decision = _decision_payload(await read_request_json(request, state), with_decision=True)
    names = await run_in_threadpool(products.duplicates.decide, pair, decision)
    return {"products": list(names), "decision": decision}


@router.get("/duplicates/decisions", summary="The decisions taken, oldest first")
async def decisions(
    limit: int = Query(100), offset: int = Query(0), state: ServiceState = Depends(admitted)
) -> dict[str, Any]:
    products = state.require_products()
    products.limits.check_page(offset, limit)
    rows, total = await run_in_threadpool(products.duplicates.decisions, offset, limit)
    for row in rows:
        row["decided_at"] = row["decided_at"].isoformat() if row["decided_at"] else None
    return {"decisions": rows, "total": total, "offset": offset, "limit": limit}


@router.delete(
    "/duplicates/decisions",
    summary="Take back the decision on two products",
    openapi_extra=_body(_DECISION_BODY),
)
async def forget(request: Request, state: ServiceState = Depends(admitted)) -> dict[str, Any]:
    products = state.require_products()
    pair, _ = _decision_payload(await read_request_json(request, state), with_decision=False)
    await run_in_threadpool(products.duplicates.forget, pair)
    return {"deleted": pair}
