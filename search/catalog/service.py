"""``ProductService``: what the API and the indexer's commands call, wired from the catalog's parts:
the store, index synchronisation, search composition, the write path and verification."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from search.catalog.filters import Filters
from search.catalog.query import CatalogSearch, Mode, SearchAnswer, SearchQuery
from search.catalog.records import ProductRecord
from search.catalog.store import Catalog, MissingEmbedding
from search.catalog.sync import IndexSync
from search.catalog.verify import VerifyReport, verify_catalog
from search.catalog.writer import CatalogWriter, ImagesRead
from search.catalog.writes import ProductDraft, ProductLimits, validate_external_id
from search.errors import BadInput, NotFound
from search.image_store import ImageStore
from search.images import ImageLoader
from search.index import IndexSpec, VectorIndex
from search.settings import Settings
from search.write_locks import IdLocks

if TYPE_CHECKING:  # the maintenance commands never load torch
    from search.encoder import Encoder

MAX_LIST_LIMIT = 1000


@dataclass
class WriteResult:
    status: str  # created | updated | unchanged
    record: ProductRecord
    changes: dict[str, Any]


@dataclass
class ListAnswer:
    records: list[ProductRecord]
    total: int
    facets: dict[str, dict[str, int]] | None


class ProductService:
    def __init__(
        self,
        catalog: Catalog,
        *,
        model: str,
        index_path: Path,
        image_store: ImageStore,
        encoder: Encoder | None = None,
        images: ImageLoader | None = None,
        dim: int | None = None,
        max_k: int = 1000,
        load_index: bool = True,
        index_spec: IndexSpec | None = None,
        default_mode: Mode = "hybrid",
        lexical_weight: float = 0.5,
        rebuild_in_background: bool = False,
        limits: ProductLimits | None = None,
    ) -> None:
        self.catalog = catalog
        self.model = model
        self.image_store = image_store
        self.index_spec = index_spec or IndexSpec()
        dim = dim or (encoder.info.embedding_dim if encoder else None)
        self.sync = IndexSync(
            catalog,
            model=model,
            index_path=index_path,
            dim=dim,
            spec=self.index_spec,
            load=load_index,
            rebuild_in_background=rebuild_in_background,
        )
        self.finder = CatalogSearch(
            catalog,
            self.sync,
            encoder=encoder,
            images=images,
            max_k=max_k,
            default_mode=default_mode,
            lexical_weight=lexical_weight,
        )
        self.writer = CatalogWriter(catalog, image_store, model, images, encoder)
        self.limits = limits or ProductLimits()
        self._id_locks = IdLocks()

    # Index ------------------------------------------------------------------------------------------

    @property
    def index(self) -> VectorIndex:
        return self.sync.index

    @property
    def index_path(self) -> Path:
        return self.sync.index_path

    @property
    def dim(self) -> int | None:
        return self.sync.dim

    def refresh(self) -> None:
        self.sync.refresh()

    def rebuild(self) -> int:
        return self.sync.rebuild()

    def compact(self) -> int:
        return self.sync.compact()

    def save_index(self) -> None:
        self.sync.save()

    def checkpoint(self) -> None:
        self.sync.checkpoint()

    def tune(self, text_samples: np.ndarray | None = None) -> dict[str, Any]:
        return self.sync.tune(text_samples)

    def start_background_rebuild(self) -> threading.Thread | None:
        return self.sync.start_background_rebuild()

    # Reads ------------------------------------------------------------------------------------------

    def get(self, external_id: str) -> ProductRecord:
        record = self.catalog.get(external_id)
        if record is None:
            raise NotFound(f"no product with id {external_id!r}")
        return record

    def search(self, query: SearchQuery) -> SearchAnswer:
        return self.finder.search(query)

    def list(
        self, filters: Filters, offset: int = 0, limit: int = 100, facets: list[str] | None = None
    ) -> ListAnswer:
        """Products passing ``filters`` in id order, one page of them, with the total and facets."""
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise BadInput(f"limit must be an integer from 1 to {MAX_LIST_LIMIT}")
        if offset < 0:
            raise BadInput("offset must be an integer of 0 or more")
        where = filters.clause()
        ids = self.catalog.list_ids(where, offset, limit)
        records = self.catalog.get_by_ids(ids)
        return ListAnswer(
            [records[i] for i in ids if i in records],
            self.catalog.count(where),
            self.catalog.facet_counts(where if filters else None, facets) if facets else None,
        )

    # Writes: one path for PUT, PATCH and the indexer -------------------------------------------------

    def put(self, external_id: str, body: dict[str, Any]) -> WriteResult:
        """Create or replace a product (fields left out are cleared; images left out are kept)."""
        external_id = validate_external_id(external_id, self.limits.max_id_chars)
        if "id" in body and str(body["id"]) != external_id:
            raise BadInput(f"body id {str(body['id'])[:80]!r} differs from the path's {external_id!r}")
        draft = ProductDraft.from_row(external_id, body, self.limits)  # every field checked first
        # Read before taking the product's lock: a slow origin must not hold up other writes of its stripe.
        read = self.writer.read_images(draft.images, None, refetch=True)
        with self._id_locks.hold([external_id]):
            return self._write(draft, self.catalog.get(external_id), read)

    def patch(self, external_id: str, body: dict[str, Any]) -> WriteResult:
        """Change only the given fields (an attribute set to null is removed)."""
        if "id" in body and str(body["id"]) != external_id:
            raise BadInput(f"body id {str(body['id'])[:80]!r} differs from the path's {external_id!r}")
        changes = {k: v for k, v in body.items() if k != "id"}
        # Checked (404, 400) and read before the lock, as for PUT; planned again on what the lock sees.
        draft = ProductDraft(external_id).patched(self.get(external_id), changes, self.limits)
        read = self.writer.read_images(draft.images, None, refetch=True)
        with self._id_locks.hold([external_id]):
            stored = self.get(external_id)
            draft = ProductDraft(external_id).patched(stored, changes, self.limits)
            return self._write(draft, stored, read)

    def _write(self, draft: ProductDraft, stored: ProductRecord | None, read: ImagesRead) -> WriteResult:
        # An API write re-reads a URL it is given (refetch): the caller may have changed what it serves.
        prepared = self.writer.plan(draft, stored, read)
        plan = prepared.plan
        if plan.kind == "unchanged":
            return WriteResult("unchanged", stored, {})  # type: ignore[arg-type]
        try:
            records, created = self.writer.commit_reporting([prepared])
        except MissingEmbedding:
            # Removed by another process since it was read: without an image there is nothing to embed.
            raise BadInput("image is required for a new product (it was removed meanwhile)") from None
        self.refresh()
        return WriteResult("created" if created[0] else "updated", records[0], plan.changes)

    def remove(self, external_ids: list[str]) -> list[str]:
        _, removed = self.catalog.remove(external_ids)
        self.refresh()
        return removed

    # Health -----------------------------------------------------------------------------------------

    def verify(self) -> VerifyReport:
        """Prove the index file plus the change log equals the database, vector for vector."""
        return verify_catalog(self.sync, self.image_store)

    def stats(self) -> dict[str, Any]:
        self.refresh()
        return {
            "products": self.catalog.count(),
            "images": self.catalog.count_images(),
            "images_by_model": self.catalog.count_by_model(),
            "index_vectors": len(self.index),
            "index_type": self.index_spec.describe(self.index.kind),
            "index": self.index.describe(),
            "embedding_dim": self.dim,
            "model": self.model,
            "database_revision": self.catalog.revision(),
            "index_revision": self.index.revision,
            "index_file": str(self.index_path),
        }


def open_products(
    settings: Settings,
    encoder: Encoder | None = None,
    images: ImageLoader | None = None,
    *,
    load_index: bool = True,
    rebuild_in_background: bool = False,
    model: str | None = None,
) -> ProductService:
    """The catalog and its index (migrations must have run). Without an encoder: maintenance only.

    ``model`` is the label of the vectors to serve (the embedding space's key); default VITRINE_MODEL."""
    return ProductService(
        Catalog.open(settings.resolved_database_url),
        model=model or settings.model,
        index_path=settings.index_path,
        image_store=ImageStore(settings.images_dir),
        encoder=encoder,
        images=images,
        max_k=settings.search_max_k,
        load_index=load_index,
        index_spec=settings.index_spec,
        default_mode=settings.search_mode,
        lexical_weight=settings.hybrid_lexical_weight,
        rebuild_in_background=rebuild_in_background,
        limits=ProductLimits.from_settings(settings),
    )
