"""The one write path: a draft is read (images fetched, decoded, hashed, stored, preprocessed), planned by
``plan_write``, embedded and committed. ``indexer add`` runs ``prepare`` in worker threads and ``commit``
in batches; ``PUT``/``PATCH`` run both for one draft. A PUT is a manifest of one row.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from search.catalog.records import ProductRecord
from search.catalog.store import Catalog
from search.catalog.writes import ImageSource, ProductDraft, WritePlan, must_read, plan_write
from search.errors import BadInput
from search.image_store import ImageStore, sha256_hex
from search.images import ImageLoader, is_url

if TYPE_CHECKING:  # the maintenance commands never load torch
    from search.encoder import Encoder


@dataclass
class PreparedWrite:
    """A draft after the read stage: its plan, and pixels of the images that need a vector."""

    draft: ProductDraft
    plan: WritePlan
    pixels: np.ndarray | None = None
    # Stored copies to write with the commit (name -> bytes): a failed commit leaves no orphan file.
    files: dict[str, bytes] = field(default_factory=dict)


@dataclass
class ImagesRead:
    """A draft's pictures once read: per image its source (None: the draft keeps the stored pictures),
    the decoded pictures by position, and the stored copies to write with the commit."""

    sources: list[ImageSource] | None
    pictures: dict[int, object] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)


class CatalogWriter:
    def __init__(
        self,
        catalog: Catalog,
        image_store: ImageStore,
        model: str,
        images: ImageLoader | None = None,
        encoder: Encoder | None = None,
    ) -> None:
        self.catalog = catalog
        self.image_store = image_store
        self.model = model
        self.images = images
        self.encoder = encoder

    def prepare(
        self,
        draft: ProductDraft,
        stored: ProductRecord | None,
        *,
        base_dir: Path | None = None,
        refetch: bool = False,
    ) -> PreparedWrite:
        """Read what must be read and plan the write. Thread-safe: no database session, no model call.

        ``base_dir``: a manifest's folder (image values are URLs or paths inside it); without it, values
        are URLs, base64 or data URIs of an API body (stored as "upload")."""
        read = self.read_images(draft.images, stored, base_dir=base_dir, refetch=refetch)
        return self.plan(draft, stored, read)

    def read_images(
        self,
        images: list[str] | None,
        stored: ProductRecord | None,
        *,
        base_dir: Path | None = None,
        refetch: bool = False,
    ) -> ImagesRead:
        """Fetch, decode, hash and name the pictures that must be read (all of them with ``refetch``,
        which needs no ``stored``: an API write reads them before it takes the product's lock)."""
        if images is None:
            return ImagesRead(None)
        sources = [ImageSource(ref, trusted=must_read(ref, stored, self.model, refetch)) for ref in images]
        read = ImagesRead(sources)
        unread = [i for i, source in enumerate(sources) if source.trusted is None]
        names = ["image" if len(sources) == 1 else f"images[{i}]" for i in unread]
        loaded = self._loader().map(
            lambda ref: self._read(str(ref), base_dir), [images[i] for i in unread], names
        )
        for position, (data, picture) in zip(unread, loaded, strict=True):
            ref = images[position]
            source = sources[position]
            source.image_sha256 = sha256_hex(data)
            if is_url(ref):
                source.image_file = None
            else:
                source.image_file = self.image_store.name_for(data)
                read.files[source.image_file] = data
                if base_dir is None:
                    source.image_ref = "upload"
            read.pictures[position] = picture
        return read

    def plan(self, draft: ProductDraft, stored: ProductRecord | None, read: ImagesRead) -> PreparedWrite:
        """The write of ``draft`` over ``stored`` with its pictures read, and pixels of those to embed."""
        plan = plan_write(draft, stored, read.sources, self.model)
        prepared = PreparedWrite(draft, plan, files=read.files)
        if plan.embed:
            prepared.pixels = self._encoder().preprocess([read.pictures[i] for i in plan.embed])
        return prepared

    def commit(self, prepared: list[PreparedWrite]) -> list[ProductRecord]:
        """Embed every pending image in one pass, then write all the drafts in one transaction."""
        records, _ = self.commit_reporting(prepared)
        return records

    def commit_reporting(self, prepared: list[PreparedWrite]) -> tuple[list[ProductRecord], list[bool]]:
        """``commit``, also saying which products were created (decided inside the transaction)."""
        to_embed = [item for item in prepared if item.pixels is not None]
        if to_embed:
            vectors = self._encoder().embed_pixels(np.concatenate([item.pixels for item in to_embed]))
            offset = 0
            for item in to_embed:
                for position in item.plan.embed:
                    item.plan.write.images[position].embedding = vectors[offset]
                    offset += 1
        writes = [item.plan.write for item in prepared if item.plan.write is not None]
        if not writes:
            return [], []
        with ExitStack() as files:
            for item in prepared:
                for data in item.files.values():
                    files.enter_context(self.image_store.stored(data, self.catalog.references_image))
            _, records, created = self.catalog.upsert_reporting(writes)
        return records, created

    def _read(self, ref: str, base_dir: Path | None) -> tuple[bytes, object]:
        loader = self._loader()
        if is_url(ref) or base_dir is None:
            data = loader.read_bytes(ref)
        else:
            data = read_local_image(base_dir, ref, loader.limits.max_bytes)
        return data, loader.decode(data)

    def _loader(self) -> ImageLoader:
        if self.images is None:
            raise BadInput("writing images needs the image loader, which is not loaded here")
        return self.images

    def _encoder(self) -> Encoder:
        if self.encoder is None:
            raise BadInput("this operation needs the model, which is not loaded here")
        return self.encoder


def read_local_image(base_dir: Path, relative: str, max_bytes: int) -> bytes:
    """A manifest's local image; the path must stay inside the manifest's folder."""
    root = base_dir.resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise BadInput(f"image path {relative!r} leaves the manifest's folder")
    if not path.is_file():
        raise BadInput(f"image file {relative!r} does not exist")
    size = path.stat().st_size
    if size > max_bytes:
        raise BadInput(
            f"image file {relative!r} is {size} bytes; the limit is {max_bytes} (VITRINE_MAX_IMAGE_BYTES)"
        )
    return path.read_bytes()
