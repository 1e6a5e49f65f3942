"""``PgVectorSync``: what ``IndexSync`` is for the FAISS backend, for vectors that live in the database.

There is nothing to catch up or save: a commit is searchable at once, in every process. Start-up makes
the table ready (created if missing, filled from the stored vectors of a catalog that FAISS served, its
index built when due) and hands the catalog the writer of its rows. The maintenance commands map onto
the table: ``rebuild`` fills missing rows and builds the vector index again (IVFFlat lists fitted to
today's size), ``compact`` prunes the removal log (only FAISS caches read it).

The index's search breadth is measured as FAISS's probe count is (pgvector/tuning.py): before the first
query where the model is loaded (on the text tower's embeddings of the catalog's titles), again in the
background on a server once enough served queries are logged or the index was rebuilt, and by
``indexer tune``. The measurement is stored in the database: replicas serve the one that measured.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from search.catalog.pgvector import tuning
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
from search.index.query_log import QueryLog
from search.index.tuning_queries import TextQueries, TuningQueries

log = logging.getLogger(__name__)

# How often a process re-reads the vector index's definition and stored measurement when no write
# changed the revision (seconds).
INDEX_RECHECK_S = 10.0


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
        embed_texts: Callable[[Sequence[str]], np.ndarray] | None = None,
        query_log_path: Path | None = None,
        tune_in_background: bool = False,
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
        # Text-side queries served by this process, to measure the breadth on (search.index.query_log).
        self.query_log = QueryLog(query_log_path) if query_log_path is not None else None
        self.tuning_queries = TuningQueries(self.query_log, embed_texts, catalog.sample_texts)
        self.tune_in_background = tune_in_background
        self._tuned_at = 0  # query_log.added at the last measurement
        self._checked_at = time.monotonic()
        self._tune_thread: threading.Thread | None = None
        self._lock = threading.Lock()
        catalog.vector_rows = VectorRows(self.space, self.dim)
        # prepare=False (verify) leaves the table as it is: verify reports what is missing.
        if prepare and self.dim:
            self.prepare()
        self.index = PgVectorIndex(catalog, model, self.dim, spec).refresh()
        if prepare and embed_texts is not None and self._needs_tuning():
            self.measure(self.tuning_queries.choose(self.dim or 0))  # before the first query

    def prepare(self) -> None:
        with self.catalog.engine.begin() as connection:
            ensure_table(connection, self.dim)
        copied = fill_missing(self.catalog.engine, self.space, self.dim)
        if copied:
            log.info("pgvector: copied %d stored vectors into image_vectors", copied)
        create_index(self.catalog.engine, self.spec)

    def refresh(self) -> PgVectorIndex:
        """The index facts at the database's revision (the vectors themselves are always current)."""
        # Another process may have rebuilt the index or measured it again without writing a product.
        recheck = time.monotonic() - self._checked_at > INDEX_RECHECK_S
        if self.catalog.revision() != self.index.revision or recheck:
            self._checked_at = time.monotonic()
            self.index.refresh()
            if not self.index.dim and self.catalog.vector_rows is not None and self.catalog.vector_rows.dim:
                self.dim = self.index.dim = self.catalog.vector_rows.dim  # fixed by the first write
        self._tune_if_due()
        return self.index

    # The search breadth ----------------------------------------------------------------------------------

    def _needs_tuning(self) -> bool:
        """An approximate index whose breadth is guessed, or measured on far proxies while this process
        has the text tower to measure with."""
        index = self.index
        if index.definition is None or self.spec.configured_breadth:
            return False
        if index.breadth_source == "guessed":
            return True
        return index.tuning is not None and self.tuning_queries.guessed(index.tuning.text_source)

    def measure(self, text: TextQueries) -> dict[str, Any] | None:
        """Measure the breadth on ``text`` and image-like samples, store it, and serve it; None while
        another process measures (its result is read by a later refresh)."""
        index = self.index
        if index.definition is None or not self.dim:
            return None
        with tuning.one_at_a_time(self.catalog.engine) as held:
            if not held:
                log.info("another process is measuring the vector index's breadth; serving %d", index.breadth)
                return None
            measured = tuning.measure(
                self.catalog,
                space=self.space,
                dim=self.dim,
                spec=self.spec,
                definition=index.definition,
                lists=index.lists,
                size=len(index),
                text_queries=text,
                target=self.spec.recall_target,
            )
            tuning.save(self.catalog.engine, measured)
        index.refresh()
        log.info(
            "pgvector breadth measured on %s: %d (recall@10 %s, %.0f s)",
            measured.text_source,
            measured.breadth,
            measured.recall,
            measured.seconds,
        )
        return index.describe()

    def _tune_if_due(self) -> None:
        """On a server: measure again in a thread once enough served queries are logged since the last
        measurement, or when the index was rebuilt under a guessed breadth (searches keep the current
        breadth until the new one is stored)."""
        if not self.tune_in_background or self.spec.configured_breadth or self.index.definition is None:
            return
        served = self.tuning_queries.due(self._tuned_at)
        rebuilt = self.index.breadth_source == "guessed" and self.tuning_queries.embed_texts is not None
        if not (served or rebuilt):
            return
        with self._lock:
            if self._tune_thread is not None and self._tune_thread.is_alive():
                return
            self._tuned_at = self.query_log.added if self.query_log is not None else 0
            self._tune_thread = threading.Thread(target=self._measure_quietly, name="vitrine-pgvector-tune")
            self._tune_thread.daemon = True
            self._tune_thread.start()

    def _measure_quietly(self) -> None:
        try:
            self.measure(self.tuning_queries.choose(self.dim or 0))
            self.save()  # the served queries it measured on, for the next start
        except Exception:
            log.exception("measuring the pgvector breadth failed; the current breadth keeps serving")

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
        self.index.refresh()
        if not self.spec.configured_breadth:
            self.measure(self.tuning_queries.choose(self.dim))  # far proxies where no model is loaded
        return len(self.index)

    def compact(self) -> int:
        """Prune the whole removal log: only FAISS caches read it."""
        self.index.refresh()
        return self.catalog.prune_removals(self.index.revision)

    def save(self) -> None:
        """The served-query sample (the vectors and the measured breadth are the database's)."""
        if self.query_log is not None:
            self.query_log.save()

    def checkpoint(self) -> None:
        self.refresh()

    def tune(self, text_samples: np.ndarray | None = None) -> dict[str, Any]:
        """`indexer tune`: measure the breadth (on ``text_samples`` if given) and store it."""
        self.refresh()
        if self.index.definition is None:
            return self.index.describe()  # exact: nothing to measure
        if self.spec.configured_breadth:
            return {
                **self.index.describe(),
                "note": "the breadth is configured (VITRINE_PGVECTOR_PROBES / VITRINE_PGVECTOR_EF_SEARCH); "
                "set it to 0 to have it measured",
            }
        text = (
            TextQueries(np.asarray(text_samples, np.float32), f"{len(text_samples)} given queries")
            if text_samples is not None
            else self.tuning_queries.choose(self.dim or 0)
        )
        facts = self.measure(text)
        if facts is None:
            return {**self.index.describe(), "note": "another process is measuring; run it again later"}
        return facts

    def start_background_rebuild(self) -> threading.Thread | None:
        return None
