"""``PgVectorSync``: what ``IndexSync`` is for the FAISS backend, for vectors that live in the database.

There is nothing to catch up or save: a commit is searchable at once, in every process. Start-up makes
the table ready (created if missing, filled from the stored vectors of a catalog that FAISS served, its
index built when due) and hands the catalog the writer of its rows. The maintenance commands map onto
the table: ``rebuild`` fills missing rows and builds the vector index again (IVFFlat lists fitted to
today's size), ``compact`` prunes the removal log (only FAISS caches read it), ``tune`` says which
settings to change instead.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from search.catalog.pgvector.index import PgVectorIndex
from search.catalog.pgvector.table import (
    PgVectorSpec,
    VectorRows,
    check_available,
    create_index,
    ensure_table,
    fill_missing,
)
from search.catalog.store import Catalog
from search.catalog.sync import catalog_dim
from search.errors import Conflict

log = logging.getLogger(__name__)


class PgVectorSync:
    backend = "pgvector"

    def __init__(
        self,
        catalog: Catalog,
        *,
        model: str,
        dim: int | None,
        spec: PgVectorSpec,
        prepare: bool = True,
    ) -> None:
        check_available(catalog.engine)
        self.catalog = catalog
        self.model = model
        self.spec = spec
        # The table holds the catalog's recorded embedding space: while `indexer reembed` moves the
        # catalog to another model, its new vectors leave the table (as they leave a FAISS server's
        # index) and come back when the server starts in the new space.
        recorded = catalog.recorded_space()
        self.space = recorded[0] if recorded else model
        self.dim = (recorded[2] if recorded else dim) or catalog_dim(catalog, model)
        self.index_path = None  # no index file
        self.query_log = None  # FAISS tunes on logged queries; here the settings say the breadth
        catalog.vector_rows = VectorRows(self.space, self.dim)
        # prepare=False (verify) leaves the table as it is: verify reports what is missing.
        if prepare and self.dim:
            self.prepare()
        self.index = PgVectorIndex(catalog, model, self.dim, spec).refresh()

    def prepare(self) -> None:
        with self.catalog.engine.begin() as connection:
            ensure_table(connection, self.dim)
        copied = fill_missing(self.catalog.engine, self.space, self.dim)
        if copied:
            log.info("pgvector: copied %d stored vectors into image_vectors", copied)
        create_index(self.catalog.engine, self.spec)

    def refresh(self) -> PgVectorIndex:
        """The index facts at the database's revision (the vectors themselves are always current)."""
        if self.catalog.revision() != self.index.revision:
            self.index.refresh()
            if not self.index.dim and self.catalog.vector_rows is not None and self.catalog.vector_rows.dim:
                self.dim = self.index.dim = self.catalog.vector_rows.dim  # fixed by the first write
        return self.index

    def follow_space(self) -> None:
        """After `indexer reembed` moved the catalog to another space: the table holds the new one."""
        recorded = self.catalog.recorded_space()
        if recorded is not None and recorded[0] != self.space:
            self.space, self.dim = recorded[0], recorded[2]
            self.index.dim = recorded[2]
            self.catalog.vector_rows = VectorRows(self.space, self.dim)

    def rebuild(self) -> int:
        """Fill missing rows and build the vector index again; the number of vectors."""
        self.follow_space()
        if not self.dim:
            return 0
        self.prepare()
        create_index(self.catalog.engine, self.spec, replace=True)
        return len(self.index.refresh())

    def compact(self) -> int:
        """Prune the whole removal log: only FAISS caches read it."""
        self.index.refresh()
        return self.catalog.prune_removals(self.index.revision)

    def save(self) -> None:
        """Nothing to save: the vectors are the database's."""

    def checkpoint(self) -> None:
        self.refresh()

    def tune(self, text_samples: np.ndarray | None = None) -> dict[str, Any]:
        raise Conflict(
            "indexer tune measures the FAISS index; with VITRINE_VECTOR_BACKEND=pgvector the search "
            "breadth is VITRINE_PGVECTOR_PROBES (ivfflat) or VITRINE_PGVECTOR_EF_SEARCH (hnsw): measure "
            "recall on your data with bench/bench_pgvector.py"
        )

    def start_background_rebuild(self) -> threading.Thread | None:
        return None
