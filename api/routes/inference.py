"""POST / : the Hugging Face Inference Endpoint contract. Translation only; the logic is in search/."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from api.body import read_request_json
from api.cancel import run_cancellable
from api.deps import admitted
from api.state import ServiceState

router = APIRouter()

# The body is read by hand (size limit, the contract's error messages), so /docs is told its shape here.
_EXAMPLES = {
    "zero_shot": {
        "value": {
            "inputs": "https://catalog.example.com/products/tile-001.jpg",
            "parameters": {"candidate_labels": ["ceramic tile", "porcelain tile", "natural stone"]},
        }
    },
    "image_embedding": {
        "value": {"inputs": ["<image1_url>", "<image2_url>"], "parameters": {"mode": "image_embedding"}}
    },
    "text_embedding": {
        "value": {"inputs": ["matte finish ceramic tile 60x60cm"], "parameters": {"mode": "text_embedding"}}
    },
    "similarity": {
        "value": {
            "inputs": {
                "image": "<image_url_or_base64>",
                "texts": ["beige ceramic floor tile", "oak flooring"],
            },
            "parameters": {"mode": "similarity"},
        }
    },
}
_REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "inputs": {
                            "description": "image URL/base64, text, arrays of them, or {image(s), text(s)}"
                        },
                        "parameters": {
                            "type": "object",
                            "properties": {
                                "mode": {
                                    "enum": ["zero_shot", "image_embedding", "text_embedding", "similarity"]
                                },
                                "candidate_labels": {"type": "array", "items": {"type": "string"}},
                                "hypothesis_template": {
                                    "type": "string",
                                    "default": "This is a photo of {}.",
                                },
                                "multi_label": {"type": "boolean", "default": False},
                                "top_k": {"type": "integer", "minimum": 1},
                            },
                        },
                    },
                },
                "examples": _EXAMPLES,
            }
        },
    }
}


@router.post(
    "/",
    summary="Inference: zero_shot, image_embedding, text_embedding or similarity",
    openapi_extra=_REQUEST_BODY,
)
@router.post("/predict", include_in_schema=False)  # the Hugging Face toolkit serves this alias too
async def predict(request: Request, state: ServiceState = Depends(admitted)) -> Any:
    components = state.require_components()  # admitted first: a busy server reads no body
    payload = await read_request_json(request, state)
    if isinstance(payload, dict) and "parameters" not in payload and request.query_params:
        # As the Hugging Face toolkit does: query parameters stand in for a missing "parameters".
        payload["parameters"] = {key: _query_value(value) for key, value in request.query_params.items()}
    return await run_cancellable(request, components.endpoint, payload)


@router.get("/", summary="Liveness, as the Hugging Face toolkit answers GET /")
async def root() -> dict[str, str]:
    return {"status": "ok"}


def _query_value(value: str) -> object:
    """Query strings carry text only: numbers and booleans are read back as such (top_k=3, multi_label=true)."""
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    try:
        return int(value)
    except ValueError:
        return value
