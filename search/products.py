"""Catalog search: products in the database, their vectors in the index, kept in agreement.

``ProductService`` is what the API and the indexer's maintenance commands call. It holds the
in-memory index and brings it up to the database's revision before every read, so a server sees what
an indexer run (another process) committed, without a restart.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np
from PIL import Image

from search.catalog import Catalog, ChangesPruned, MissingEmbedding, ProductRecord, ProductWrite
from search.errors import BadInput, NotFound
from search.image_store import ImageStore, sha256_hex
from search.images import ImageLoader, is_url
from search.index import IndexFileError, IndexSpec, VectorIndex
from search.index.query_log import QueryLog
from search.settings import Settings
from search.vectors import normalise_vector
from search.write_locks import IdLocks

if TYPE_CHECKING:  # the maintenance commands never load torch
    from search.encoder import Encoder

log = logging.getLogger(__name__)

_BAD_ID = re.compile(r"[/\x00-\x1f\x7f]")
RESERVED_FIELDS = ("id", "image", "title", "category")


@dataclass(frozen=True)
class ProductLimits:
    """Size caps on what one product may store (VITRINE_MAX_ID_CHARS, _TITLE_CHARS, _ATTRIBUTES, ...)."""

    max_id_chars: int = 256
    max_title_chars: int = 1000
    max_attributes: int = 100
    max_attribute_chars: int = 2000  # one attribute's value, as JSON text

    @classmethod
    def from_settings(cls, settings: Settings) -> ProductLimits:
        return cls(
            max_id_chars=settings.max_id_chars,
            max_title_chars=settings.max_title_chars,
            max_attributes=settings.max_attributes,
            max_attribute_chars=settings.max_attribute_chars,
        )


def validate_external_id(value: object, max_chars: int = 256) -> str:
    """Product ids are path segments of the API: non-empty, at most ``max_chars`` characters, no '/'."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise BadInput("product id must be a non-empty string")
    if value != value.strip():
        raise BadInput(f"product id {value[:80]!r} must not start or end with whitespace")
    if len(value) > max_chars or _BAD_ID.search(value) or value in (".", "..") or not _is_unicode(value):
        raise BadInput(
            f"product id {value[:80]!r} is invalid: at most {max_chars} characters (VITRINE_MAX_ID_CHARS), "
            "no '/' or control characters"
        )
    return value


