"""``TaggingService``: what the API and ``indexer tag`` / ``indexer audit`` call to change the taxonomy,
re-tag the catalog (in the foreground, or in a background thread whose progress GET /taxonomy shows),
calibrate thresholds and audit merchant values.

Re-tagging reads stored image vectors only: the text tower runs once per new value text (a value whose
prompts and names are unchanged keeps its stored vector), the image tower never.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import func, select

from search.catalog.audit import Contradiction, audit_page
from search.catalog.calibration import (
    Calibration,
    Label,
    coverage_at,
    fit_threshold,
    precision_at,
    predictions,
)
from search.catalog.filters import CATEGORY
from search.catalog.schema import Product, ProductAttribute, ProductTag
from search.catalog.store import Catalog
from search.catalog.tag_store import (
    StoredTaxonomy,
    image_vectors,
    read_taxonomy,
    replace_tags,
    save_taxonomy,
)
from search.catalog.tagging import Tagger, value_embeddings
from search.catalog.taxonomy import MAX_VALUES, TagAttribute, Taxonomy, attribute_from_values
from search.errors import BadInput

if TYPE_CHECKING:
    from search.model.encoder import Encoder

log = logging.getLogger(__name__)

RETAG_BATCH = 20_000  # products per transaction: ~60 MB of 768-d vectors, a second of work
_CHUNK = 500


@dataclass
class RetagStatus:
    """A re-tag's progress. ``state``: idle | running | done | superseded (a newer version took over) |
    failed."""

    state: str = "idle"
    version: int = 0
    done: int = 0
    total: int = 0
    tags: int = 0
    seconds: float = 0.0
    error: str | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class TaggingService:
    def __init__(
        self,
        catalog: Catalog,
        model: str,
        encoder: Encoder | None = None,
        *,
        batch: int = RETAG_BATCH,
    ) -> None:
        self.catalog = catalog
        self.model = model  # the embedding space of the catalog's vectors (and so of the value vectors)
        self.encoder = encoder
        self.cache = catalog.tags  # the tagger the catalog's writes use: one per process
        self.batch = batch
        self._lock = threading.Lock()
        self._status = RetagStatus()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # The taxonomy -----------------------------------------------------------------------------------

    def stored(self) -> StoredTaxonomy | None:
        with self.catalog.engine.connect() as connection:
            return read_taxonomy(connection)

    def taxonomy(self) -> Taxonomy:
        stored = self.stored()
        return stored.taxonomy if stored is not None else Taxonomy()

    def needs_model(self, taxonomy: Taxonomy) -> bool:
        """Whether storing ``taxonomy`` embeds new texts (the model must be loaded)."""
        stored = self.stored()
        known = stored.known_vectors(self.model) if stored is not None else {}
        return any(tuple(a.prompt_pairs(v)) not in known for a in taxonomy.attributes for v in a.values)

    def set_taxonomy(self, taxonomy: Taxonomy) -> int:
        """Store ``taxonomy`` as a new version with its values' vectors; returns the version. Products
        keep their tags until re-tagged (``retag_all`` or ``start_retag``), except that tags of removed
        attributes go at once."""
        stored = self.stored()
        known = stored.known_vectors(self.model) if stored is not None else {}
        vectors = value_embeddings(taxonomy, self._embed, known.get)
        if self.encoder is not None:
            scale, bias = self.encoder.logit_scale, self.encoder.logit_bias
        elif stored is not None and stored.model == self.model:
            scale, bias = stored.logit_scale, stored.logit_bias
        else:
            raise BadInput("a taxonomy's prompts are embedded by the model, which is not loaded here")
        with self.catalog.writing() as connection:
            return save_taxonomy(connection, taxonomy, vectors, self.model, scale, bias)

    def reembed_prompts(self) -> int:
        """The stored taxonomy again, its prompts embedded by this service's model (after a re-embed)."""
        stored = self.stored()
        if stored is None or not stored.taxonomy:
            return 0
        return self.set_taxonomy(stored.taxonomy)

    def from_catalog(self, name: str, base: Taxonomy | None = None) -> Taxonomy:
        """``base`` (default: the stored taxonomy) with attribute ``name`` built from the distinct values
        the catalog has."""
        values = self.distinct_values(name)
        if len(values) < 2:
            raise BadInput(f"the catalog has {len(values)} distinct value(s) of {name!r}; tagging needs two")
        return (base if base is not None else self.taxonomy()).with_attribute(
            attribute_from_values(name, values)
        )

    def distinct_values(self, name: str) -> list[str]:
        if name == CATEGORY:
            query = select(Product.category).where(Product.category.is_not(None)).distinct()
        else:
            query = select(ProductAttribute.value).where(ProductAttribute.key == name).distinct()
        with self.catalog.engine.connect() as connection:
            values = [str(v) for v in connection.scalars(query.limit(MAX_VALUES + 1)) if str(v).strip()]
        if len(values) > MAX_VALUES:
            raise BadInput(f"{name!r} has more than {MAX_VALUES} distinct values; list the ones to tag")
        return sorted(values)

    def _embed(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        if self.encoder is None:
            raise BadInput("a taxonomy's prompts are embedded by the model, which is not loaded here")
        # The endpoint's own template filling: a one-prompt value is exactly a zero-shot label.
        from search.endpoint import fill_template

        limit = self.encoder.max_text_chars
        return self.encoder.embed_texts([fill_template(prompt, name, limit) for prompt, name in pairs])

    # Re-tagging -------------------------------------------------------------------------------------

    def retag_all(
        self,
        on_batch: Callable[[int, int], None] | None = None,
        stop: threading.Event | None = None,
    ) -> RetagStatus:
        """Tag every product by the stored taxonomy, a batch of products per transaction; stops early
        (state "superseded") when the taxonomy changes meanwhile or ``stop`` is set.
        ``on_batch(products, tags)`` after each batch."""
        started = time.perf_counter()
        status = RetagStatus("running", total=self.catalog.count())
        version = None
        last = 0
        while True:
            with self.catalog.writing() as connection:
                tagger = self.cache.current(connection)
                if tagger is None:
                    connection.execute(ProductTag.__table__.delete())
                    break
                if version is None:
                    version = status.version = tagger.version
                if tagger.version != version or (stop is not None and stop.is_set()):
                    status.state = "superseded"
                    break
                ids = list(
                    connection.scalars(
                        select(Product.id).where(Product.id > last).order_by(Product.id).limit(self.batch)
                    )
                )
                if not ids:
                    break
                written = replace_tags(connection, tagger, ids, between=True)
            last = ids[-1]
            status.done += len(ids)
            status.tags += written
            status.seconds = round(time.perf_counter() - started, 3)
            if on_batch is not None:
                on_batch(len(ids), written)
        if status.state == "running":
            status.state = "done"
        status.seconds = round(time.perf_counter() - started, 3)
        return status

    def start_retag(self) -> None:
        """Re-tag in a background thread (a server after a taxonomy change); GET /taxonomy shows it."""
        with self._lock:
            self._stop.set()  # a running re-tag of an older version ends at its next batch
            self._stop = stop = threading.Event()
            self._status = status = RetagStatus("running", version=self.cache_version())

            def run() -> None:
                def progress(products: int, tags: int) -> None:
                    status.done += products
                    status.tags += tags

                try:
                    status.total = self.catalog.count()
                    result = self.retag_all(progress, stop)
                    status.version, status.state, status.seconds = (
                        result.version,
                        result.state,
                        result.seconds,
                    )
                except Exception as exc:  # the server goes on; the status says what failed
                    log.exception("re-tagging failed")
                    status.state, status.error = "failed", f"{type(exc).__name__}: {exc}"

            self._thread = threading.Thread(target=run, name="vitrine-retag", daemon=True)
            self._thread.start()

    def wait(self, timeout: float | None = None) -> RetagStatus:
        """The background re-tag's status once it has ended (tests, shutdown)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self._status

    def stop(self) -> None:
        self._stop.set()
        self.wait(30)

    def cache_version(self) -> int:
        stored = self.stored()
        return stored.version if stored is not None else 0

    def status(self) -> dict[str, object]:
        """GET /taxonomy: the document, its version and space, and the last re-tag's progress."""
        stored = self.stored()
        return {
            "taxonomy": stored.taxonomy.as_json() if stored is not None else None,
            "version": stored.version if stored is not None else 0,
            "model": stored.model if stored is not None else None,
            "retag": self._status.as_dict(),
        }

    # Scores -----------------------------------------------------------------------------------------

    def tagger(self) -> Tagger:
        stored = self.stored()
        if stored is None or not stored.taxonomy:
            raise BadInput("no taxonomy yet: PUT /taxonomy or python -m indexer tag --taxonomy FILE")
        return stored.tagger()

    def product_scores(self, tagger: Tagger, product_ids: Sequence[int]) -> dict[int, list[np.ndarray]]:
        """Each product's scores per attribute (one row of values each), from its stored vectors."""
        with self.catalog.engine.connect() as connection:
            owners, vectors = image_vectors(connection, product_ids, tagger.model)
        if not len(owners):
            return {}
        products, blocks = tagger.product_scores(vectors, owners)
        return {int(pid): [block[i] for block in blocks] for i, pid in enumerate(products)}

    def best_scores(self, tagger: Tagger) -> list[np.ndarray]:
        """Per attribute, every product's best score (0 without an image in the space): what a threshold
        is compared with to tell whether the product gets a tag."""
        parts: list[list[np.ndarray]] = [[] for _ in tagger.taxonomy.attributes]
        last = 0
        while True:
            with self.catalog.engine.connect() as connection:
                ids = list(
                    connection.scalars(
                        select(Product.id).where(Product.id > last).order_by(Product.id).limit(self.batch)
                    )
                )
                if not ids:
                    break
                owners, vectors = image_vectors(connection, ids, tagger.model, between=True)
            last = ids[-1]
            missing = len(ids) - len(np.unique(owners))
            if len(owners):
                _, blocks = tagger.product_scores(vectors, owners)
                for part, block in zip(parts, blocks, strict=True):
                    part.append(block.max(axis=1))
            for part in parts:
                part.append(np.zeros(missing))
        return [np.concatenate(part) if part else np.zeros(0) for part in parts]

    # Calibration ------------------------------------------------------------------------------------

    def calibrate(self, labels: Sequence[Label], target: float) -> list[Calibration]:
        """Fit each labelled attribute's threshold to ``target`` precision and store those reached."""
        if isinstance(target, bool) or not 0 < target <= 1:
            raise BadInput("precision must be a number above 0 and at most 1")
        tagger = self.tagger()
        taxonomy = tagger.taxonomy
        for label in labels:
            if taxonomy.get(label.attribute) is None:
                raise BadInput(f"labels name attribute {label.attribute!r}, which the taxonomy does not have")
        rows = self._row_ids({label.id for label in labels})
        scores = self.product_scores(tagger, list(rows.values()))
        best = self.best_scores(tagger)
        reports, thresholds = [], {}
        for index, attribute in enumerate(taxonomy.attributes):
            truths: dict[int, set[str]] = {}
            for label in labels:
                if label.attribute == attribute.name and rows.get(label.id) in scores:
                    truths.setdefault(rows[label.id], set()).add(label.value)
            report = _calibrate_attribute(attribute, index, scores, truths, best[index], target)
            if report is None:
                continue
            reports.append(report)
            if report.reached:
                thresholds[attribute.name] = report.threshold
        if thresholds:
            self.set_taxonomy(taxonomy.with_thresholds(thresholds))
        return reports

    def _row_ids(self, external_ids: set[str]) -> dict[str, int]:
        ids = sorted(external_ids)
        found: dict[str, int] = {}
        with self.catalog.engine.connect() as connection:
            for start in range(0, len(ids), _CHUNK):
                query = select(Product.external_id, Product.id).where(
                    Product.external_id.in_(ids[start : start + _CHUNK])
                )
                found.update((external_id, int(row_id)) for external_id, row_id in connection.execute(query))
        return found

    # Audit ------------------------------------------------------------------------------------------

    def audit(
        self, attribute: str, min_score: float | None, limit: int, offset: int
    ) -> tuple[list[Contradiction], int, float]:
        """A page of contradictions of ``attribute``, their total, and the min_score used (default: the
        attribute's threshold)."""
        found = self.taxonomy().get(attribute)
        if found is None:
            raise BadInput(f"attribute {attribute!r} is not in the taxonomy (GET /taxonomy lists them)")
        if min_score is None:
            min_score = found.min_score
        if isinstance(min_score, bool) or not 0 <= min_score <= 1:
            raise BadInput("min_score must be a number from 0 to 1")
        with self.catalog.engine.connect() as connection:
            rows, total = audit_page(connection, found, float(min_score), limit, offset)
        return rows, total, float(min_score)

    def count_tags(self, attribute: str | None = None) -> int:
        query = select(func.count()).select_from(ProductTag)
        if attribute is not None:
            query = query.where(ProductTag.key == attribute)
        with self.catalog.engine.connect() as connection:
            return int(connection.scalar(query) or 0)


def _calibrate_attribute(
    attribute: TagAttribute,
    index: int,
    scores: dict[int, list[np.ndarray]],
    truths: dict[int, set[str]],
    best: np.ndarray,
    target: float,
) -> Calibration | None:
    if not truths:
        return None
    labelled = list(truths)
    block = np.stack([scores[pid][index] for pid in labelled])
    values, correct = predictions(attribute, block, [truths[pid] for pid in labelled])
    fitted = fit_threshold(values, correct, target)
    threshold = fitted if fitted is not None else attribute.min_score
    return Calibration(
        attribute.name,
        fitted is not None,
        threshold,
        precision_at(values, correct, threshold),
        coverage_at(best, threshold),
        sum(len(truth) for truth in truths.values()),
    )
