"""The four endpoint modes of the Hugging Face Inference Endpoint contract, free of any web code.

The HTTP server (`api/`) and the Hugging Face custom handler (`handler.py`) both call
`InferenceService.__call__` with the decoded JSON body and return what it returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from search.errors import BadInput, TooLarge
from search.images.loader import ImageLoader, unsupported_type_message
from search.model.encoder import Encoder, cosine, sigmoid, softmax

MODES = ("zero_shot", "image_embedding", "text_embedding", "similarity")
DEFAULT_HYPOTHESIS_TEMPLATE = "This is a photo of {}."
TEXT_DETECTION_MAX_CHARS = 500


def unknown_mode_message(mode: object) -> str:
    return f"Unknown mode: {mode}. Supported: {', '.join(MODES)}"


def detect_mode(inputs: object, parameters: dict[str, Any]) -> str:
    """The mode of a request without `parameters.mode`, by the reference's table, in its order."""
    if (
        isinstance(inputs, dict)
        and ({"image", "images"} & inputs.keys())
        and ({"text", "texts"} & inputs.keys())
    ):
        return "similarity"
    if "candidate_labels" in parameters:
        return "zero_shot"
    if isinstance(inputs, list) and all(
        isinstance(item, str) and len(item) < TEXT_DETECTION_MAX_CHARS and not item.startswith("http")
        for item in inputs
    ):
        return "text_embedding"
    return "image_embedding"


@dataclass(frozen=True)
class RequestLimits:
    max_images: int
    max_texts: int
    max_text_chars: int = 4096


def fill_template(template: str, label: str, limit: int) -> str:
    """``template`` with every "{}" replaced by ``label``, built no further than ``limit`` characters.

    A template of a thousand "{}" and long labels would otherwise build megabytes of text per label
    that the model never reads (it reads the first 64 tokens).
    """
    pieces = template.split("{}")
    out = [pieces[0]]
    size = len(pieces[0])
    for piece in pieces[1:]:
        if size >= limit:
            break
        out += [label, piece]
        size += len(label) + len(piece)
    return "".join(out)[:limit]


