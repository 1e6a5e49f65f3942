"""What a distributed embedding job's workers run, without Ray itself: the read stage (fetch, decode,
hash, plan, preprocess) of ``add`` and ``reembed``, and the embed stage (the model, loaded once per
worker through the same runtime layer as the local indexer).

Items and results cross process boundaries as pickled bytes and raw float32 arrays, so any engine
can carry them. Nothing here touches the database: the driver plans again against the same stored
snapshot and commits through the catalog's one writer (``CatalogWriter.plan_embedded``).
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from search.catalog.plan import ImageSource, ProductDraft, plan_write
from search.catalog.records import ProductRecord
from search.errors import VitrineError
from search.images.store import ImageStore
from search.settings import Settings

if TYPE_CHECKING:  # torch and transformers load in the workers only
    from search.model.encoder import Encoder
    from search.model.preprocess import ImagePreprocessor
    from search.model.space import EmbeddingSpace


@dataclass
class AddItem:
    """One manifest row for the read stage: the draft and the product stored when the job started."""

    index: int  # the row's position in the manifest
    draft: ProductDraft
    stored: ProductRecord | None


@dataclass
class ReembedItem:
    index: int
    record: ProductRecord


@dataclass
class ReadResult:
    """What the read stage found for one item: the pictures' sources and stored copies, the image
    positions whose pixels follow (in order), or why the item failed."""

    index: int
    sources: list[ImageSource] | None = None
    files: dict[str, bytes] = field(default_factory=dict)
    embed: list[int] = field(default_factory=list)
    issue: str | None = None


def pack(value: object) -> bytes:
    return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def unpack(data: bytes) -> object:
    return pickle.loads(data)  # only bytes this job's own driver and workers made


def model_space(settings: Settings) -> EmbeddingSpace:
    """The embedding space of ``settings.model`` from its configuration and weight files, without
    loading the model (the driver of a distributed job never runs it)."""
    from transformers import AutoConfig

    from search.model.space import space_of
    from search.model.weights import locate_weights

    local_only = locate_weights(settings.model).local_files_only
    config = AutoConfig.from_pretrained(settings.model, local_files_only=local_only)
    return space_of(settings.model, int(config.vision_config.hidden_size))


def image_preprocessor(settings: Settings) -> ImagePreprocessor:
    """The checkpoint's own image preprocessing, resolved from its processor files. A job's driver
    resolves it once and hands it to the read tasks: they then never import transformers (seconds of
    CPU in every worker process) and need no copy of the checkpoint."""
    from transformers import AutoProcessor

    from search.model.preprocess import ImagePreprocessor
    from search.model.weights import locate_weights
    from search.wiring import quiet_transformers

    quiet_transformers()
    local_only = locate_weights(settings.model).local_files_only
    processor = AutoProcessor.from_pretrained(settings.model, local_files_only=local_only)
    return ImagePreprocessor(processor.image_processor)


class Reader:
    """The read stage in one worker process: the image loader, the image store's naming (and its
    stored copies, for reembed) and the checkpoint's preprocessing (``image_preprocessor``, resolved by
    the driver), built once per process."""

    _cached: dict[str, Reader] = {}

    def __init__(self, settings: Settings, model_key: str, preprocess: ImagePreprocessor) -> None:
        from search.catalog.writer import CatalogWriter
        from search.wiring import build_image_loader, product_limits

        self.preprocess = preprocess
        self.images = build_image_loader(settings, self.preprocess.size[0])
        self.image_store = ImageStore(settings.images_dir)
        self.model_key = model_key
        # The writer's read step needs no database: it fetches, decodes, hashes and names pictures.
        self.writer = CatalogWriter(None, self.image_store, model_key, product_limits(settings), self.images)  # type: ignore[arg-type]

    @classmethod
    def for_settings(cls, settings: Settings, model_key: str, preprocess: ImagePreprocessor) -> Reader:
        key = settings.model_dump_json() + model_key
        if key not in cls._cached:
            cls._cached[key] = cls(settings, model_key, preprocess)
        return cls._cached[key]

    def read_add(self, item: AddItem, base_dir: Path, refetch: bool) -> tuple[ReadResult, np.ndarray | None]:
        """Read a manifest row's pictures and plan its write as the local indexer does; the pixels of
        the pictures the plan embeds (None: nothing to embed)."""
        try:
            read = self.writer.read_images(item.draft.images, item.stored, base_dir=base_dir, refetch=refetch)
            plan = plan_write(item.draft, item.stored, read.sources, self.model_key)
        except Exception as exc:  # one bad row never stops the run
            return ReadResult(item.index, issue=_reason(exc)), None
        result = ReadResult(item.index, read.sources, read.files, list(plan.embed))
        if not plan.embed:
            return result, None
        return result, self.preprocess([read.pictures[i] for i in plan.embed])

    def read_reembed(self, item: ReembedItem) -> tuple[ReadResult, np.ndarray | None]:
        """A stored product's pictures (stored copies, else URLs) preprocessed to embed again."""
        from indexer.reembed import image_bytes
        from search.images.loader import decode_image

        record = item.record
        try:
            pictures = [
                decode_image(image_bytes(self.image_store, self.images, image), self.images.limits)
                for image in record.images
            ]
        except Exception as exc:
            return ReadResult(item.index, issue=_reason(exc)), None
        return ReadResult(item.index, embed=list(range(len(pictures)))), self.preprocess(pictures)


def _reason(exc: Exception) -> str:
    return exc.message if isinstance(exc, VitrineError) else f"{type(exc).__name__}: {exc}"


class Embedder:
    """The embed stage in one worker: ``settings.model`` loaded once, through the same loader and
    runtime layer as the local indexer, refusing weights of another embedding space than the job's.

    The model is loaded when the first item with pixels arrives, not when the worker starts: a rerun
    whose rows are all stored (every item skipped by its read) loads no model on any node."""

    def __init__(self, settings: Settings, model_key: str) -> None:
        if not settings.torch_threads and settings.device != "cuda":
            # A CPU worker gets every core of its machine (one worker per node embeds fastest on CPU:
            # batching does not raise throughput there); Ray's own default would be one thread.
            settings = settings.model_copy(update={"torch_threads": len(os.sched_getaffinity(0))})
        self.settings = settings
        self.model_key = model_key
        self._encoder: Encoder | None = None

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            from search.model.space import space_of
            from search.wiring import load_encoder

            encoder = load_encoder(self.settings)
            loaded = space_of(self.settings.model, encoder.info.embedding_dim, encoder.checkpoint)
            if loaded.key != self.model_key:
                raise VitrineError(
                    f"this worker's {self.settings.model} is embedding space {loaded.key}, not the job's "
                    f"{self.model_key}: every node needs the same weights"
                )
            self._encoder = encoder
        return self._encoder

    @property
    def loaded(self) -> bool:
        return self._encoder is not None

    def embed(self, pixels: list[np.ndarray | None]) -> list[np.ndarray | None]:
        """Vectors for each item's pixels, all items in one pass (None stays None)."""
        present = [p for p in pixels if p is not None and len(p)]
        if not present:
            return [None] * len(pixels)
        vectors = self.encoder.embed_pixels(np.concatenate(present))
        out: list[np.ndarray | None] = []
        offset = 0
        for p in pixels:
            if p is None or not len(p):
                out.append(None)
                continue
            out.append(vectors[offset : offset + len(p)])
            offset += len(p)
        return out
