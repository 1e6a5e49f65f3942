"""Liveness, readiness and what is being served."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse

from api.deps import admitted, get_state
from api.errors import error_response
from api.state import ServiceState

router = APIRouter()
log = logging.getLogger(__name__)


@router.head("/health", include_in_schema=False)  # load balancers probe with HEAD
@router.get("/health", summary="Liveness: the process answers")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", summary="Readiness: model loaded, database and index answering, not saturated")
async def ready(state: ServiceState = Depends(get_state)) -> JSONResponse:
    if not state.ready:
        return error_response(503, state.load_error or "the model is still loading")
    if state.saturated:
        return error_response(503, "busy: every admission slot is in use (VITRINE_MAX_PENDING_REQUESTS)")
    revision = None
    if state.database_probe is not None:
        # The latest background check (api/readiness.py): no database call while the probe waits.
        check = state.database_probe.verdict()
        if check.error is not None:
            return error_response(503, f"not ready: {check.error}")
        revision = check.revision
    return JSONResponse({"status": "ready", **state.readiness(revision)})


@router.get("/info", summary="The model, runtime, device and dtype being served")
async def info(state: ServiceState = Depends(admitted)) -> dict[str, Any]:
    encoder = state.require_components().encoder.info
    return {
        "model": encoder.model_id,
        "model_type": encoder.model_type,
        "embedding_dim": encoder.embedding_dim,
        "image_size": encoder.image_size,
        "max_text_length": encoder.max_text_length,
        "runtime": encoder.runtime,
        "device": encoder.device,
        "dtype": encoder.dtype,
        "random_weights": encoder.random_weights,
        **state.model_phase(),
        **await run_in_threadpool(state.catalog_info),
    }


@router.get("/metrics", summary="Prometheus metrics (requests, latency, index size, model)")
async def metrics(state: ServiceState = Depends(get_state)) -> PlainTextResponse:
    text = await run_in_threadpool(state.render_metrics)
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4")
