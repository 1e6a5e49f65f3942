"""Index synchronisation: the in-memory vector index kept at the database's revision.

The index maps image (vector) ids to vectors and knows nothing of products. Any process brings its
copy up to date by applying the changes since the revision it reflects (one small query when nothing
changed), so a server sees what an indexer run in another process committed, without a restart. An
index the catalog has outgrown is rebuilt: in a background thread on a server (searches keep using the
current one), in the open by batch jobs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from search.catalog.records import ChangesPruned
from search.catalog.store import Catalog
from search.index import IndexFileError, IndexSpec, VectorIndex
from search.index.query_log import QueryLog
from search.index.tuning_queries import TuningQueries

log = logging.getLogger(__name__)


class IndexSync:
    backend = "faiss"

    def __init__(
        self,
        catalog: Catalog,
        *,
        model: str,
        index_path: Path,
        dim: int | None,
        spec: IndexSpec,
        load: bool = True,
        rebuild_in_background: bool = False,
        embed_texts: Callable[[Sequence[str]], np.ndarray] | None = None,
    ) -> None:
        self.catalog = catalog
        self.model = model
        self.index_path = index_path
        self.spec = spec
        self.dim = dim or catalog_dim(catalog, model)
        self._lock = threading.Lock()
        self.rebuild_in_background = rebuild_in_background
        self._rebuild_thread: threading.Thread | None = None
        # Text-like queries seen, to measure and tune the approximate index on (search.index).
        self.query_log = QueryLog(index_path.with_name(index_path.name + ".queries.npy"))
        self.tuning_queries = TuningQueries(self.query_log, embed_texts, catalog.sample_texts)
        self._tuned_at = 0  # query_log.added at the last tuning
        self._retune_thread: threading.Thread | None = None
        # load=False leaves the index file untouched (verify inspects it as it is).
        self.index = self._open() if load else VectorIndex(self.dim or 0, model, 0, spec)
        if load:
            self._tune_if_guessed()  # e.g. a file built by `indexer import`, where no model was loaded
            self._rebuild_if_due()  # e.g. an exact index file of a catalog that has outgrown it

    def _open(self) -> VectorIndex:
        try:
            index = self.load_file()
            if index.revision > self.catalog.revision():
                raise IndexFileError("index file is newer than the database (restored from a backup?)")
        except IndexFileError as exc:
            if self.index_path.exists() or self.catalog.count_images(self.model):
                log.warning("index file unusable (%s); rebuilding it from the database", exc)
            return self._build(save=True)
        return self.apply_changes(index)

    def load_file(self) -> VectorIndex:
        return VectorIndex.load(self.index_path, model=self.model, dim=self.dim or 0, spec=self.spec)

    def empty(self) -> VectorIndex:
        return VectorIndex(self.dim or 0, self.model, 0, self.spec)

    def _build(self, save: bool) -> VectorIndex:
        revision = self.catalog.revision()
        if not self.dim:
            return VectorIndex(0, self.model, revision, self.spec)
        text = self.tuning_queries.choose(self.dim)
        index = VectorIndex.build(
            self.dim,
            self.model,
            revision,
            self.spec,
            self.catalog.iter_embeddings(self.model),
            count=self.catalog.count_images(self.model),
            path=self.index_path,
            text_samples=text.vectors,
            text_source=text.source,
        )
        # Writes that landed while we read are picked up by the next refresh (revision is from before).
        if save:
            index.save(self.index_path)
        return index

    def apply_changes(self, index: VectorIndex) -> VectorIndex:
        """``index`` brought up to the database's revision (a new one if its dimension was unknown)."""
        pending = self.catalog.changed_images(index.revision)
        if pending > max(50_000, len(index) // 2):
            # A bulk load: a fresh build streams from the database instead of holding every change.
            log.info("%d changed images: rebuilding the index from the database", pending)
            return self.apply_changes(self._build(save=False))
        try:
            changes = self.catalog.changes_since(index.revision, self.model)
        except ChangesPruned as exc:
            log.warning("%s: rebuilding the index from the database", exc)
            return self.apply_changes(self._build(save=False))
        if changes.revision <= index.revision:
            # Nothing new, or read on a standby behind a state this index already reflects (read from
            # the primary while the standby had not replayed this process's write): never go back.
            return index
        if changes.removed_ids:
            index.remove(changes.removed_ids)
        if len(changes.upserted_ids):
            if index.dim == 0:  # the first vectors of an empty catalog fix the dimension
                self.dim = int(changes.upserted_vectors.shape[1])
                index = VectorIndex(self.dim, self.model, index.revision, self.spec)
            index.upsert(changes.upserted_ids, changes.upserted_vectors)
        index.revision = changes.revision
        return index

    def refresh(self) -> VectorIndex:
        """The in-memory index at the database's revision."""
        if self.catalog.revision() != self.index.revision:
            with self._lock:
                self.index = self.apply_changes(self.index)
            self._rebuild_if_due()
        self._retune_if_due()
        return self.index

    def _rebuild_if_due(self) -> None:
        if self.rebuild_in_background and self.index.wants_rebuild():
            self.start_background_rebuild()

    def rebuild(self) -> int:
        with self._lock:
            self.index = self.apply_changes(self._build(save=False))
            self.save()
            self.index.remove_stale_parts(self.index_path)
            return len(self.index)

    def start_background_rebuild(self) -> threading.Thread | None:
        """Build a fresh index from the database in a thread; searches keep using the current one.

        The new index catches up with writes made meanwhile (the change log), is saved (its parts first,
        the index file's rename last) and swapped in. If the build fails or the process dies, the
        previous index file and the current in-memory index stay as they were.
        """
        with self._lock:
            if self._rebuild_thread is not None and self._rebuild_thread.is_alive():
                return None
            self._rebuild_thread = threading.Thread(
                target=self._rebuild_and_swap, name="vitrine-index-rebuild", daemon=True
            )
            self._rebuild_thread.start()
            return self._rebuild_thread

    def _rebuild_and_swap(self) -> None:
        try:
            fresh = self._build(save=False)
            with self._lock:
                fresh = self.apply_changes(fresh)
                fresh.save(self.index_path)
                self.index = fresh
            fresh.remove_stale_parts(self.index_path)
            log.info("index rebuilt in the background: %s", fresh.describe()["description"])
        except Exception:
            log.exception("background index rebuild failed; the previous index keeps serving")

    def tune(self, text_samples: np.ndarray | None = None) -> dict[str, Any]:
        """Measure recall@10 of the index against exact search (image-like and text-like samples),
        re-choose its parameters, save them with the index, and return the facts."""
        self.checkpoint()
        if text_samples is not None:
            facts = self.index.tune(text_samples, f"{len(text_samples)} given queries")
        else:
            text = self.tuning_queries.choose(self.dim or 0)
            facts = self.index.tune(text.vectors, text.source)
        self.save()
        return facts

    def _tune_if_guessed(self) -> None:
        """Before the first query: an IVF index tuned on far proxies is re-tuned on the text tower's
        queries (far proxies are a guess at where text queries fall, not a measurement)."""
        if self.index.kind != "ivf":
            return
        source = self.index.describe().get("tuning_samples", {}).get("text_source")
        if self.tuning_queries.guessed(source):
            text = self.tuning_queries.choose(self.dim or 0)
            facts = self.index.tune(text.vectors, text.source)
            self.save()
            log.info("index tuned on %s: %s", text.source, facts.get("measured_recall_at_10"))

    def _retune_if_due(self) -> None:
        """On a server: once enough served queries are logged, re-tune on them in a thread (searches keep
        using the current probe count until the new one is measured)."""
        if self.index.kind != "ivf" or not self.rebuild_in_background:
            return
        if not self.tuning_queries.due(self._tuned_at):
            return
        with self._lock:
            if self._retune_thread is not None and self._retune_thread.is_alive():
                return
            self._tuned_at = self.query_log.added
            self._retune_thread = threading.Thread(
                target=self._retune, name="vitrine-index-retune", daemon=True
            )
            self._retune_thread.start()

    def _retune(self) -> None:
        try:
            text = self.tuning_queries.choose(self.dim or 0)
            facts = self.index.tune(text.vectors, text.source)
            with self._lock:
                self.save()
            log.info("index re-tuned on %s: %s", text.source, facts.get("measured_recall_at_10"))
        except Exception:
            log.exception("background re-tune failed; the index keeps its probe count")

    def compact(self) -> int:
        """Save the index at the current revision, then prune the removal log through it.

        Any other process whose index is older than that revision rebuilds it from the database on its
        next refresh instead of catching up: correct, only slower once.
        """
        self.refresh()
        self.save()
        return self.catalog.prune_removals(self.index.revision)

    def checkpoint(self) -> None:
        """After a batch job: catch up and save; an index the catalog has outgrown (or whose side index
        has grown large) is rebuilt first, in the open (batch jobs have no background thread)."""
        self.refresh()
        if self.index.wants_rebuild():
            self.rebuild()
        else:
            self.save()

    def save(self) -> None:
        if self.index.dim:
            self.index.save(self.index_path)
        self.query_log.save()


def catalog_dim(catalog: Catalog, model: str) -> int | None:
    for _, vectors in catalog.iter_embeddings(model, batch=1):
        return int(vectors.shape[1])
    return None
