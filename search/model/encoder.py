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
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from search.errors import ModelLoadError
from search.model.backends import ModelBackend, load_backend
from search.model.backends.base import normalise
from search.model.batching import BatchPolicy, TowerQueue
from search.model.preprocess import ImagePreprocessor
from search.model.weights import Checkpoint, locate_weights, ways_forward

log = logging.getLogger(__name__)

# Config key that the random-model writer sets, so a random checkpoint is never mistaken for a real one.
RANDOM_WEIGHTS_KEY = "vitrine_random_weights"
DEFAULT_MAX_TEXT_CHARS = 4096  # VITRINE_MAX_TEXT_CHARS


@dataclass(frozen=True)
class EncoderInfo:
    model_id: str
    model_type: str
    embedding_dim: int
    image_size: int
    max_text_length: int
    device: str
    dtype: str  # the precision the runtime computes in: float32, bfloat16, float16, int8
    random_weights: bool
    runtime: str = "torch"


def _check_model_type(model_type: str) -> None:
    # Chosen from model_type, not `architectures`: the SigLIP 2 fixed-resolution configs have no
    # `architectures` key, and they are plain "siglip" models with a Gemma tokenizer.
    if model_type != "siglip":
        raise ModelLoadError(
            f"model_type {model_type!r} is not supported: vitrine serves SigLIP and fixed-resolution "
            "SigLIP 2 checkpoints (model_type 'siglip')"
        )


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("VITRINE_DEVICE=cuda but no CUDA device is available; use auto or cpu")
    return device


def _checkpoint_folder(model_id: str, local_only: bool) -> str:
    """A local folder holding the whole checkpoint (a hub id: its snapshot, downloaded where missing),
    so runtimes load, hash and convert files that are all there."""
    if Path(model_id).is_dir():
        return model_id
    from huggingface_hub import snapshot_download

    return snapshot_download(model_id, local_files_only=local_only)


def _load_failure_message(model_id: str, exc: BaseException) -> str:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"Could not load the model {model_id!r}: {reason}\n{ways_forward(model_id)}"


@dataclass(frozen=True)
class BatchSettings:
    """How the scheduler batches each tower (see search/model/batching.py); None: chosen for the device."""

    image_batch: int | None = None
    text_batch: int | None = None
    max_wait_ms: float = 2.0
    image_queue_max: int = 256
    text_queue_max: int = 4096

    def image_policy(self, device: str) -> BatchPolicy:
        # Measured (bench/RESULTS.md): on 2 CPU cores batches of 2-8 images gave 0.83-0.94x the images/s
        # of batch 1 and only add latency; a GPU needs large batches to be busy.
        batch = self.image_batch or (64 if device == "cuda" else 1)
        return BatchPolicy(batch, self.max_wait_ms, self.image_queue_max)

    def text_policy(self, device: str) -> BatchPolicy:
        batch = self.text_batch or (256 if device == "cuda" else 32)
        return BatchPolicy(batch, self.max_wait_ms, self.text_queue_max)


