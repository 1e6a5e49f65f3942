"""python -m indexer reembed: move a catalog into the served model's embedding space, resumably.

Every product is embedded again from its own image (the stored copy, or its URL) and committed batch by
batch with the new space's label, so an interrupted run keeps its work and the next run continues with
the products still in the old space. The catalog's recorded space changes once every product is in the
new one; until then, servers of either model answer catalog routes with 409.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from indexer import interrupts
from indexer.progress import Progress
from search.catalog import ImageRecord, ImageWrite, ProductRecord, ProductWrite
from search.catalog.service import ProductService
from search.encoder import Encoder
from search.errors import BadInput, VitrineError
from search.images import ImageLoader, decode_image, is_url
from search.space import EmbeddingSpace, ids_outside, record_space


@dataclass
class ReembedSummary:
    total: int = 0
    reembedded: int = 0
    failed: list[str] = field(default_factory=list)
    interrupted: bool = False
    switched: bool = False
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {**self.__dict__, "seconds": round(self.seconds, 3)}

    def lines(self) -> list[str]:
        out = [f"{self.reembedded} of {self.total} products re-embedded in {self.seconds:.1f} s"]
        if self.switched:
            out.append("the catalog is now in the served model's space")
        elif self.interrupted:
            out.append("INTERRUPTED: finished batches are saved; run the same command again to continue")
        if self.failed:
            out.append(
                f"{len(self.failed)} product(s) failed and keep their old vectors; fix or remove them "
                "(python -m indexer remove ID...), then run reembed again:"
            )
            out += [f"  {line}" for line in self.failed[:50]]
        return out


def reembed(
    service: ProductService,
    encoder: Encoder,
    images: ImageLoader,
    space: EmbeddingSpace,
    *,
    batch_size: int = 16,
    progress: Progress | None = None,
) -> ReembedSummary:
    started = time.perf_counter()
    pending = ids_outside(service.catalog, space.key)
    summary = ReembedSummary(total=len(pending))
    progress = progress or Progress(len(pending), enabled=False)
    try:
        for start in range(0, len(pending), batch_size):
            interrupts.check()
            records = service.catalog.get_by_ids(pending[start : start + batch_size])
            writes, pictures = [], []
            for record in records.values():
                try:
                    decoded = [
                        decode_image(_image_bytes(service, images, image), images.limits)
                        for image in record.images
                    ]
                except VitrineError as exc:
                    summary.failed.append(f"{record.external_id}: {exc.message}")
                    continue
                writes.append(_write(record, space.key))
                pictures += decoded
            if writes:
                vectors = iter(encoder.embed_images(pictures))
                for write in writes:
                    for image in write.images or ():
                        image.embedding = next(vectors)
                service.catalog.upsert(writes)
                summary.reembedded += len(writes)
            progress.update(len(records), reembedded=summary.reembedded, failed=len(summary.failed))
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        progress.close()
    if not summary.interrupted and not ids_outside(service.catalog, space.key):
        record_space(service.catalog, space)
        summary.switched = True
    service.rebuild()
    summary.seconds = time.perf_counter() - started
    return summary


def _image_bytes(service: ProductService, images: ImageLoader, image: ImageRecord) -> bytes:
    if image.image_file:
        path = service.image_store.path(image.image_file)
        if path is None:
            raise BadInput(f"the stored image {image.image_file} is missing")
        return path.read_bytes()
    if is_url(image.image_ref):
        return images.fetcher.fetch(image.image_ref)
    raise BadInput(f"no stored copy of {image.image_ref!r} and it is not a URL")


def _write(record: ProductRecord, key: str) -> ProductWrite:
    """Every image of the product keeps its id (its vector id) and gets a vector of space ``key``."""
    return ProductWrite(
        external_id=record.external_id,
        title=record.title,
        category=record.category,
        attributes=record.attributes,
        images=[
            ImageWrite(
                image.image_ref, image.image_sha256, image.image_file, embedding_model=key, keep_id=image.id
            )
            for image in record.images
        ],
    )
