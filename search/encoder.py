"""The SigLIP encoder: one class, one life cycle (load -> preprocess -> embed).

Numerics follow how SigLIP was trained (big_vision), which is where peers often go wrong:
- text is lower-cased and padded to ``max_length`` (64), never to the longest text of the batch: the
  text tower pools the LAST position, so a text's embedding would otherwise depend on its batch-mates;
- the text tower gets ``input_ids`` only: SigLIP attended to pad tokens in training, and a mask would
  change every embedding;
- embeddings are L2-normalised in float32, whatever dtype the model runs in.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from search.errors import ModelLoadError
from search.weights import locate_weights, ways_forward

log = logging.getLogger(__name__)

# Config key that the random-model writer sets, so a random checkpoint is never mistaken for a real one.
RANDOM_WEIGHTS_KEY = "vitrine_random_weights"

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class EncoderInfo:
    model_id: str
    model_type: str
    embedding_dim: int
    image_size: int
    max_text_length: int
    device: str
    dtype: str
    random_weights: bool


def _model_class(model_type: str) -> type:
    # Chosen from model_type, not `architectures`: the SigLIP 2 fixed-resolution configs have no
    # `architectures` key, and they are plain "siglip" models with a Gemma tokenizer.
    from transformers import SiglipModel

    classes = {"siglip": SiglipModel}
    if model_type not in classes:
        raise ModelLoadError(
            f"model_type {model_type!r} is not supported: vitrine serves SigLIP and fixed-resolution "
            "SigLIP 2 checkpoints (model_type 'siglip')"
        )
    return classes[model_type]


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("VITRINE_DEVICE=cuda but no CUDA device is available; use auto or cpu")
    return device


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    if dtype == "auto":
        # float32 on CPU keeps reference numerics; bf16 on GPU is fast and within 1e-4 cosine.
        if device == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return _DTYPES[dtype]


def _load_failure_message(model_id: str, exc: BaseException) -> str:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"Could not load the model {model_id!r}: {reason}\n{ways_forward(model_id)}"


class Encoder:
    """L2-normalised float32 embeddings of images and texts, plus SigLIP's logit scale and bias."""

    def __init__(
        self,
        model: torch.nn.Module,
        processor: object,
        *,
        model_id: str,
        device: str,
        batch_size: int = 16,
        text_cache_size: int = 4096,
    ) -> None:
        self.model = model
        self.image_processor = processor.image_processor
        self.tokenizer = processor.tokenizer
        # Right padding: the text tower pools the last position, as in training.
        self.tokenizer.padding_side = "right"
        self.device = device
        self.dtype = next(model.parameters()).dtype
        self.batch_size = batch_size
        config = model.config
        self.max_text_length = int(config.text_config.max_position_embeddings)
        self.info = EncoderInfo(
            model_id=model_id,
            model_type=config.model_type,
            embedding_dim=int(config.vision_config.hidden_size),
            image_size=int(config.vision_config.image_size),
            max_text_length=self.max_text_length,
            device=device,
            dtype=str(self.dtype).removeprefix("torch."),
            random_weights=bool(getattr(config, RANDOM_WEIGHTS_KEY, False)),
        )
        with torch.inference_mode():
            self.logit_scale = float(model.logit_scale.float().exp().item())
            self.logit_bias = float(model.logit_bias.float().item())
        # Forward passes are serialised: on CPU, concurrent passes only fight over the same cores.
        self._lock = threading.Lock()
        self._text_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._text_cache_size = text_cache_size
        self._cache_lock = threading.Lock()

    @classmethod
    def load(
        cls, model_id: str, *, device: str = "auto", dtype: str = "auto", batch_size: int = 16
    ) -> Encoder:
        """Load a checkpoint (hub id or local folder). Raises ModelLoadError with an actionable message."""
        # Decided before transformers sees the id: offline it would retry the hub for half a minute.
        local_only = locate_weights(model_id).local_files_only
        try:
            from transformers import AutoConfig, AutoProcessor

            config = AutoConfig.from_pretrained(model_id, local_files_only=local_only)
            model_cls = _model_class(config.model_type)
            resolved_device = resolve_device(device)
            torch_dtype = resolve_dtype(dtype, resolved_device)
            model = model_cls.from_pretrained(model_id, dtype=torch_dtype, local_files_only=local_only)
            model.to(resolved_device).eval()
            processor = AutoProcessor.from_pretrained(model_id, local_files_only=local_only)
        except ModelLoadError:
            raise
        except Exception as exc:  # transformers raises OSError, ValueError, HF hub errors, ...
            raise ModelLoadError(_load_failure_message(model_id, exc)) from exc
        return cls(model, processor, model_id=model_id, device=resolved_device, batch_size=batch_size)

    # Images -------------------------------------------------------------------------------------------

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """The model's own image processor (resize, rescale, normalise): float32 pixel values on CPU.

        Thread-safe and free of model calls, so callers can run it in worker threads.
        """
        return self.image_processor(images=list(images), return_tensors="pt")["pixel_values"]

    def embed_pixels(self, pixel_values: torch.Tensor) -> np.ndarray:
        out = []
        for start in range(0, len(pixel_values), self.batch_size):
            chunk = pixel_values[start : start + self.batch_size].to(self.device, self.dtype)
            with self._lock, torch.inference_mode():
                features = self.model.get_image_features(pixel_values=chunk).pooler_output
            out.append(_normalise(features))
        return np.concatenate(out) if out else np.zeros((0, self.info.embedding_dim), np.float32)

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.info.embedding_dim), np.float32)
        return self.embed_pixels(self.preprocess(images))

    # Texts --------------------------------------------------------------------------------------------

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        encoded = self.tokenizer(
            [text.lower() for text in texts],
            padding="max_length",
            max_length=self.max_text_length,
            truncation=True,
            return_tensors="pt",
        )
        return encoded["input_ids"]

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Text embeddings; exact repeats (zero-shot labels) come from an LRU cache.

        Caching is exact because a text's embedding does not depend on its batch (max_length padding).
        """
        result = np.zeros((len(texts), self.info.embedding_dim), np.float32)
        missing: dict[str, list[int]] = {}
        with self._cache_lock:
            for i, text in enumerate(texts):
                cached = self._text_cache.get(text)
                if cached is not None:
                    self._text_cache.move_to_end(text)
                    result[i] = cached
                else:
                    missing.setdefault(text, []).append(i)
        unique = list(missing)
        for start in range(0, len(unique), self.batch_size):
            chunk = unique[start : start + self.batch_size]
            input_ids = self.tokenize(chunk).to(self.device)
            with self._lock, torch.inference_mode():
                features = self.model.get_text_features(input_ids=input_ids).pooler_output
            vectors = _normalise(features)
            with self._cache_lock:
                for text, vector in zip(chunk, vectors, strict=True):
                    result[missing[text]] = vector
                    self._text_cache[text] = vector.copy()
                    if len(self._text_cache) > self._text_cache_size:
                        self._text_cache.popitem(last=False)
        return result

    # Scores -------------------------------------------------------------------------------------------

    def logits(self, image_embeddings: np.ndarray, text_embeddings: np.ndarray) -> np.ndarray:
        """SigLIP logits: cosine similarity times the learned exp(logit_scale), plus logit_bias."""
        return cosine(image_embeddings, text_embeddings) * self.logit_scale + self.logit_bias


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of L2-normalised rows: a plain dot product, in float64 for stable sums."""
    return a.astype(np.float64) @ b.astype(np.float64).T


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits))


def _normalise(features: torch.Tensor) -> np.ndarray:
    features = features.float()
    features = features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return features.cpu().numpy()
