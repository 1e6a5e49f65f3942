"""POST / : the Hugging Face Inference Endpoint contract. Translation only; the logic is in search/."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool

from api.body import read_json
from api.deps import get_state
from api.state import ServiceState

router = APIRouter()


@router.post("/", summary="Inference: zero_shot, image_embedding, text_embedding or similarity")
async def predict(request: Request, state: ServiceState = Depends(get_state)) -> Any:
    payload = await read_json(request, state.settings.max_request_bytes)
    runtime = state.require_runtime()
    with state.admit():
        return await run_in_threadpool(runtime.inference, payload)