def _is_unicode(text: str) -> bool:
    """False for text with a lone UTF-16 surrogate, which no database or tokenizer can store."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def product_view(record: ProductRecord) -> dict[str, Any]:
    return {
        "id": record.external_id,
        "title": record.title,
        "category": record.category,
        "attributes": record.attributes,
        "image": record.image_ref,
        "image_url": f"/products/{quote(record.external_id, safe='')}/image",
        "embedding_model": record.embedding_model,
        "created_at": _utc_iso(record.created_at),
        "updated_at": _utc_iso(record.updated_at),
    }


def _utc_iso(moment: datetime) -> str:
    # SQLite hands back naive datetimes; they were written in UTC.
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()


@dataclass
class Filters:
    category: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, value: object, max_keys: int = 100) -> Filters | None:
        """``{"category": "tile", "color": "beige"}``: category, then attribute equalities."""
        if value is None:
            return None
        if not isinstance(value, dict):
            raise BadInput('filters must be an object like {"category": "tile", "color": "beige"}')
        if len(value) > max_keys:
            # Each key is one more condition in one SQL statement: bounded like a product's attributes.
            raise BadInput(f"filters has {len(value)} keys; the limit is {max_keys} (VITRINE_MAX_ATTRIBUTES)")
        attributes = {}
        for key, item in value.items():
            if key == "category":
                continue
            if not isinstance(item, str | int | float | bool) or item is None:
                raise BadInput(f"filters.{key} must be a string, number or boolean")
            attributes[key] = item
        category = value.get("category")
        if category is not None and not isinstance(category, str):
            raise BadInput("filters.category must be a string")
        return cls(category, attributes)


@dataclass
class VerifyReport:
    ok: bool
    database_products: int
    index_vectors: int
    database_revision: int
    index_file_revision: int | None
    problems: list[str]


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
        rebuild_in_background: bool = False,
        limits: ProductLimits | None = None,
    ) -> None:
        self.catalog = catalog
        self.model = model
        self.index_path = index_path
        self.image_store = image_store
        self.encoder = encoder
        self.images = images
        self.max_k = max_k
        self.index_spec = index_spec or IndexSpec()
        dim = dim or (encoder.info.embedding_dim if encoder else None) or catalog_dim(catalog, model)
        self.dim = dim
        self._refresh_lock = threading.Lock()
        # A server folds changes into a fresh index in a thread; maintenance commands rebuild in the open.
        self.rebuild_in_background = rebuild_in_background
        self._rebuild_thread: threading.Thread | None = None
        self.query_log = QueryLog(index_path.with_name(index_path.name + ".queries.npy"))
        self._id_locks = IdLocks()
        self.limits = limits or ProductLimits()
        # load_index=False leaves the index file untouched (verify inspects it as it is).
        self.index = (
            self._open_index() if load_index else VectorIndex(self.dim or 0, model, 0, self.index_spec)
        )
        if load_index:
            self._rebuild_if_due()  # e.g. an exact index file of a catalog that has outgrown it

    # Index life cycle -----------------------------------------------------------------------------------

    def _open_index(self) -> VectorIndex:
        try:
            index = VectorIndex.load(
                self.index_path, model=self.model, dim=self.dim or 0, spec=self.index_spec
            )
            if index.revision > self.catalog.revision():
                raise IndexFileError("index file is newer than the database (restored from a backup?)")
        except IndexFileError as exc:
            if self.index_path.exists() or self.catalog.count(self.model):
                log.warning("index file unusable (%s); rebuilding it from the database", exc)
            return self._build_from_database(save=True)
        return self._apply_changes(index)

    def _build_from_database(self, save: bool) -> VectorIndex:
        revision = self.catalog.revision()
        if not self.dim:
            return VectorIndex(0, self.model, revision, self.index_spec)
        index = VectorIndex.build(
            self.dim,
            self.model,
            revision,
            self.index_spec,
            self.catalog.iter_embeddings(self.model),
            count=self.catalog.count(self.model),
            path=self.index_path,
            text_samples=self.query_log.sample(self.dim),
        )
        # Writes that landed while we read are picked up by the next refresh (revision is from before).
        if save:
            index.save(self.index_path)
        return index

    def _apply_changes(self, index: VectorIndex) -> VectorIndex:
        """``index`` brought up to the database's revision (a new one if its dimension was unknown)."""
        pending = self.catalog.changed_count(index.revision)
        if pending > max(50_000, len(index) // 2):
            # A bulk load: a fresh build streams from the database instead of holding every change.
            log.info("%d changed products: rebuilding the index from the database", pending)
            return self._apply_changes(self._build_from_database(save=False))
        try:
            changes = self.catalog.changes_since(index.revision, self.model)
        except ChangesPruned as exc:
            log.warning("%s: rebuilding the index from the database", exc)
            return self._apply_changes(self._build_from_database(save=False))
        if changes.revision == index.revision:
            return index
        if changes.removed_ids:
            index.remove(changes.removed_ids)
        if len(changes.upserted_ids):
            if index.dim == 0:  # the first vectors of an empty catalog fix the dimension
                self.dim = int(changes.upserted_vectors.shape[1])
                index = VectorIndex(self.dim, self.model, index.revision, self.index_spec)
            index.upsert(changes.upserted_ids, changes.upserted_vectors)
        index.revision = changes.revision
        return index

    def refresh(self) -> None:
        """Bring the in-memory index up to the database (one small query when nothing changed)."""
        if self.catalog.revision() == self.index.revision:
            return
        with self._refresh_lock:
            self.index = self._apply_changes(self.index)
        self._rebuild_if_due()

    def _rebuild_if_due(self) -> None:
        if self.rebuild_in_background and self.index.wants_rebuild():
            self.start_background_rebuild()

    def rebuild(self) -> int:
        with self._refresh_lock:
            self.index = self._apply_changes(self._build_from_database(save=False))
            self.save_index()
            self.index.remove_stale_parts(self.index_path)
            return len(self.index)

    def start_background_rebuild(self) -> threading.Thread | None:
        """Build a fresh index from the database in a thread; searches keep using the current one.

        The new index catches up with writes made meanwhile (the change log), is saved (its parts first,
        the index file's rename last) and swapped in. If the build fails or the process dies, the
        previous index file and the current in-memory index stay as they were.
        """
        with self._refresh_lock:
            if self._rebuild_thread is not None and self._rebuild_thread.is_alive():
                return None
            self._rebuild_thread = threading.Thread(
                target=self._rebuild_and_swap, name="vitrine-index-rebuild", daemon=True
            )
            self._rebuild_thread.start()
            return self._rebuild_thread

    def _rebuild_and_swap(self) -> None:
        try:
            fresh = self._build_from_database(save=False)
            with self._refresh_lock:
                fresh = self._apply_changes(fresh)
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
        if text_samples is None and self.dim:
            text_samples = self.query_log.sample(self.dim)
        facts = self.index.tune(text_samples)
        self.save_index()
        return facts

    def compact(self) -> int:
        """Save the index at the current revision, then prune the removal log through it.

        Any other process whose index is older than that revision rebuilds it from the database on its
        next refresh instead of catching up: correct, only slower once.
        """
        self.refresh()
        self.save_index()
        return self.catalog.prune_removals(self.index.revision)

    def checkpoint(self) -> None:
        """After a batch job: catch up and save; an index the catalog has outgrown (or whose side index
        has grown large) is rebuilt first, in the open (batch jobs have no background thread)."""
        self.refresh()
        if self.index.wants_rebuild():
            self.rebuild()
        else:
            self.save_index()

    def save_index(self) -> None:
        if self.index.dim:
            self.index.save(self.index_path)
        self.query_log.save()

    # Reads ----------------------------------------------------------------------------------------------

    def get(self, external_id: str) -> ProductRecord:
        record = self.catalog.get(external_id)
        if record is None:
            raise NotFound(f"no product with id {external_id!r}")
        return record

    def search(
        self,
        *,
        text: str | None = None,
        image: str | None = None,
        product_id: str | None = None,
        vector: list[float] | None = None,
        k: int = 10,
        filters: Filters | None = None,
        min_score: float | None = None,
    ) -> dict[str, Any]:
        given = [
            name
            for name, value in (
                ("text", text),
                ("image", image),
                ("product_id", product_id),
                ("vector", vector),
            )
            if value is not None
        ]
        if len(given) != 1:
            raise BadInput("give exactly one of text, image, product_id or vector")
        started = time.perf_counter()
        excluded: list[int] = []
        if text is not None:
            vector = self._require_encoder().embed_texts([text])[0]
            self.query_log.add(vector)
        elif image is not None:
            if self.images is None:
                raise BadInput("search by image needs the image loader")
            picture = self.images.load_many([image], ["image"])[0]
            vector = self._require_encoder().embed_images([picture])[0]
        elif vector is not None:
            vector = self._query_vector(vector)
            self.query_log.add(vector)
        else:
            row_id, vector = self._product_vector(product_id or "")
            excluded = [row_id]
        encoded = time.perf_counter()
        hits = self._nearest(vector, k, filters, min_score, excluded)
        return {
            "results": hits,
            "count": len(hits),
            "took_ms": round((time.perf_counter() - started) * 1000, 3),
            "encode_ms": round((encoded - started) * 1000, 3),
        }

    def similar(
        self, external_id: str, k: int = 10, filters: Filters | None = None, min_score: float | None = None
    ) -> dict[str, Any]:
        return self.search(product_id=external_id, k=k, filters=filters, min_score=min_score)

    def _query_vector(self, values: list[float]) -> np.ndarray:
        """A caller's own embedding (computed elsewhere in this model's space), normalised here."""
        if not self.dim:
            raise BadInput("the catalog is empty: its embedding dimension is not known yet")
        try:
            return normalise_vector(values, self.dim)
        except ValueError as exc:
            raise BadInput(str(exc)) from None

    def _product_vector(self, external_id: str) -> tuple[int, np.ndarray]:
        found = self.catalog.embedding(external_id)
        if found is None:
            raise NotFound(f"no product with id {external_id!r}")
        return found

    def _nearest(
        self,
        vector: np.ndarray,
        k: int,
        filters: Filters | None,
        min_score: float | None,
        excluded: list[int],
    ) -> list[dict[str, Any]]:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.max_k:
            raise BadInput(f"k must be an integer from 1 to {self.max_k}")
        if min_score is not None and not math.isfinite(min_score):
            raise BadInput("min_score must be a finite number")
        self.refresh()
        allowed = None
        if filters is not None and (filters.category is not None or filters.attributes):
            allowed = self.catalog.filter_ids(filters.category, filters.attributes)
        hits = self.index.search(vector, k, allowed_ids=allowed, excluded_ids=excluded, min_score=min_score)
        records = self.catalog.get_by_ids([hit.id for hit in hits])
        # A product removed between the search and this read is simply left out.
        return [{"score": hit.score, **product_view(records[hit.id])} for hit in hits if hit.id in records]

    # Writes ---------------------------------------------------------------------------------------------

    def upsert(self, external_id: str, body: object) -> tuple[str, ProductRecord]:
        """PUT /products/{id}: create or update one product and index it now. Returns (status, record).

        All-or-nothing: every field is validated before anything is written; a stored image file is
        written with the row's commit and removed again if the commit fails. Writes to one id are
        serialised, and created-or-updated is decided inside the transaction.
        """
        external_id = validate_external_id(external_id, self.limits.max_id_chars)
        if not isinstance(body, dict):
            raise BadInput('body must be a JSON object like {"image": ..., "title": ..., "category": ...}')
        if "id" in body and str(body["id"]) != external_id:
            raise BadInput(f"body id {str(body['id'])[:80]!r} differs from the path's {external_id!r}")
        fields = parse_product_fields(body, self.limits)
        write = ProductWrite(external_id=external_id, image_ref="", embedding_model=self.model, **fields)
        image_value = body.get("image")
        data = picture = None
        if image_value is not None:
            if self.images is None:
                raise BadInput("upserting an image needs the image loader")
            # Fetching and decoding happen before the id's lock: a slow URL never holds up other writes.
            data, picture = self.images.map(self.images.load_with_bytes, [image_value], ["image"])[0]
            write.image_sha256 = sha256_hex(data)
            if isinstance(image_value, str) and is_url(image_value.strip()):
                write.image_ref = image_value.strip()
            else:
                write.image_ref, write.image_file = "upload", self.image_store.name_for(data)
        with self._id_locks.hold([external_id]):
            return self._upsert_locked(write, data, picture)

    def _upsert_locked(
        self, write: ProductWrite, data: bytes | None, picture: Image.Image | None
    ) -> tuple[str, ProductRecord]:
        existing = self.catalog.fingerprints([write.external_id]).get(write.external_id)
        if picture is None:
            if existing is None:
                raise BadInput("image is required for a new product")
            write.image_ref, write.image_sha256 = existing.image_ref, existing.image_sha256
            write.image_file = existing.image_file
        elif existing is None or not existing.same_image(write.image_sha256, self.model):
            write.embedding = self._require_encoder().embed_images([picture])[0]
        if existing is not None and write.embedding is None and existing.same_metadata(write):
            return "unchanged", self.get(write.external_id)
        try:
            if write.image_file and data is not None:
                with self.image_store.stored(data, self.catalog.references_image):
                    _, records, created = self.catalog.upsert_reporting([write])
            else:
                _, records, created = self.catalog.upsert_reporting([write])
        except MissingEmbedding:
            # Removed by another process since it was read: without an image there is nothing to embed.
            raise BadInput("image is required for a new product (it was removed meanwhile)") from None
        self.refresh()
        return ("created" if created[0] else "updated"), records[0]

    def remove(self, external_ids: list[str]) -> list[str]:
        with self._id_locks.hold(external_ids):
            _, removed = self.catalog.remove(external_ids)
        self.refresh()
        return removed

    # Health ---------------------------------------------------------------------------------------------

    def verify(self) -> VerifyReport:
        """Prove the index file plus the change log equals the database, vector for vector."""
        problems: list[str] = []
        file_revision: int | None = None
        try:
            index = VectorIndex.load(
                self.index_path, model=self.model, dim=self.dim or 0, spec=self.index_spec
            )
            file_revision = index.revision
            index = self._apply_changes(index)
        except IndexFileError as exc:
            if self.catalog.count(self.model):
                problems.append(f"index file: {exc} (run `python -m indexer rebuild`)")
            index = VectorIndex(self.dim or 0, self.model, 0, self.index_spec)
        db_ids: set[int] = set()
        for ids, vectors in self.catalog.iter_embeddings(self.model):
            db_ids.update(int(i) for i in ids)
            norms = np.linalg.norm(vectors, axis=1)
            for product_id, norm in zip(ids, norms, strict=True):
                if abs(norm - 1) > 1e-3:
                    problems.append(f"product row {product_id}: embedding norm {norm:.4f}, expected 1")
            if file_revision is not None:
                for product_id, vector in zip(ids, vectors, strict=True):
                    stored = index.reconstruct(int(product_id))
                    if stored is None:
                        problems.append(f"product row {product_id} is missing from the index")
                    elif not np.allclose(stored, vector, atol=1e-6):
                        problems.append(f"product row {product_id}: index vector differs from the database")
        index_ids = set(int(i) for i in index.ids())
        extra = index_ids - db_ids
        if extra:
            problems.append(f"{len(extra)} index vectors have no product: {sorted(extra)[:10]}")
        if len(index_ids) != len(index):
            problems.append("the index holds duplicate ids")
        missing_images = [
            ext for ext, name in self.catalog.stored_images() if self.image_store.path(name) is None
        ]
        if missing_images:
            problems.append(f"{len(missing_images)} stored image files are missing: {missing_images[:10]}")
        other_models = {m: n for m, n in self.catalog.count_by_model().items() if m != self.model}
        if other_models:
            problems.append(f"products embedded by other models (re-run the indexer): {other_models}")
        return VerifyReport(
            ok=not problems,
            database_products=len(db_ids),
            index_vectors=len(index),
            database_revision=self.catalog.revision(),
            index_file_revision=file_revision,
            problems=problems[:100],
        )

    def stats(self) -> dict[str, Any]:
        self.refresh()
        return {
            "products": self.catalog.count(),
            "products_by_model": self.catalog.count_by_model(),
            "index_vectors": len(self.index),
            "index_type": self.index_spec.describe(self.index.kind),
            "index": self.index.describe(),
            "embedding_dim": self.dim,
            "model": self.model,
            "database_revision": self.catalog.revision(),
            "index_revision": self.index.revision,
            "index_file": str(self.index_path),
        }

    def _require_encoder(self) -> Encoder:
        if self.encoder is None:
            raise BadInput("this operation needs the model, which is not loaded here")
        return self.encoder


def parse_product_fields(row: dict[str, Any], limits: ProductLimits | None = None) -> dict[str, Any]:
    """title, category and attributes of a manifest row or API body (every other key is an attribute).

    Everything is checked here, before any write: a value that the database would refuse or change
    (NaN, a lone surrogate, an oversized text) is a 400 now rather than a 500 or a silent null later.
    """
    limits = limits or ProductLimits()
    title, category = row.get("title"), row.get("category")
    for name, value, limit, setting in (
        ("title", title, limits.max_title_chars, "VITRINE_MAX_TITLE_CHARS"),
        ("category", category, CATEGORY_CHARS, None),
    ):
        if value is None:
            continue
        if not isinstance(value, str):
            raise BadInput(f"{name} must be a string")
        if len(value) > limit:
            where = f" ({setting})" if setting else ""
            raise BadInput(f"{name} is {len(value)} characters; the limit is {limit}{where}")
        if not _is_unicode(value):
            raise BadInput(f"{name} has a lone UTF-16 surrogate: not valid Unicode")
    attributes = {key: value for key, value in row.items() if key not in RESERVED_FIELDS}
    if len(attributes) > limits.max_attributes:
        raise BadInput(
            f"{len(attributes)} attributes; the limit is {limits.max_attributes} (VITRINE_MAX_ATTRIBUTES)"
        )
    for key, value in attributes.items():
        _check_attribute(key, value, limits.max_attribute_chars)
    return {"title": title or None, "category": category or None, "attributes": attributes}


# The database's column sizes (schema.py): a category is indexed, an attribute key is part of a key.
CATEGORY_CHARS = 256
ATTRIBUTE_KEY_CHARS = 256


def _check_attribute(key: str, value: object, max_chars: int) -> None:
    if not isinstance(key, str) or not key or len(key) > ATTRIBUTE_KEY_CHARS or not _is_unicode(key):
        raise BadInput(
            f"attribute name {str(key)[:80]!r} must be 1 to {ATTRIBUTE_KEY_CHARS} characters of valid Unicode"
        )
    try:
        # What the JSON column will hold: strict (no NaN/Infinity), and encodable as UTF-8.
        text = json.dumps(value, allow_nan=False, ensure_ascii=False)
        text.encode("utf-8")
    except (ValueError, TypeError, RecursionError):
        raise BadInput(
            f"attribute {key[:80]!r} must be JSON: text, a finite number, true/false, null, lists or objects"
        ) from None
    if len(text) > max_chars:
        raise BadInput(
            f"attribute {key[:80]!r} is {len(text)} characters as JSON; the limit is {max_chars} "
            "(VITRINE_MAX_ATTRIBUTE_CHARS)"
        )


def catalog_dim(catalog: Catalog, model: str) -> int | None:
    for _, vectors in catalog.iter_embeddings(model, batch=1):
        return int(vectors.shape[1])
    return None


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
        rebuild_in_background=rebuild_in_background,
        limits=ProductLimits.from_settings(settings),
    )
