"""Catalog search and product routes. Translation only: bodies parse in api.schemas, answers render in
api.views, the logic is in search.catalog."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response

from api.body import read_request_json
from api.cancel import run_cancellable
from api.deps import admitted
from api.schemas import (
    ProductBody,
    SearchBody,
    facet_list,
    parse_filters_param,
    parse_search,
    product_draft,
    product_patch,
)
from api.state import ServiceState
from api.views import product_view, search_view
from search.catalog.filters import Filters
from search.catalog.query import Example, SearchQuery
from search.catalog.records import ImageRecord
from search.catalog.service import ProductService
from search.errors import NotFound
from search.images.loader import is_url
from search.wiring import json_limits

router = APIRouter()


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    # Bodies are read by hand (size limit, {"error"} messages); /docs is told their shape here.
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


@router.post(
    "/search",
    summary="Search products by text, image, product id, vector, or a composed query",
    openapi_extra=_json_body(SearchBody.model_json_schema()),
)
async def search(request: Request, state: ServiceState = Depends(admitted)) -> Any:
    products = state.require_products()
    query = parse_search(await read_request_json(request, state), state.limits)
    answer = await run_cancellable(request, products.search, query)
    return search_view(answer, query.offset)


@router.get("/products", summary="List products with filters and paging")
async def list_products(
    limit: int = Query(100),
    offset: int = Query(0),
    filters: str | None = Query(None, description='JSON, e.g. {"color": {"in": ["red", "blue"]}}'),
    facets: str | None = Query(None, description="comma-separated fields to count, e.g. category,color"),
    state: ServiceState = Depends(admitted),
) -> dict[str, Any]:
    products = state.require_products()
    parsed = parse_filters_param(filters, state.limits, json_limits(state.settings))
    answer = await run_in_threadpool(products.list, parsed, offset, limit, facet_list(facets))
    out: dict[str, Any] = {
        "results": [product_view(record) for record in answer.records],
        "count": len(answer.records),
        "total": answer.total,
        "offset": offset,
        "limit": limit,
    }
    if answer.facets is not None:
        out["facets"] = answer.facets
    return out


@router.get("/products/{product_id}", summary="One product")
async def get_product(product_id: str, state: ServiceState = Depends(admitted)) -> dict[str, Any]:
    products = state.require_products()
    return product_view(await run_in_threadpool(products.get, product_id))


@router.get("/products/{product_id}/similar", summary="Visually similar products (never the product itself)")
async def similar(
    product_id: str,
    k: int = Query(10),
    offset: int = Query(0),
    min_score: float | None = Query(None, allow_inf_nan=False),
    category: str | None = Query(None),
    filters: str | None = Query(None, description="JSON filters, as on POST /search"),
    facets: str | None = Query(None, description="comma-separated fields to count"),
    collapse: str | None = Query(None, description="duplicates: one product per duplicate group"),
    state: ServiceState = Depends(admitted),
) -> Any:
    products = state.require_products()
    parsed = parse_filters_param(filters, state.limits, json_limits(state.settings))
    if category is not None:
        parsed = parsed.and_(Filters.parse({"category": category}, state.limits.max_filter_keys))
    query = SearchQuery(
        positive=[Example(product_id=product_id)],
        filters=parsed,
        facets=facet_list(facets),
        k=k,
        offset=offset,
        min_score=min_score,
        collapse=collapse,
    )
    answer = await run_in_threadpool(products.search, query)
    return search_view(answer, offset)


def _image_response(
    products: ProductService, product_id: str, image: ImageRecord | None, private: bool
) -> Response:
    if image is None:
        raise NotFound(f"product {product_id!r} has no such image")
    if image.image_file:
        found = products.image_store.locate(image.image_file)
        if found is None:
            raise NotFound(f"the stored image of product {product_id!r} is missing")
        media_type = products.image_store.media_type(image.image_file)
        headers = {
            # nosniff: a stored upload is only ever served as the image type it was validated as.
            "X-Content-Type-Options": "nosniff",
            # Behind a token, shared caches must not keep a copy for anyone else: private.
            "Cache-Control": f"{'private' if private else 'public'}, max-age=86400, immutable",
        }
        if isinstance(found, bytes):  # a blob of the database image store
            return Response(found, media_type=media_type, headers=headers)
        return FileResponse(found, media_type=media_type, headers=headers)
    if is_url(image.image_ref):
        return RedirectResponse(image.image_ref, status_code=307)
    raise NotFound(f"product {product_id!r} has no stored image")


@router.get("/products/{product_id}/image", summary="The product's first image (stored file or redirect)")
async def product_image(product_id: str, state: ServiceState = Depends(admitted)) -> Response:
    products = state.require_products()
    record = await run_in_threadpool(products.get, product_id)
    first = record.images[0] if record.images else None
    # In the thread pool: the database image store reads its blob there.
    return await run_in_threadpool(
        _image_response, products, product_id, first, bool(state.settings.api_tokens)
    )


@router.get("/products/{product_id}/images/{position}", summary="One of the product's images, by position")
async def product_image_at(
    product_id: str, position: int, state: ServiceState = Depends(admitted)
) -> Response:
    products = state.require_products()
    record = await run_in_threadpool(products.get, product_id)
    private = bool(state.settings.api_tokens)
    return await run_in_threadpool(_image_response, products, product_id, record.image(position), private)


_PRODUCT_BODY = ProductBody.model_json_schema() | {
    "additionalProperties": {"description": "any other key is kept as a filterable attribute"}
}


def _write_answer(result: Any) -> JSONResponse:
    return JSONResponse(
        {
            "status": result.status,
            "changes": result.changes,
            "product": product_view(result.record),
            "possible_duplicates": result.possible_duplicates,
        },
        status_code=201 if result.status == "created" else 200,
    )


@router.put(
    "/products/{product_id}",
    summary="Create or replace one product (fields left out are cleared, images kept); indexed at once",
    openapi_extra=_json_body(_PRODUCT_BODY),
)
async def put_product(
    product_id: str, request: Request, state: ServiceState = Depends(admitted)
) -> JSONResponse:
    products = state.require_products()
    draft = product_draft(product_id, await read_request_json(request, state), products.writer.limits)
    result = await run_cancellable(request, products.put, draft)
    return _write_answer(result)


@router.patch(
    "/products/{product_id}",
    summary="Change only the given fields of one product (an attribute set to null is removed)",
    openapi_extra=_json_body(_PRODUCT_BODY),
)
async def patch_product(
    product_id: str, request: Request, state: ServiceState = Depends(admitted)
) -> JSONResponse:
    products = state.require_products()
    patch = product_patch(product_id, await read_request_json(request, state), products.writer.limits)
    result = await run_cancellable(request, products.patch, patch)
    return _write_answer(result)


@router.delete("/products/{product_id}", summary="Remove one product and all its images")
async def delete_product(product_id: str, state: ServiceState = Depends(admitted)) -> dict[str, str]:
    products = state.require_products()
    removed = await run_in_threadpool(products.remove, [product_id])
    if not removed:
        raise NotFound(f"no product with id {product_id!r}")
    return {"deleted": product_id}
