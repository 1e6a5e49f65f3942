"""``ProductService``: what the API and the indexer's commands call, wired (in ``search.wiring``) from the
catalog's parts: the store, index synchronisation, search, the one writer and verification."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from search.catalog.duplicate_groups import DuplicateService
from search.catalog.filters import Filters
from search.catalog.pgvector.index import PgVectorIndex
from search.catalog.pgvector.sync import PgVectorSync
from search.catalog.pgvector.table import PgVectorSpec
from search.catalog.pgvector.verify import verify_vector_table
from search.catalog.plan import ProductDraft, ProductPatch
from search.catalog.query import ListAnswer, SearchAnswer, SearchLimits, SearchQuery
from search.catalog.records import ProductRecord
from search.catalog.retrieval import VectorSync
from search.catalog.search import CatalogSearch
from search.catalog.store import Catalog
from search.catalog.tag_service import TaggingService
from search.catalog.transactions import ConcurrentChange, MissingEmbedding
from search.catalog.verify import VerifyReport, verify_catalog
from search.catalog.writer import CatalogWriter, ImagesRead
from search.errors import BadInput, NotFound
from search.images.store import ImageStorage
from search.index.spec import IndexSpec
from search.index.vector_index import VectorIndex


@dataclass
class WriteResult:
    status: str  # created | updated | unchanged
    record: ProductRecord
    changes: dict[str, Any]
    # What the new or changed images duplicate: [{"id", "score", "exact"}], best first.
    possible_duplicates: list[dict[str, Any]] = field(default_factory=list)


class ProductService:
    def __init__(
        self,
        catalog: Catalog,
        *,
        sync: VectorSync,
        finder: CatalogSearch,
        writer: CatalogWriter,
        image_store: ImageStorage,
        limits: SearchLimits,
        tagging: TaggingService | None = None,
        duplicates: DuplicateService | None = None,
    ) -> None:
        self.duplicates = duplicates
        self.catalog = catalog
        self.sync = sync
        self.finder = finder
        self.writer = writer
        self.image_store = image_store
        self.limits = limits
        # Taxonomy, re-tagging, calibration and audit.
        self.tagging = tagging or TaggingService(catalog, sync.model, writer.encoder)

    @property
    def model(self) -> str:
        return self.sync.model

    @property
    def index_spec(self) -> IndexSpec | PgVectorSpec:
        return self.sync.spec  # type: ignore[attr-defined]

    @property
    def vector_backend(self) -> str:
        """Which backend searches the vectors: faiss (an index in this process) or pgvector."""
        return self.sync.backend

    # Index ------------------------------------------------------------------------------------------

    @property
    def index(self) -> VectorIndex | PgVectorIndex:
        return self.sync.index

    @property
    def index_path(self) -> Path | None:
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
        self.limits.check_page(offset, limit)
        self.limits.check_facets(facets or [])
        where = filters.clause()
        ids = self.catalog.list_ids(where, offset, limit)
        records = self.catalog.get_by_ids(ids)
        return ListAnswer(
            [records[i] for i in ids if i in records],
            self.catalog.count(where),
            self.catalog.facet_counts(where if filters else None, facets) if facets else None,
        )

    # Writes: through the one writer, one id at a time in this process -------------------------------

    def put(self, draft: ProductDraft) -> WriteResult:
        """Create or replace a product (fields left out are cleared; images left out are kept)."""
        # Read before taking the product's lock: a slow origin must not hold up other writes of its
        # stripe. An API write re-reads a URL it is given (refetch): the caller may have changed it.
        read = self.writer.read_images(draft.images, None, refetch=True)
        with self.writer.locks.hold([draft.external_id]):
            return self._write(draft, read, patch=None)

    def patch(self, patch: ProductPatch) -> WriteResult:
        """Change only the given fields (an attribute set to null is removed); never creates."""
        with self.catalog.on_primary():  # a product just made on another replica may not be on the standby
            self.get(patch.external_id)  # 404 before any image is fetched
        read = self.writer.read_images(patch.images, None, refetch=True)
        with self.writer.locks.hold([patch.external_id]):
            return self._write(None, read, patch=patch)

    def _write(self, draft: ProductDraft | None, read: ImagesRead, patch: ProductPatch | None) -> WriteResult:
        """Plan against what is stored now and commit. If another process changed the product between
        the two (removed it, or replaced an image the plan kept), plan once more on what it left."""
        for attempt in (1, 2):
            with self.catalog.on_primary():  # a standby may lag: plan against what the commit replaces
                stored = self.catalog.get(patch.external_id if patch else draft.external_id)  # type: ignore[union-attr]
            if patch is not None:
                if stored is None:
                    raise NotFound(f"no product with id {patch.external_id!r}")
                draft = patch.apply(stored, self.writer.limits)
            prepared = self.writer.plan(draft, stored, read)  # type: ignore[arg-type]
            if prepared.plan.kind == "unchanged":
                return WriteResult("unchanged", stored, {})  # type: ignore[arg-type]
            prepared.plan.write.must_exist = patch is not None  # type: ignore[union-attr]
            try:
                committed = self.writer.commit([prepared])
            except (MissingEmbedding, ConcurrentChange):
                if attempt == 2:
                    raise BadInput("the product changed while it was being written; retry") from None
                continue
            self.refresh()  # the writer's process searches its own write at once
            record = committed.records[0]
            return WriteResult(
                "created" if committed.created[0] else "updated",
                record,
                prepared.plan.changes,
                self._after_write(record, {record.images[i].id for i in prepared.plan.embed}),
            )
        raise AssertionError("unreachable")

    def remove(self, external_ids: list[str]) -> list[str]:
        with self.writer.locks.hold(external_ids):
            removed = self.writer.remove(external_ids)
        self.refresh()
        if removed and self.duplicates is not None:
            self.duplicates.catch_up(required=False)
        return removed

    def _after_write(self, record: ProductRecord, new_images: set[int]) -> list[dict[str, Any]]:
        """Duplicate groups caught up with the write (collapse is right at once), and what its new
        images duplicate."""
        if self.duplicates is None:
            return []
        self.duplicates.catch_up(required=False)
        matches = self.duplicates.of_new_images(record, new_images)
        names = {
            pid: r.external_id for pid, r in self.catalog.get_by_ids([m.product for m in matches]).items()
        }
        return [
            {"id": names[m.product], "score": m.score, "exact": m.exact}
            for m in matches
            if m.product in names
        ]

    # Health -----------------------------------------------------------------------------------------

    def verify(self) -> VerifyReport:
        """Prove the index file plus the change log (pgvector: the vector table) equals the database,
        vector for vector."""
        if isinstance(self.sync, PgVectorSync):
            return verify_vector_table(self.sync, self.image_store)
        return verify_catalog(self.sync, self.image_store)  # type: ignore[arg-type]

    def stats(self) -> dict[str, Any]:
        self.refresh()
        return {
            "products": self.catalog.count(),
            "images": self.catalog.count_images(),
            "images_by_model": self.catalog.count_by_model(),
            "vector_backend": self.vector_backend,
            "index_vectors": len(self.index),
            "index_type": self.index_spec.describe(self.index.kind),
            "index": self.index.describe(),
            "embedding_dim": self.dim,
            "model": self.model,
            "database_revision": self.catalog.revision(),
            "index_revision": self.index.revision,
            "index_file": str(self.index_path) if self.index_path else None,
        }
