"""The catalog store: products, their embeddings and the revision log, through SQLAlchemy.

Plain values in and out (dataclasses, numpy arrays); sessions never leave this module. Every write is
one transaction that takes the next catalog revision, so readers can ask "what changed since R".
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import Engine, delete, func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from search.db import WRITE_OPTION, create_db_engine
from search.schema import CatalogState, Product, ProductAttribute, RemovedProduct, attribute_text, utcnow

FILTERABLE_TYPES = (str, int, float, bool)


@dataclass(frozen=True)
class ProductRecord:
    """A product as the API shows it (no embedding)."""

    id: int
    external_id: str
    title: str | None
    category: str | None
    image_ref: str
    image_file: str | None
    image_sha256: str | None
    attributes: dict[str, Any]
    embedding_model: str
    revision: int
    created_at: datetime
    updated_at: datetime


@dataclass
class ProductWrite:
    """One upsert. ``embedding`` None keeps the stored one (a metadata-only change)."""

    external_id: str
    image_ref: str
    title: str | None = None
    category: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    image_file: str | None = None
    image_sha256: str | None = None
    embedding: np.ndarray | None = None
    embedding_model: str = ""


@dataclass(frozen=True)
class Fingerprint:
    """What decides whether a product must be re-embedded or only updated."""

    image_ref: str
    image_sha256: str | None
    embedding_model: str
    title: str | None
    category: str | None
    attributes: dict[str, Any]
    image_file: str | None

    def same_image(self, image_sha256: str | None, model: str) -> bool:
        """The stored vector is still right: same picture content, embedded by the same model."""
        return (
            image_sha256 is not None and self.image_sha256 == image_sha256 and self.embedding_model == model
        )

    def same_metadata(self, write: ProductWrite) -> bool:
        return (
            self.title == write.title
            and self.category == write.category
            and self.attributes == write.attributes
            and self.image_ref == write.image_ref
        )


class MissingEmbedding(ValueError):
    """A write without an embedding for a product that does not exist (any more)."""


class ChangesPruned(Exception):
    """The removal log no longer reaches back to the asked revision: rebuild instead of catching up."""


@dataclass
class Changes:
    revision: int
    removed_ids: list[int]
    upserted_ids: np.ndarray
    upserted_vectors: np.ndarray


def vector_to_bytes(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def bytes_to_vector(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<f4")


def _record(row: Product) -> ProductRecord:
    return ProductRecord(
        id=row.id,
        external_id=row.external_id,
        title=row.title,
        category=row.category,
        image_ref=row.image_ref,
        image_file=row.image_file,
        image_sha256=row.image_sha256,
        attributes=dict(row.attributes or {}),
        embedding_model=row.embedding_model,
        revision=row.revision,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


# The columns of a ProductRecord, in its field order.
_RECORD_QUERY = select(
    Product.id,
    Product.external_id,
    Product.title,
    Product.category,
    Product.image_ref,
    Product.image_file,
    Product.image_sha256,
    Product.attributes,
    Product.embedding_model,
    Product.revision,
    Product.created_at,
    Product.updated_at,
)
_REVISION_QUERY = select(CatalogState.revision).where(CatalogState.id == 1)


class Catalog:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._read = sessionmaker(engine, expire_on_commit=False)
        self._write = sessionmaker(engine.execution_options(**{WRITE_OPTION: True}), expire_on_commit=False)

    @classmethod
    def open(cls, url: str) -> Catalog:
        return cls(create_db_engine(url))

    def close(self) -> None:
        self.engine.dispose()

    # Reads --------------------------------------------------------------------------------------------

    def revision(self) -> int:
        # Asked before every search: a Core query on a pooled connection, without ORM bookkeeping.
        with self.engine.connect() as connection:
            return int(connection.scalar(_REVISION_QUERY) or 0)

    def count(self, model: str | None = None) -> int:
        query = select(func.count()).select_from(Product)
        if model is not None:
            query = query.where(Product.embedding_model == model)
        with self._read() as session:
            return int(session.scalar(query) or 0)

    def changed_count(self, revision: int) -> int:
        """Products written after ``revision`` (to choose between catching up and rebuilding)."""
        with self.engine.connect() as connection:
            query = select(func.count()).select_from(Product).where(Product.revision > revision)
            return int(connection.scalar(query) or 0)

    def count_by_model(self) -> dict[str, int]:
        query = select(Product.embedding_model, func.count()).group_by(Product.embedding_model)
        with self._read() as session:
            return {model: int(n) for model, n in session.execute(query)}

    def get(self, external_id: str) -> ProductRecord | None:
        with self.engine.connect() as connection:
            row = connection.execute(_RECORD_QUERY.where(Product.external_id == external_id)).first()
            return ProductRecord(*row) if row else None

    def get_by_ids(self, ids: Sequence[int]) -> dict[int, ProductRecord]:
        """Search results' products: plain rows (no ORM objects, no embedding blobs) on the hot path."""
        if not ids:
            return {}
        with self.engine.connect() as connection:
            rows = connection.execute(_RECORD_QUERY.where(Product.id.in_(list(ids))))
            return {row[0]: ProductRecord(*row) for row in rows}

    def embedding(self, external_id: str) -> tuple[int, np.ndarray] | None:
        with self._read() as session:
            row = session.execute(
                select(Product.id, Product.embedding).where(Product.external_id == external_id)
            ).first()
            return (row[0], bytes_to_vector(row[1])) if row else None

    def stored_images(self) -> list[tuple[str, str]]:
        """(external id, stored file name) of every product whose image is a stored copy."""
        query = select(Product.external_id, Product.image_file).where(Product.image_file.is_not(None))
        with self._read() as session:
            return [(row[0], row[1]) for row in session.execute(query)]

    def references_image(self, image_file: str) -> bool:
        """Whether any product's stored image is this file."""
        query = select(Product.id).where(Product.image_file == image_file).limit(1)
        with self.engine.connect() as connection:
            return connection.execute(query).first() is not None

    def fingerprints(self, external_ids: Iterable[str]) -> dict[str, Fingerprint]:
        ids = list(external_ids)
        found: dict[str, Fingerprint] = {}
        columns = (
            Product.external_id,
            Product.image_ref,
            Product.image_sha256,
            Product.embedding_model,
            Product.title,
            Product.category,
            Product.attributes,
            Product.image_file,
        )
        with self._read() as session:
            for start in range(0, len(ids), 500):  # stay under SQL parameter limits
                query = select(*columns).where(Product.external_id.in_(ids[start : start + 500]))
                for row in session.execute(query):
                    found[row[0]] = Fingerprint(
                        row[1], row[2], row[3], row[4], row[5], dict(row[6] or {}), row[7]
                    )
        return found

    def embeddings_of(self, external_ids: Sequence[str], model: str) -> dict[str, bytes]:
        """Stored embeddings (raw float32 bytes) of those products that ``model`` embedded."""
        found: dict[str, bytes] = {}
        ids = list(external_ids)
        with self._read() as session:
            for start in range(0, len(ids), 500):  # stay under SQL parameter limits
                query = select(Product.external_id, Product.embedding).where(
                    Product.external_id.in_(ids[start : start + 500]), Product.embedding_model == model
                )
                found.update((row[0], row[1]) for row in session.execute(query))
        return found

    def iter_products(self, model: str, batch: int = 10_000) -> Iterator[list[tuple[ProductRecord, bytes]]]:
        """Every product of ``model`` with its embedding bytes, in row id order, in batches."""
        last = 0
        while True:
            with self.engine.connect() as connection:
                rows = connection.execute(
                    select(*_RECORD_QUERY.selected_columns, Product.embedding)
                    .where(Product.embedding_model == model, Product.id > last)
                    .order_by(Product.id)
                    .limit(batch)
                ).all()
            if not rows:
                return
            last = rows[-1][0]
            yield [(ProductRecord(*row[:-1]), row[-1]) for row in rows]

    def filter_ids(self, category: str | None = None, attributes: dict[str, Any] | None = None) -> list[int]:
        """Row ids of products matching a category and attribute equalities."""
        query = select(Product.id)
        if category is not None:
            query = query.where(Product.category == category)
        for key, value in (attributes or {}).items():
            text = attribute_text(value)
            if text is None:
                return []  # a value that no product can hold as a filterable attribute
            matching = select(ProductAttribute.product_id).where(
                ProductAttribute.key == key, ProductAttribute.value == text
            )
            query = query.where(Product.id.in_(matching))
        with self._read() as session:
            return list(session.scalars(query))

    def changes_since(self, revision: int, model: str) -> Changes:
        """Everything written after ``revision``, read in one snapshot."""
        with self._read() as session, session.begin():
            state = session.execute(
                select(CatalogState.revision, CatalogState.pruned_revision).where(CatalogState.id == 1)
            ).one()
            current, pruned = int(state[0]), int(state[1])
            if revision < pruned:
                raise ChangesPruned(f"removals up to revision {pruned} were pruned; asked from {revision}")
            removed = list(
                session.scalars(select(RemovedProduct.product_id).where(RemovedProduct.revision > revision))
            )
            rows = session.execute(
                select(Product.id, Product.embedding, Product.embedding_model).where(
                    Product.revision > revision
                )
            ).all()
        kept = [(pid, blob) for pid, blob, row_model in rows if row_model == model]
        # Rows re-embedded by another model leave this model's index.
        removed += [pid for pid, _, row_model in rows if row_model != model]
        return Changes(current, removed, *_stack(kept))

    def iter_embeddings(self, model: str, batch: int = 10_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) of all products embedded by ``model``, in id order, in batches."""
        last = 0
        while True:
            with self._read() as session:
                rows = session.execute(
                    select(Product.id, Product.embedding)
                    .where(Product.embedding_model == model, Product.id > last)
                    .order_by(Product.id)
                    .limit(batch)
                ).all()
            if not rows:
                return
            last = rows[-1][0]
            yield _stack(rows)

    # Writes -------------------------------------------------------------------------------------------

    def upsert(self, writes: Sequence[ProductWrite]) -> tuple[int, list[ProductRecord]]:
        """Insert or update products in one transaction; returns (revision, records)."""
        revision, records, _ = self.upsert_reporting(writes)
        return revision, records

    def upsert_reporting(self, writes: Sequence[ProductWrite]) -> tuple[int, list[ProductRecord], list[bool]]:
        """``upsert``, also saying which products were created. Decided inside the transaction, after
        the revision row's lock: of concurrent creates of one id, exactly one is told "created"."""
        now = utcnow()
        created: list[bool] = []
        with self._write() as session, session.begin():
            revision = _next_revision(session)
            out: list[Product] = []
            for write in writes:
                row = session.scalar(select(Product).where(Product.external_id == write.external_id))
                created.append(row is None)
                if row is None:
                    if write.embedding is None:
                        raise MissingEmbedding(f"new product {write.external_id!r} needs an embedding")
                    row = Product(external_id=write.external_id, created_at=now)
                    session.add(row)
                row.title = write.title
                row.category = write.category
                row.attributes = dict(write.attributes)
                row.image_ref = write.image_ref
                row.image_file = write.image_file
                row.image_sha256 = write.image_sha256
                if write.embedding is not None:
                    row.embedding = vector_to_bytes(write.embedding)
                    row.embedding_dim = int(write.embedding.shape[-1])
                    row.embedding_model = write.embedding_model
                row.revision = revision
                row.updated_at = now
                out.append(row)
            session.flush()  # new rows get their ids
            _replace_attributes(session, out)
            return revision, [_record(row) for row in out], created

    def prune_removals(self, through_revision: int) -> int:
        """Forget removals up to ``through_revision`` (indexes older than it will rebuild); returns how many."""
        with self._write() as session, session.begin():
            state = session.get(CatalogState, 1)
            through_revision = min(through_revision, state.revision)
            deleted = session.execute(
                delete(RemovedProduct).where(RemovedProduct.revision <= through_revision)
            )
            state.pruned_revision = max(state.pruned_revision, through_revision)
            return int(deleted.rowcount or 0)

    def remove(self, external_ids: Iterable[str]) -> tuple[int, list[str]]:
        """Remove products; returns (revision, the external ids that existed)."""
        ids = list(dict.fromkeys(external_ids))
        with self._write() as session, session.begin():
            revision = _next_revision(session)
            rows = session.execute(
                select(Product.id, Product.external_id).where(Product.external_id.in_(ids))
            ).all()
            if rows:
                row_ids = [row[0] for row in rows]
                session.execute(delete(ProductAttribute).where(ProductAttribute.product_id.in_(row_ids)))
                session.execute(delete(Product).where(Product.id.in_(row_ids)))
                session.add_all(
                    RemovedProduct(product_id=pid, external_id=ext, revision=revision, removed_at=utcnow())
                    for pid, ext in rows
                )
            return revision, [ext for _, ext in rows]


def _next_revision(session: Session) -> int:
    # The first statement of every write transaction: it takes the write lock, so revisions are
    # handed out in commit order and no reader can see revision R before R's rows.
    session.execute(
        update(CatalogState).where(CatalogState.id == 1).values(revision=CatalogState.revision + 1)
    )
    return int(session.scalar(select(CatalogState.revision).where(CatalogState.id == 1)))


def _replace_attributes(session: Session, rows: Sequence[Product]) -> None:
    session.execute(delete(ProductAttribute).where(ProductAttribute.product_id.in_([row.id for row in rows])))
    values = [
        {"product_id": row.id, "key": key, "value": text}
        for row in rows
        for key, value in (row.attributes or {}).items()
        if len(key) <= 256 and (text := attribute_text(value)) is not None
    ]
    if values:
        session.execute(insert(ProductAttribute), values)


def _stack(rows: Sequence[tuple[int, bytes]]) -> tuple[np.ndarray, np.ndarray]:
    if not rows:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    vectors = np.stack([bytes_to_vector(row[1]) for row in rows]).astype(np.float32)
    return ids, vectors
