"""Catalog search and product routes. Translation only; the logic is in search.products."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, ValidationError

from api.body import read_request_json
from api.cancel import run_cancellable
from api.deps import get_state
from api.state import ServiceState
from search.errors import BadInput, NotFound
from search.images import is_url
from search.products import Filters, product_view

router = APIRouter()


class SearchBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    text: str | None = None
    image: str | None = None
    product_id: str | None = None
    # A query embedding computed elsewhere in the served model's space (normalised by the server).
    vector: list[float] | None = None
    k: int = 10
    filters: dict[str, Any] | None = None
    min_score: float | int | None = None


def _parse_search(payload: object) -> SearchBody:
    try:
        return SearchBody.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise BadInput(f"invalid search request: {where}: {first['msg']}") from None


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    # Bodies are read by hand (size limit, {"error"} messages); /docs is told their shape here.
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


_PRODUCT_BODY = {
    "type": "object",
    "properties": {
        "image": {"type": "string", "description": "URL, base64 or data URI (required for a new product)"},
        "title": {"type": "string"},
        "category": {"type": "string"},
    },
    "additionalProperties": {"description": "any other key is kept as a filterable attribute"},
}


@router.post(
    "/search",
    summary="Search products by text, image, product id or embedding vector",
    openapi_extra=_json_body(SearchBody.model_json_schema()),
)
async def search(request: Request, state: ServiceState = Depends(get_state)) -> Any:
    products = state.require_products()
    with state.admit():
        body = _parse_search(await read_request_json(request, state))
        filters = Filters.parse(body.filters, max_keys=state.settings.max_attributes)
        return await run_cancellable(
            request,
            products.search,
            text=body.text,
            image=body.image,
            product_id=body.product_id,
            vector=body.vector,
            k=body.k,
            filters=filters,
            min_score=body.min_score,
        )


@router.get("/products/{product_id}", summary="One product")
async def get_product(product_id: str, state: ServiceState = Depends(get_state)) -> dict[str, Any]:
    products = state.require_products()
    return product_view(await run_in_threadpool(products.get, product_id))


@router.get("/products/{product_id}/similar", summary="Visually similar products (never the product itself)")
async def similar(
    product_id: str,
    k: int = Query(10, ge=1),
    min_score: float | None = Query(None, allow_inf_nan=False),
    category: str | None = Query(None),
    state: ServiceState = Depends(get_state),
) -> Any:
    products = state.require_products()
    filters = Filters(category=category) if category is not None else None
    with state.admit():
        return await run_in_threadpool(products.similar, product_id, k, filters, min_score)


@router.get("/products/{product_id}/image", summary="The product's stored image, or a redirect to its URL")
async def product_image(product_id: str, state: ServiceState = Depends(get_state)) -> Response:
    products = state.require_products()
    record = await run_in_threadpool(products.get, product_id)
    if record.image_file:
        path = products.image_store.path(record.image_file)
        if path is None:
            raise NotFound(f"the stored image of product {product_id!r} is missing")
        # nosniff: a stored upload is only ever served as the image type it was validated as.
        # Behind a token, shared caches must not keep a copy for anyone else: private.
        scope = "private" if state.settings.api_tokens else "public"
        return FileResponse(
            path,
            media_type=products.image_store.media_type(record.image_file),
            headers={
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": f"{scope}, max-age=86400, immutable",
            },
        )
    if is_url(record.image_ref):
        return RedirectResponse(record.image_ref, status_code=307)
    raise NotFound(f"product {product_id!r} has no stored image")


@router.put(
    "/products/{product_id}",
    summary="Create or update one product; indexed immediately",
    openapi_extra=_json_body(_PRODUCT_BODY),
)
async def put_product(
    product_id: str, request: Request, state: ServiceState = Depends(get_state)
) -> JSONResponse:
    products = state.require_products()
    with state.admit():
        body = await read_request_json(request, state)
        status, record = await run_cancellable(request, products.upsert, product_id, body)
    return JSONResponse(
        {"status": status, "product": product_view(record)}, status_code=201 if status == "created" else 200
    )


@router.delete("/products/{product_id}", summary="Remove one product")
async def delete_product(product_id: str, state: ServiceState = Depends(get_state)) -> dict[str, str]:
    products = state.require_products()
    removed = await run_in_threadpool(products.remove, [product_id])
    if not removed:
        raise NotFound(f"no product with id {product_id!r}")
    return {"deleted": product_id}
