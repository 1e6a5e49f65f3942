"""The one write path of the catalog. Every write, whoever asks for it, ends in ``CatalogWriter.commit``
or ``CatalogWriter.remove``:

- the API's PUT and PATCH: ``read_images`` (outside the product's lock), then ``plan`` and ``commit``
  under it; DELETE: ``remove`` under it;
- ``indexer add``: ``prepare`` (read + plan) in worker threads, ``commit`` in batches; on Ray, the
  workers ``read_images`` and embed, and ``plan_embedded`` plans with their vectors before ``commit``;
- ``indexer import`` (vectors made elsewhere) and a distributed embedding job: ``plan_with_vectors``,
  then ``commit``;
- ``indexer reembed``: ``reembedded``, then ``commit``.

A draft is read (images fetched, decoded, hashed, named for the image store, preprocessed), planned by
``plan_write``, embedded (all pending images of a batch in one pass) and committed in one transaction.
The writer owns the product limits (read once from the settings) and the per-id locks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from search.catalog.locks import IdLocks
from search.catalog.plan import (
    ImageSource,
    ProductDraft,
    ProductLimits,
    WritePlan,
    plan_write,
    trusted_stored_image,
)
from search.catalog.records import ImageWrite, ProductRecord, ProductWrite, vector_to_bytes
from search.catalog.store import Catalog
from search.errors import BadInput
from search.images.loader import ImageLoader, is_url
from search.images.store import ImageStorage, sha256_hex

if TYPE_CHECKING:  # the maintenance commands never load torch
    from search.model.encoder import Encoder


@dataclass
class PreparedWrite:
    """A draft after the read stage: its plan, and pixels (or given vectors) of the images to embed."""

    draft: ProductDraft
    plan: WritePlan
    pixels: np.ndarray | None = None
    # Stored copies to write with the commit (name -> bytes): a failed commit leaves no orphan file.
    files: dict[str, bytes] = field(default_factory=dict)

    @property
    def to_embed(self) -> int:
        return len(self.plan.embed) if self.pixels is not None else 0


@dataclass
class ImagesRead:
    """A draft's pictures once read: per image its source (None: the draft keeps the stored pictures),
    the decoded pictures by position, and the stored copies to write with the commit."""

    sources: list[ImageSource] | None
    pictures: dict[int, object] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)


@dataclass
class Committed:
    """What a commit wrote: the products as stored now, and which of them it created."""

    records: list[ProductRecord]
    created: list[bool]
    revision: int | None = None


class CatalogWriter:
    def __init__(
        self,
        catalog: Catalog,
        image_store: ImageStorage,
        model: str,
        limits: ProductLimits,
        images: ImageLoader | None = None,
        encoder: Encoder | None = None,
    ) -> None:
        self.catalog = catalog
        self.image_store = image_store
        self.model = model
        self.limits = limits
        self.images = images
        self.encoder = encoder
        # Writes to one id run one after another in this process (PUT, PATCH and DELETE alike).
        self.locks = IdLocks()
        # Called with each commit's result (the index follows; tests count writes).
        self.listeners: list[Callable[[Committed], None]] = []

    # Drafts -----------------------------------------------------------------------------------------

    def draft(self, external_id: object, fields: dict[str, object]) -> ProductDraft:
        """A whole product from a body or row, checked against this writer's limits."""
        return ProductDraft.from_fields(external_id, fields, self.limits)

    # Reading ----------------------------------------------------------------------------------------

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
        sources, trusted = [], set()
        for ref in images:
            image = trusted_stored_image(ref, stored, self.model, refetch)
            if image is not None and image.id in trusted:
                image = None  # the same URL twice: the second is a picture of its own, so it is read
            sources.append(ImageSource(ref, stored=image))
            if image is not None:
                trusted.add(image.id)
        read = ImagesRead(sources)
        unread = [i for i, source in enumerate(sources) if source.stored is None]
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

    # Planning ---------------------------------------------------------------------------------------

    def plan(self, draft: ProductDraft, stored: ProductRecord | None, read: ImagesRead) -> PreparedWrite:
        """The write of ``draft`` over ``stored`` with its pictures read, and pixels of those to embed."""
        plan = plan_write(draft, stored, read.sources, self.model)
        prepared = PreparedWrite(draft, plan, files=read.files)
        if plan.embed:
            missing = [i for i in plan.embed if i not in read.pictures]
            if missing:  # planned against a stored image that is gone: the caller reads them all again
                raise BadInput(f"images[{missing[0]}] must be read again: the stored copy changed meanwhile")
            prepared.pixels = self._encoder().preprocess([read.pictures[i] for i in plan.embed])
        return prepared

    def plan_embedded(
        self,
        draft: ProductDraft,
        stored: ProductRecord | None,
        sources: list[ImageSource] | None,
        files: dict[str, bytes],
        vectors: dict[int, np.ndarray],
    ) -> PreparedWrite:
        """The write of ``draft`` whose pictures a distributed job's workers read (``sources``, the
        stored ``files``) and embedded (``vectors`` by image position): the same plan as ``plan``
        makes, so the same skip / update / re-embed decisions, with the workers' vectors."""
        plan = plan_write(draft, stored, sources, self.model)
        missing = [i for i in plan.embed if i not in vectors]
        if missing:  # the stored product changed since the workers planned against it
            raise BadInput(f"images[{missing[0]}] must be read again: the stored product changed meanwhile")
        for position in plan.embed:
            plan.write.images[position].embedding = np.asarray(vectors[position], dtype=np.float32)
        return PreparedWrite(draft, plan, files=files)

    def plan_with_vectors(
        self, draft: ProductDraft, stored: ProductRecord | None, vectors: list[np.ndarray]
    ) -> PreparedWrite:
        """The write of ``draft`` whose images' vectors were computed elsewhere (an imported file, a
        distributed job): a vector equal bit for bit to a stored image's keeps that image."""
        refs = draft.images or []
        if len(vectors) != len(refs):
            raise ValueError(f"{len(refs)} images but {len(vectors)} vectors")
        blobs = self.catalog.vector_bytes([stored.id]) if stored is not None else {}
        unused = {
            image.id: image
            for image in (stored.images if stored else ())
            if image.embedding_model == self.model
        }
        sources = []
        for ref, vector in zip(refs, vectors, strict=True):
            data = vector_to_bytes(vector)
            match = next((image for image in unused.values() if blobs.get(image.id) == data), None)
            if match is not None:
                unused.pop(match.id)
            sources.append(ImageSource(ref, stored=match))
        plan = plan_write(draft, stored, sources, self.model)
        for position in plan.embed:
            plan.write.images[position].embedding = np.asarray(vectors[position], dtype=np.float32)
        return PreparedWrite(draft, plan)

    def reembedded(self, record: ProductRecord, vectors: list[np.ndarray], model: str) -> PreparedWrite:
        """``record`` with a new vector of embedding space ``model`` for each of its images, in order;
        every image keeps its id (its vector id in the index)."""
        write = ProductWrite(
            record.external_id,
            record.title,
            record.category,
            record.attributes,
            images=[
                ImageWrite(
                    image.image_ref,
                    image.image_sha256,
                    image.image_file,
                    embedding=np.asarray(vector, dtype=np.float32),
                    embedding_model=model,
                    keep_id=image.id,
                )
                for image, vector in zip(record.images, vectors, strict=True)
            ],
            must_exist=True,
        )
        draft = ProductDraft(record.external_id, record.title, record.category, record.attributes)
        return PreparedWrite(draft, WritePlan("updated", write, [], {}))

    # Committing -------------------------------------------------------------------------------------

    def embed(self, prepared: list[PreparedWrite]) -> None:
        """Embed every pending image of ``prepared`` in one pass (``commit`` does it when not done yet):
        a batch job embeds first, where Ctrl-C may stop it, then commits and counts as one step."""
        to_embed = [item for item in prepared if item.pixels is not None]
        if to_embed:
            vectors = self._encoder().embed_pixels(np.concatenate([item.pixels for item in to_embed]))
            offset = 0
            for item in to_embed:
                for position in item.plan.embed:
                    item.plan.write.images[position].embedding = vectors[offset]
                    offset += 1
                item.pixels = None  # embedded: a retry of this write does not embed again

    def commit(self, prepared: list[PreparedWrite]) -> Committed:
        """Embed every pending image in one pass, then write all the drafts in one transaction."""
        self.embed(prepared)
        writes = [item.plan.write for item in prepared if item.plan.write is not None]
        if not writes:
            return Committed([], [])
        if self.image_store.in_transaction:
            blobs = {name: data for item in prepared for name, data in item.files.items()}
            revision, records, created = self.catalog.upsert_reporting(writes, blobs)
        else:
            with ExitStack() as files:
                for item in prepared:
                    for data in item.files.values():
                        files.enter_context(self.image_store.stored(data, self.catalog.references_image))
                revision, records, created = self.catalog.upsert_reporting(writes)
        result = Committed(records, created, revision)
        self._announce(result)
        return result

    def remove(self, external_ids: Iterable[str]) -> list[str]:
        """Remove products and all their images; the ids that existed."""
        revision, removed = self.catalog.remove(external_ids)
        self._announce(Committed([], [], revision))
        return removed

    def _announce(self, result: Committed) -> None:
        for listener in self.listeners:
            listener(result)

    # Parts ------------------------------------------------------------------------------------------

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
