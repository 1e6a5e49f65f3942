"""The local engine: one process; worker threads fetch, decode and preprocess, the model embeds in the
main thread, each batch is one transaction (``indexer.pipeline``, ``indexer.reembed``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from indexer.engines import JobOptions
from indexer.manifest import Manifest
from indexer.summary import RunSummary
from search.catalog.service import ProductService
from search.images.loader import ImageLoader
from search.model.encoder import Encoder
from search.model.space import EmbeddingSpace, space_of
from search.settings import Settings


@dataclass
class LocalEngine:
    space: EmbeddingSpace
    encoder: Encoder
    images: ImageLoader

    @classmethod
    @contextlib.contextmanager
    def open(cls, settings: Settings, encoder: Encoder) -> Iterator[LocalEngine]:
        from search.wiring import build_image_loader

        images = build_image_loader(settings, encoder.info.image_size)
        try:
            yield cls(
                space_of(settings.model, encoder.info.embedding_dim, encoder.checkpoint), encoder, images
            )
        finally:
            images.close()

    def add(self, service: ProductService, manifest: Manifest, options: JobOptions) -> RunSummary:
        from indexer.pipeline import Indexer

        indexer = Indexer(
            service,
            batch_size=options.batch_size,
            workers=options.workers,
            refetch=options.refetch,
            progress=options.progress,
            progress_every=options.progress_every,
        )
        return indexer.run(manifest)

    def reembed(self, service: ProductService, options: JobOptions) -> RunSummary:
        from indexer.progress import Progress
        from indexer.reembed import reembed
        from search.catalog.spaces import ids_outside

        pending = len(ids_outside(service.catalog, self.space.key))
        progress = Progress(pending, enabled=options.progress, every=options.progress_every)
        return reembed(
            service, self.encoder, self.images, self.space, batch_size=options.batch_size, progress=progress
        )
