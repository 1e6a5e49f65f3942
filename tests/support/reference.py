"""SigLIP computed the plain transformers way, written out independently of search/model/encoder.py:
lower-cased text, padding="max_length" to 64, input_ids only, pooler_output, L2-normalise, then
logits = cos * logit_scale.exp() + logit_bias. The numerics and reference-example tests compare with it."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoModel, AutoProcessor

DEFAULT_TEMPLATE = "This is a photo of {}."
Reference = tuple[object, object]  # (processor, model)


def load_reference(model_dir: Path) -> Reference:
    return AutoProcessor.from_pretrained(model_dir), AutoModel.from_pretrained(model_dir).eval()


def decoded(data: bytes) -> Image.Image:
    """The picture a client's bytes decode to (JPEG's losses included), as the reference sees it."""
    return Image.open(io.BytesIO(data)).convert("RGB")


def ref_image_embeddings(reference: Reference, images: list[Image.Image]) -> np.ndarray:
    processor, model = reference
    pixel_values = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        features = model.get_image_features(pixel_values=pixel_values).pooler_output
    features = features / features.norm(dim=-1, keepdim=True)
    return features.double().numpy()


def ref_text_embeddings(
    reference: Reference, texts: list[str], *, with_attention_mask: bool = False, lower: bool = True
) -> np.ndarray:
    processor, model = reference
    encoded = processor.tokenizer(
        [text.lower() if lower else text for text in texts],
        padding="max_length",
        max_length=64,
        truncation=True,
        return_tensors="pt",
    )
    kwargs = {"input_ids": encoded["input_ids"]}
    if with_attention_mask:
        kwargs["attention_mask"] = encoded["attention_mask"]
    with torch.no_grad():
        features = model.get_text_features(**kwargs).pooler_output
    features = features / features.norm(dim=-1, keepdim=True)
    return features.double().numpy()


def ref_logits(reference: Reference, image_embeddings: np.ndarray, text_embeddings: np.ndarray) -> np.ndarray:
    _, model = reference
    cos = image_embeddings @ text_embeddings.T
    return cos * model.logit_scale.exp().item() + model.logit_bias.item()


def ref_softmax(logits: np.ndarray) -> np.ndarray:
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def ref_sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-logits))


def ref_zero_shot(
    reference: Reference, images: list[Image.Image], labels: list[str], template: str = DEFAULT_TEMPLATE
) -> np.ndarray:
    """One row of softmax scores per image, in ``labels`` order."""
    texts = ref_text_embeddings(reference, [template.format(label) for label in labels])
    return ref_softmax(ref_logits(reference, ref_image_embeddings(reference, images), texts))


def ref_similarity(reference: Reference, images: list[Image.Image], texts: list[str]) -> np.ndarray:
    return ref_image_embeddings(reference, images) @ ref_text_embeddings(reference, texts).T