class Encoder:
    """L2-normalised float32 embeddings of images and texts, plus SigLIP's logit scale and bias.

    Images in, vectors out: callers never see batches. Behind it, one scheduler queue per tower batches
    concurrent callers' rows into shared forward passes of the runtime adapter.
    """

    def __init__(
        self,
        backend: ModelBackend,
        processor: object,
        config: object,
        *,
        model_id: str,
        batching: BatchSettings | None = None,
        text_cache_size: int = 4096,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        self.backend = backend
        # The files the weights came from, hashed at most once (export key, embedding space).
        self.checkpoint = checkpoint
        self.processor = processor
        self.config = config
        self.image_processor = processor.image_processor
        self.preprocessor = ImagePreprocessor(processor.image_processor)
        self.tokenizer = processor.tokenizer
        # Right padding: the text tower pools the last position, as in training.
        self.tokenizer.padding_side = "right"
        choice = backend.choice
        self.device = choice.device
        self.max_text_chars = DEFAULT_MAX_TEXT_CHARS
        self.max_text_length = int(config.text_config.max_position_embeddings)
        self.info = EncoderInfo(
            model_id=model_id,
            model_type=config.model_type,
            embedding_dim=int(config.vision_config.hidden_size),
            image_size=int(config.vision_config.image_size),
            max_text_length=self.max_text_length,
            device=choice.device,
            dtype=choice.precision,
            random_weights=bool(getattr(config, RANDOM_WEIGHTS_KEY, False)),
            runtime=choice.runtime,
        )
        self.logit_scale = float(backend.logit_scale)
        self.logit_bias = float(backend.logit_bias)
        batching = batching or BatchSettings()
        # The queues read ``self.backend`` at each batch: ``use_backend`` switches runtimes between batches.
        self.images_queue = TowerQueue(
            "images",
            lambda pixels: normalise(self.backend.image_features(pixels)),
            batching.image_policy(choice.device),
            setting="VITRINE_IMAGE_QUEUE_MAX",
        )
        self.texts_queue = TowerQueue(
            "texts",
            lambda ids: normalise(self.backend.text_features(ids)),
            batching.text_policy(choice.device),
            setting="VITRINE_TEXT_QUEUE_MAX",
        )
        self._text_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._text_cache_size = text_cache_size
        self._cache_lock = threading.Lock()

    @classmethod
    def load(
        cls,
        model_id: str,
        *,
        runtime: str = "torch",
        device: str = "auto",
        dtype: str = "auto",
        cache_dir: Path | None = None,
        threads: int | None = None,
        batching: BatchSettings | None = None,
        allow_build: bool = True,
    ) -> Encoder:
        """Load a checkpoint (hub id or local folder). Raises ModelLoadError with an actionable message.

        ``allow_build`` False: runtimes whose export is not built yet are passed over (a server builds
        them in the background: ``search.model.background_export``)."""
        # Decided before transformers sees the id: offline it would retry the hub for half a minute.
        local_only = locate_weights(model_id).local_files_only
        try:
            from transformers import AutoConfig, AutoProcessor

            config = AutoConfig.from_pretrained(model_id, local_files_only=local_only)
            _check_model_type(config.model_type)
            folder = _checkpoint_folder(model_id, local_only)
            checkpoint = Checkpoint(folder)
            adapter = load_backend(
                folder,
                runtime=runtime,
                dtype=dtype,
                device=resolve_device(device),
                cache_dir=cache_dir,
                threads=threads,
                checkpoint=checkpoint,
                allow_build=allow_build,
            )
            processor = AutoProcessor.from_pretrained(model_id, local_files_only=local_only)
        except ModelLoadError:
            raise
        except Exception as exc:  # transformers raises OSError, ValueError, HF hub errors, ...
            raise ModelLoadError(_load_failure_message(model_id, exc)) from exc
        return cls(adapter, processor, config, model_id=model_id, batching=batching, checkpoint=checkpoint)

    def use_backend(self, backend: ModelBackend) -> None:
        """Serve from ``backend`` from the next batch on (a batch running now finishes on the old one).

        Both must pass the 0.999 cosine check against float32; cached text vectors are dropped all the
        same, so that every answer after the switch comes from one runtime.
        """
        choice = backend.choice
        with self._cache_lock:
            self.backend = backend
            self.info = replace(
                self.info, runtime=choice.runtime, dtype=choice.precision, device=choice.device
            )
            self._text_cache.clear()

    def with_batching(self, batching: BatchSettings) -> Encoder:
        """The same loaded model behind its own scheduler queues (another server's batching settings)."""
        return Encoder(
            self.backend,
            self.processor,
            self.config,
            model_id=self.info.model_id,
            batching=batching,
            checkpoint=self.checkpoint,
        )

    def close(self) -> None:
        self.images_queue.close()
        self.texts_queue.close()

    # Images -------------------------------------------------------------------------------------------

    def preprocess(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Resize and normalise as the checkpoint's processor does: float32 pixel values (N, 3, H, W).

        Thread-safe and free of model calls, so callers run it in their own threads while the model runs.
        """
        return self.preprocessor(images)

    def embed_pixels(self, pixel_values: np.ndarray) -> np.ndarray:
        if len(pixel_values) == 0:
            return np.zeros((0, self.info.embedding_dim), np.float32)
        return self.images_queue.run(np.asarray(pixel_values, dtype=np.float32))

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.info.embedding_dim), np.float32)
        return self.embed_pixels(self.preprocess(images))

    # Texts --------------------------------------------------------------------------------------------

    def tokenize(self, texts: Sequence[str]) -> np.ndarray:
        encoded = self.tokenizer(
            [text.lower() for text in texts],
            padding="max_length",
            max_length=self.max_text_length,
            truncation=True,
            return_tensors="np",
        )
        return encoded["input_ids"].astype(np.int64)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Text embeddings; exact repeats (zero-shot labels) come from an LRU cache.

        Caching is exact because a text's embedding does not depend on its batch (max_length padding).
        """
        # The tower reads max_text_length tokens; a longer text only costs memory (lower-casing,
        # tokenising, the cache key). No token spans more than a few dozen characters, so the cap is
        # far past the last token the model reads.
        texts = [text[: self.max_text_chars] for text in texts]
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
        if unique:
            vectors = self.texts_queue.run(self.tokenize(unique))
            with self._cache_lock:
                for text, vector in zip(unique, vectors, strict=True):
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
