"""python -m indexer reembed: move a catalog into the served model's embedding space, resumably.

Every product is embedded again from its own image (the stored copy, or its URL) and committed batch by
batch, through the catalog's one writer, with the new space's label, so an interrupted run keeps its
work and the next run continues with the products still in the old space. The catalog's recorded space
changes once every product is in the new one; until then, servers of either model answer catalog
routes with 409.
"""

from __future__ import annotations

import time

from indexer import interrupts
from indexer.progress import Progress
from indexer.summary import RowIssue, RunSummary
from search.catalog import ImageRecord
from search.catalog.service import ProductService
from search.catalog.spaces import ids_outside, record_space
from search.errors import BadInput, VitrineError
from search.images.loader import ImageLoader, decode_image, is_url
from search.images.store import ImageStore
from search.model.encoder import Encoder
from search.model.space import EmbeddingSpace


def reembed(
    service: ProductService,
    encoder: Encoder,
    images: ImageLoader,
    space: EmbeddingSpace,
    *,
    batch_size: int = 16,
    progress: Progress | None = None,
) -> RunSummary:
    started = time.perf_counter()
    pending = ids_outside(service.catalog, space.key)
    summary = RunSummary("reembed", total=len(pending))
    progress = progress or Progress(len(pending), enabled=False)
    try:
        for start in range(0, len(pending), batch_size):
            interrupts.check()
            records = service.catalog.get_by_ids(pending[start : start + batch_size])
            batch, pictures = [], []
            for record in records.values():
                try:
                    decoded = [
                        decode_image(image_bytes(service.image_store, images, image), images.limits)
                        for image in record.images
                    ]
                except VitrineError as exc:
                    summary.failed.append(RowIssue("product", record.external_id, exc.message))
                    continue
                batch.append(record)
                pictures.append(decoded)
            if batch:
                vectors = iter(encoder.embed_images([picture for decoded in pictures for picture in decoded]))
                writes = [
                    service.writer.reembedded(record, [next(vectors) for _ in record.images], space.key)
                    for record in batch
                ]
                with interrupts.deferred():  # the transaction and its count: both or neither
                    service.writer.commit(writes)
                    summary.updated += len(writes)
                    summary.embedded += sum(len(record.images) for record in batch)
            progress.update(len(records), reembedded=summary.updated, failed=len(summary.failed))
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        progress.close(interrupted=summary.interrupted)
    finish(service, space, summary)
    summary.seconds = time.perf_counter() - started
    return summary


def finish(service: ProductService, space: EmbeddingSpace, summary: RunSummary) -> None:
    """After a run (of either engine): the catalog moves to ``space`` once no product is left outside
    it, and the index is rebuilt for the vectors' new values."""
    if not summary.interrupted and not ids_outside(service.catalog, space.key):
        record_space(service.catalog, space)
        summary.switched = True
        # Tags follow the vectors: the taxonomy's prompts in the new space, then every product's tags.
        service.tagging.reembed_prompts()
        service.tagging.retag_all()
    service.rebuild()


def image_bytes(image_store: ImageStore, images: ImageLoader, image: ImageRecord) -> bytes:
    """A stored image's bytes to embed again: its stored copy, else its URL fetched again."""
    if image.image_file:
        data = image_store.read(image.image_file)
        if data is None:
            raise BadInput(f"the stored image {image.image_file} is missing")
        return data
    if is_url(image.image_ref):
        return images.fetcher.fetch(image.image_ref)
    raise BadInput(f"no stored copy of {image.image_ref!r} and it is not a URL")
