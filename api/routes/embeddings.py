"""Embeddings for clients that speak other protocols, computed by the same modes as POST /.

- ``POST /v1/embeddings``: OpenAI's shape (the ``openai`` client works unchanged); images as URLs or
  data URIs with ``"modality": "image"``, as infinity extends it.
- ``POST /embed``: text-embeddings-inference's shape (``[[...], ...]``), which is what
  ``huggingface_hub.InferenceClient(model="http://host:8000/embed").feature_extraction`` reads.
"""

from __future__ import annotations

import base64
from typing import Any, Literal, TypeVar

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, ValidationError

from api.body import read_request_json
from api.cancel import run_cancellable
from api.deps import admitted
from api.state import ServiceState
from search.errors import BadInput

router = APIRouter()


Request_ = TypeVar("Request_", bound=BaseModel)


class EmbeddingsRequest(BaseModel):
    # Unknown OpenAI fields (user, ...) are accepted and ignored, as OpenAI-compatible servers do.
    model_config = ConfigDict(extra="ignore")

    input: str | list[str]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    modality: Literal["text", "image"] = "text"
    dimensions: int | None = None


class TeiEmbedRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    inputs: str | list[str]
    normalize: bool = True


def _parse(model: type[Request_], payload: object, what: str) -> Request_:
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise BadInput(f"invalid {what} request: {where}: {first['msg']}") from None


def _json_body(schema: dict[str, Any], example: dict[str, Any]) -> dict[str, Any]:
    content = {"application/json": {"schema": schema, "example": example}}
    return {"requestBody": {"required": True, "content": content}}


@router.post(
    "/v1/embeddings",
    summary="OpenAI-compatible embeddings of texts, or of images with modality=image",
    openapi_extra=_json_body(
        EmbeddingsRequest.model_json_schema(),
        {"model": "google/siglip2-base-patch16-512", "input": ["beige matte ceramic floor tile"]},
    ),
)
async def openai_embeddings(request: Request, state: ServiceState = Depends(admitted)) -> dict[str, Any]:
    components = state.require_components()
    body = _parse(EmbeddingsRequest, await read_request_json(request, state), "embeddings")
    inputs = [body.input] if isinstance(body.input, str) else body.input
    dim = components.encoder.info.embedding_dim
    if body.dimensions is not None and body.dimensions != dim:
        raise BadInput(f"dimensions: this model's embeddings have {dim} dimensions and cannot be shortened")
    mode = "image_embedding" if body.modality == "image" else "text_embedding"
    rows = await run_cancellable(
        request, components.endpoint, {"inputs": inputs, "parameters": {"mode": mode}}
    )
    tokens = 0 if body.modality == "image" else await run_in_threadpool(_count_tokens, components, inputs)
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": _encode(row["embedding"], body.encoding_format)}
            for i, row in enumerate(rows)
        ],
        "model": components.encoder.info.model_id,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


@router.post(
    "/embed",
    summary="Text embeddings in text-embeddings-inference's shape (for InferenceClient.feature_extraction)",
    openapi_extra=_json_body(TeiEmbedRequest.model_json_schema(), {"inputs": ["oak flooring"]}),
)
async def tei_embed(request: Request, state: ServiceState = Depends(admitted)) -> list[list[float]]:
    components = state.require_components()
    body = _parse(TeiEmbedRequest, await read_request_json(request, state), "embed")
    if not body.normalize:
        raise BadInput("normalize: vitrine's embeddings are always L2-normalised")
    rows = await run_cancellable(
        request, components.endpoint, {"inputs": body.inputs, "parameters": {"mode": "text_embedding"}}
    )
    return [row["embedding"] for row in rows]


def _encode(vector: list[float], encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        # What OpenAI sends: little-endian float32 bytes, base64 (the openai client asks for this by default).
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
    return vector


def _count_tokens(components: Any, texts: list[str]) -> int:
    encoder = components.encoder
    ids = encoder.tokenizer(
        [text.lower() for text in texts], truncation=True, max_length=encoder.max_text_length
    )
    return sum(len(row) for row in ids["input_ids"])