class InferenceService:
    """Runs one endpoint request: validate, detect the mode, load images, embed, score."""

    def __init__(self, encoder: Encoder, images: ImageLoader, limits: RequestLimits) -> None:
        self.encoder = encoder
        self.images = images
        self.limits = limits

    def __call__(self, payload: object) -> Any:
        if not isinstance(payload, dict):
            raise BadInput('request body must be a JSON object: {"inputs": ..., "parameters": {...}}')
        if "inputs" not in payload:
            raise BadInput('"inputs" is required')
        inputs = payload["inputs"]
        parameters = payload.get("parameters")
        if parameters is None:
            parameters = {}
        if not isinstance(parameters, dict):
            raise BadInput('"parameters" must be a JSON object')
        mode = parameters.get("mode")
        if mode is None:
            mode = detect_mode(inputs, parameters)
        if mode == "zero_shot":
            return self.zero_shot(inputs, parameters)
        if mode == "image_embedding":
            return self.image_embedding(inputs)
        if mode == "text_embedding":
            return self.text_embedding(inputs)
        if mode == "similarity":
            return self.similarity(inputs)
        raise BadInput(unknown_mode_message(mode))

    # Modes --------------------------------------------------------------------------------------------

    def zero_shot(self, inputs: object, parameters: dict[str, Any]) -> list:
        labels = parameters.get("candidate_labels")
        if labels is None or labels == [] or labels == "":
            raise BadInput("candidate_labels is required for zero-shot classification")
        labels = self._texts(labels, "parameters.candidate_labels", allow_single=False)
        template = parameters.get("hypothesis_template", DEFAULT_HYPOTHESIS_TEMPLATE)
        if not isinstance(template, str) or "{}" not in template:
            raise BadInput('hypothesis_template must be a string containing "{}" where the label goes')
        template = template[: self.limits.max_text_chars]
        multi_label = parameters.get("multi_label", False)
        if not isinstance(multi_label, bool):
            raise BadInput("multi_label must be true or false")
        top_k = _optional_positive_int(parameters.get("top_k"), "top_k")

        images, single = self._images(inputs)
        image_vectors = self.encoder.embed_images(images)
        limit = self.limits.max_text_chars
        text_vectors = self.encoder.embed_texts([fill_template(template, label, limit) for label in labels])
        logits = self.encoder.logits(image_vectors, text_vectors)
        # Softmax over the labels sums to 1 (the reference); sigmoid is SigLIP's native, independent score.
        scores = sigmoid(logits) if multi_label else softmax(logits)
        ranked = [_rank(labels, row, top_k) for row in scores]
        return ranked[0] if single else ranked

    def image_embedding(self, inputs: object) -> list[dict[str, list[float]]]:
        if isinstance(inputs, dict) and ({"image", "images"} & inputs.keys()):
            inputs = _pick(inputs, "image", "images")
        images, _ = self._images(inputs)
        return _embedding_list(self.encoder.embed_images(images))

    def text_embedding(self, inputs: object) -> list[dict[str, list[float]]]:
        if isinstance(inputs, dict) and ({"text", "texts"} & inputs.keys()):
            inputs = _pick(inputs, "text", "texts")
        texts = self._texts(inputs, "inputs", allow_single=True)
        return _embedding_list(self.encoder.embed_texts(texts))

    def similarity(self, inputs: object) -> dict[str, Any]:
        if not isinstance(inputs, dict):
            raise BadInput(
                'similarity needs "inputs" as an object with "image" or "images" and "text" or "texts"'
            )
        if not ({"image", "images"} & inputs.keys()) or not ({"text", "texts"} & inputs.keys()):
            raise BadInput("similarity needs inputs.image or inputs.images, and inputs.text or inputs.texts")
        images, _ = self._images(_pick(inputs, "image", "images"), field="inputs.images")
        texts = self._texts(_pick(inputs, "text", "texts"), "inputs.texts", allow_single=True)
        scores = cosine(self.encoder.embed_images(images), self.encoder.embed_texts(texts))
        return {
            "similarity_scores": scores.astype(float).tolist(),
            "image_count": len(images),
            "text_count": len(texts),
        }

    # Validation ---------------------------------------------------------------------------------------

    def _images(self, inputs: object, field: str = "inputs") -> tuple[list, bool]:
        """Pictures for a single input or a batch, and whether it was a single one."""
        if isinstance(inputs, list):
            if not inputs:
                raise BadInput(f"{field} must not be an empty list")
            if len(inputs) > self.limits.max_images:
                raise TooLarge(
                    f"{field} has {len(inputs)} images; the limit is {self.limits.max_images} per request "
                    "(VITRINE_MAX_IMAGES_PER_REQUEST)"
                )
            names = [f"{field}[{i}]" for i in range(len(inputs))]
            return self.images.load_many(inputs, names), False
        if not isinstance(inputs, str):
            raise BadInput(unsupported_type_message(inputs))
        return self.images.load_many([inputs], [field]), True

    def _texts(self, value: object, field: str, *, allow_single: bool) -> list[str]:
        if isinstance(value, str) and allow_single:
            value = [value]
        if not isinstance(value, list):
            raise BadInput(f"{field} must be {'a string or ' if allow_single else ''}a list of strings")
        if not value:
            raise BadInput(f"{field} must not be an empty list")
        if len(value) > self.limits.max_texts:
            raise TooLarge(
                f"{field} has {len(value)} texts; the limit is {self.limits.max_texts} per request "
                "(VITRINE_MAX_TEXTS_PER_REQUEST)"
            )
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise BadInput(f"{field}[{i}] must be a string, not {type(item).__name__}")
        # Cut before templating and tokenising: the model reads 64 tokens of each.
        return [item[: self.limits.max_text_chars] for item in value]


def _pick(inputs: dict[str, Any], single: str, plural: str) -> object:
    if single in inputs and plural in inputs:
        raise BadInput(f"give either inputs.{single} or inputs.{plural}, not both")
    return inputs[single] if single in inputs else inputs[plural]


def _optional_positive_int(value: object, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadInput(f"{name} must be a positive integer")
    return value


def _rank(labels: Sequence[str], scores: np.ndarray, top_k: int | None) -> list[dict[str, Any]]:
    # A stable sort keeps the caller's label order among equal scores.
    order = np.argsort(-scores, kind="stable")
    if top_k is not None:
        order = order[:top_k]
    return [{"label": labels[i], "score": float(scores[i])} for i in order]


def _embedding_list(vectors: np.ndarray) -> list[dict[str, list[float]]]:
    return [{"embedding": row.astype(float).tolist()} for row in vectors]
