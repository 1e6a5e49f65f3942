"""The catalog store: products, their images and embeddings, and the revision log, through SQLAlchemy.

Plain values in and out (dataclasses, numpy arrays); sessions never leave this module. Every write is
one transaction that takes the next catalog revision, so readers can ask "what changed since R". The
attribute rows (filters) and the full-text row (lexical search) are written in that same transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    bindparam,
    delete,
    func,
    insert,
    literal,
    select,
    union_all,
    update,
)
from sqlalchemy.orm import Session, sessionmaker

from search.catalog.records import (
    Changes,
    ChangesPruned,
    ImageRecord,
    ProductRecord,
    ProductWrite,
    bytes_to_vector,
    vector_to_bytes,
)
from search.db import WRITE_OPTION, create_db_engine
from search.errors import VitrineError
from search.schema import (
    CatalogState,
    Product,
    ProductAttribute,
    ProductImage,
    RemovedImage,
    attribute_rows,
    search_document,
    utcnow,
)

_PRODUCT_COLUMNS = (
    Product.id,
    Product.external_id,
    Product.title,
    Product.category,
    Product.attributes,
    Product.revision,
    Product.created_at,
    Product.updated_at,
)
_IMAGE_COLUMNS = (
    ProductImage.product_id,
    ProductImage.id,
    ProductImage.position,
    ProductImage.image_ref,
    ProductImage.image_file,
    ProductImage.image_sha256,
    ProductImage.embedding_model,
)
_REVISION_QUERY = select(CatalogState.revision).where(CatalogState.id == 1)
# The per-search reads, built once: an expanding IN takes the ids as a parameter (building the
# statement per search was a third of the service path's Python time).
_OWNERS_QUERY = select(ProductImage.id, ProductImage.product_id).where(
    ProductImage.id.in_(bindparam("ids", expanding=True))
)
_PRODUCTS_BY_ID = select(*_PRODUCT_COLUMNS).where(Product.id.in_(bindparam("ids", expanding=True)))
_IMAGES_OF_PRODUCTS = (
    select(*_IMAGE_COLUMNS)
    .where(ProductImage.product_id.in_(bindparam("ids", expanding=True)))
    .order_by(ProductImage.product_id, ProductImage.position)
)
_CHUNK = 500  # ids per IN (...) list: under every backend's parameter limit


class ConcurrentChange(VitrineError):
    status = 409


class MissingEmbedding(ValueError):
    """A write without vectors for a product that does not exist (any more)."""


class Catalog:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
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

    def count(self, where: ColumnElement[bool] | None = None) -> int:
        """Products (matching ``where``)."""
        query = select(func.count()).select_from(Product)
        if where is not None:
            query = query.where(where)
        with self.engine.connect() as connection:
            return int(connection.scalar(query) or 0)

    def count_images(self, model: str | None = None) -> int:
        query = select(func.count()).select_from(ProductImage)
        if model is not None:
            query = query.where(ProductImage.embedding_model == model)
        with self.engine.connect() as connection:
            return int(connection.scalar(query) or 0)

    def changed_images(self, revision: int) -> int:
        """Images written after ``revision`` (to choose between catching up and rebuilding)."""
        query = select(func.count()).select_from(ProductImage).where(ProductImage.revision > revision)
        with self.engine.connect() as connection:
            return int(connection.scalar(query) or 0)

    def count_by_model(self) -> dict[str, int]:
        """Images by the model that embedded them."""
        query = select(ProductImage.embedding_model, func.count()).group_by(ProductImage.embedding_model)
        with self.engine.connect() as connection:
            return {model: int(n) for model, n in connection.execute(query)}

    def get(self, external_id: str) -> ProductRecord | None:
        return self.get_many([external_id]).get(external_id)

    def get_many(self, external_ids: Iterable[str]) -> dict[str, ProductRecord]:
        """Products by external id (those that exist)."""
        ids = list(dict.fromkeys(external_ids))
        found: dict[str, ProductRecord] = {}
        for start in range(0, len(ids), _CHUNK):
            where = Product.external_id.in_(ids[start : start + _CHUNK])
            found.update((r.external_id, r) for r in self._records(where).values())
        return found

    def get_by_ids(self, ids: Sequence[int]) -> dict[int, ProductRecord]:
        """Products by row id: plain rows (no ORM objects, no embedding blobs) on the hot path."""
        if not len(ids):
            return {}
        with self.engine.connect() as connection:
            rows = connection.execute(_PRODUCTS_BY_ID, {"ids": [int(i) for i in ids]}).all()
            return self._records_of(rows, connection)

    def _records(
        self, where: ColumnElement[bool], connection: Connection | None = None
    ) -> dict[int, ProductRecord]:
        if connection is None:
            with self.engine.connect() as own:
                return self._records(where, own)
        return self._records_of(connection.execute(select(*_PRODUCT_COLUMNS).where(where)).all(), connection)

    def _records_of(self, rows: Sequence[Any], connection: Connection) -> dict[int, ProductRecord]:
        """Records of product ``rows`` (``_PRODUCT_COLUMNS``) with their images, read on ``connection``."""
        if not rows:
            return {}
        images: dict[int, list[ImageRecord]] = {}
        query_ids = {"ids": [row[0] for row in rows]}
        for product_id, *image in connection.execute(_IMAGES_OF_PRODUCTS, query_ids):
            images.setdefault(product_id, []).append(ImageRecord(*image))
        return {
            row[0]: ProductRecord(
                id=row[0],
                external_id=row[1],
                title=row[2],
                category=row[3],
                attributes=dict(row[4] or {}),
                images=tuple(images.get(row[0], ())),
                revision=row[5],
                created_at=row[6],
                updated_at=row[7],
            )
            for row in rows
        }

    def list_ids(self, where: ColumnElement[bool], offset: int, limit: int) -> list[int]:
        """Row ids of matching products in external-id order (a stable order for paging)."""
        query = select(Product.id).where(where).order_by(Product.external_id).offset(offset).limit(limit)
        with self.engine.connect() as connection:
            return list(connection.scalars(query))

    def image_owners(self, image_ids: Sequence[int]) -> dict[int, int]:
        """Image id -> product row id, for the images that still exist."""
        if not len(image_ids):
            return {}
        with self.engine.connect() as connection:
            rows = connection.execute(_OWNERS_QUERY, {"ids": [int(i) for i in image_ids]})
            return {int(i): int(p) for i, p in rows}

    def images_passing(self, image_ids: Sequence[int], where: ColumnElement[bool]) -> set[int]:
        """Which of ``image_ids`` belong to a product matching ``where`` (a filter's per-row clause):
        a filter checked on a search's candidates instead of listing every product it allows."""
        if not len(image_ids):
            return set()
        # EXISTS per image, not a join: a join lets SQLite start from an indexed filter column (all
        # 10,000 products of a category) instead of the few images given.
        owner_passes = select(Product.id).where(Product.id == ProductImage.product_id, where).exists()
        query = select(ProductImage.id).where(
            ProductImage.id.in_(bindparam("ids", expanding=True)), owner_passes
        )
        found: set[int] = set()
        with self.engine.connect() as connection:
            for start in range(0, len(image_ids), _CHUNK):
                chunk = [int(i) for i in image_ids[start : start + _CHUNK]]
                found.update(connection.scalars(query, {"ids": chunk}))
        return found

    def image_ids(self, where: ColumnElement[bool]) -> np.ndarray:
        """Vector ids of the images of the products matching ``where`` (a filter's allow-list)."""
        query = select(ProductImage.id).where(ProductImage.product_id.in_(select(Product.id).where(where)))
        with self.engine.connect() as connection:
            return np.fromiter(connection.scalars(query), dtype=np.int64)

    def product_ids(self, where: ColumnElement[bool]) -> list[int]:
        with self.engine.connect() as connection:
            return list(connection.scalars(select(Product.id).where(where)))

    def exact_matches(self, text: str, where: ColumnElement[bool]) -> list[int]:
        """Products whose id or ``sku`` attribute is exactly ``text`` (as typed, upper- or lower-case)."""
        value = text.strip()
        if not value or len(value) > 256:
            return []
        variants = list(dict.fromkeys([value, value.upper(), value.lower()]))
        by_sku = select(ProductAttribute.product_id).where(
            ProductAttribute.key == "sku", ProductAttribute.value.in_(variants)
        )
        query = (
            select(Product.id)
            .where((Product.external_id.in_(variants)) | Product.id.in_(by_sku), where)
            .order_by(Product.external_id)
            .limit(10)
        )
        with self.engine.connect() as connection:
            return list(connection.scalars(query))

    def embeddings(self, external_id: str) -> list[tuple[int, np.ndarray]] | None:
        """(image id, vector) of every image of a product, in order; None if there is no such product."""
        query = (
            select(ProductImage.id, ProductImage.embedding)
            .join(Product, Product.id == ProductImage.product_id)
            .where(Product.external_id == external_id)
            .order_by(ProductImage.position)
        )
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
            if (
                not rows
                and connection.scalar(select(Product.id).where(Product.external_id == external_id)) is None
            ):
                return None
        return [(int(i), bytes_to_vector(blob)) for i, blob in rows]

    def vector_bytes(self, product_ids: Sequence[int]) -> dict[int, bytes]:
        """Image id -> stored vector bytes, for every image of the given products."""
        found: dict[int, bytes] = {}
        ids = [int(i) for i in product_ids]
        with self.engine.connect() as connection:
            for start in range(0, len(ids), _CHUNK):
                query = select(ProductImage.id, ProductImage.embedding).where(
                    ProductImage.product_id.in_(ids[start : start + _CHUNK])
                )
                found.update((int(i), blob) for i, blob in connection.execute(query))
        return found

    def iter_products(
        self, model: str, batch: int = 10_000
    ) -> Iterator[list[tuple[ProductRecord, ImageRecord, bytes]]]:
        """(product, image, vector bytes) for every image of ``model``, by product then position."""
        last = 0
        while True:
            with self.engine.connect() as connection:
                ids = list(
                    connection.scalars(
                        select(Product.id).where(Product.id > last).order_by(Product.id).limit(batch)
                    )
                )
                if not ids:
                    return
                records = self._records(Product.id.in_(ids), connection)
                blobs = dict(
                    connection.execute(
                        select(ProductImage.id, ProductImage.embedding).where(
                            ProductImage.product_id.in_(ids), ProductImage.embedding_model == model
                        )
                    ).all()
                )
            last = ids[-1]
            rows = [
                (records[pid], image, blobs[image.id])
                for pid in ids
                for image in records[pid].images
                if image.id in blobs
            ]
            if rows:
                yield rows

    def references_image(self, image_file: str) -> bool:
        """Whether any product's stored image is this file."""
        query = select(ProductImage.id).where(ProductImage.image_file == image_file).limit(1)
        with self.engine.connect() as connection:
            return connection.execute(query).first() is not None

    def stored_images(self) -> list[tuple[str, str]]:
        """(external id, stored file name) of every image that is a stored copy."""
        query = (
            select(Product.external_id, ProductImage.image_file)
            .join(Product, Product.id == ProductImage.product_id)
            .where(ProductImage.image_file.is_not(None))
        )
        with self.engine.connect() as connection:
            return [(row[0], row[1]) for row in connection.execute(query)]

    def facet_counts(
        self, where: ColumnElement[bool] | None, fields: Sequence[str], limit: int = 100
    ) -> dict[str, dict[str, int]]:
        """For each field, value -> number of products matching ``where`` (None: all), most frequent first.

        One statement for every field, so a filter is evaluated once (a CTE read by each field's count),
        not once per facet; without a filter the counts come straight from the indexes.
        """
        if not fields:
            return {}
        matching = select(Product.id).where(where).cte("matching") if where is not None else None
        parts = []
        for name in dict.fromkeys(fields):
            if name == "category":
                value, tests = Product.category, [Product.category.is_not(None)]
                if matching is not None:
                    tests.append(Product.id.in_(select(matching.c.id)))
            else:
                value, tests = ProductAttribute.value, [ProductAttribute.key == name]
                if matching is not None:
                    tests.append(ProductAttribute.product_id.in_(select(matching.c.id)))
            count = func.count()
            top = (
                select(literal(name).label("field"), value.label("value"), count.label("n"))
                .where(*tests)
                .group_by(value)
                .order_by(count.desc(), value)
                .limit(limit)
                .subquery()
            )
            parts.append(select(top.c.field, top.c.value, top.c.n))
        out: dict[str, dict[str, int]] = {name: {} for name in fields}
        with self.engine.connect() as connection:
            for name, found, n in connection.execute(union_all(*parts)):
                out[name][str(found)] = int(n)
        return out

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
                session.scalars(select(RemovedImage.image_id).where(RemovedImage.revision > revision))
            )
            rows = session.execute(
                select(ProductImage.id, ProductImage.embedding, ProductImage.embedding_model).where(
                    ProductImage.revision > revision
                )
            ).all()
        kept = [(image_id, blob) for image_id, blob, row_model in rows if row_model == model]
        # Images re-embedded by another model leave this model's index.
        removed += [image_id for image_id, _, row_model in rows if row_model != model]
        return Changes(current, removed, *_stack(kept))

    def iter_embeddings(self, model: str, batch: int = 50_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(image ids, vectors) of all images embedded by ``model``, in id order, in batches."""
        last = 0
        while True:
            with self.engine.connect() as connection:
                rows = connection.execute(
                    select(ProductImage.id, ProductImage.embedding)
                    .where(ProductImage.embedding_model == model, ProductImage.id > last)
                    .order_by(ProductImage.id)
                    .limit(batch)
                ).all()
            if not rows:
                return
            last = rows[-1][0]
            yield _stack(rows)

    # Writes -------------------------------------------------------------------------------------------

    def upsert(self, writes: Sequence[ProductWrite]) -> tuple[int, list[ProductRecord]]:
        """Insert or update products (and their images) in one transaction; returns (revision, records)."""
        revision, records, _ = self.upsert_reporting(writes)
        return revision, records

    def upsert_reporting(self, writes: Sequence[ProductWrite]) -> tuple[int, list[ProductRecord], list[bool]]:
        """``upsert``, also saying which products were created. Decided inside the transaction, after
        the revision row's lock: of concurrent creates of one id, exactly one is told "created"."""
        now = utcnow()
        created: list[bool] = []
        with self._write() as session, session.begin():
            revision = _next_revision(session)
            rows: list[Product] = []
            for write in writes:
                row = session.scalar(select(Product).where(Product.external_id == write.external_id))
                created.append(row is None)
                if row is None:
                    if not write.images or any(image.keep_id is not None for image in write.images):
                        raise MissingEmbedding(f"new product {write.external_id!r} needs its images embedded")
                    row = Product(external_id=write.external_id, created_at=now)
                    session.add(row)
                row.title = write.title
                row.category = write.category
                row.attributes = dict(write.attributes)
                row.search_text = search_document(
                    write.external_id, write.title, write.category, write.attributes
                )
                row.revision = revision
                row.updated_at = now
                session.flush()  # a new row gets its id
                rows.append(row)
                if write.images is not None:
                    _replace_images(session, row, write, revision)
            _replace_attributes(session, rows)
            session.flush()
            ids = [row.id for row in rows]
            # Read inside the transaction: the commit is the last thing that happens.
            records = self._records(Product.id.in_(ids), session.connection())
        return revision, [records[i] for i in ids], created

    def prune_removals(self, through_revision: int) -> int:
        """Forget removals up to ``through_revision`` (indexes older than it will rebuild); returns how many."""
        with self._write() as session, session.begin():
            state = session.get(CatalogState, 1)
            through_revision = min(through_revision, state.revision)
            deleted = session.execute(delete(RemovedImage).where(RemovedImage.revision <= through_revision))
            state.pruned_revision = max(state.pruned_revision, through_revision)
            return int(deleted.rowcount or 0)

    def remove(self, external_ids: Iterable[str]) -> tuple[int, list[str]]:
        """Remove products and all their images; returns (revision, the external ids that existed)."""
        ids = list(dict.fromkeys(external_ids))
        with self._write() as session, session.begin():
            revision = _next_revision(session)
            rows = session.execute(
                select(Product.id, Product.external_id).where(Product.external_id.in_(ids))
            ).all()
            if rows:
                row_ids = [row[0] for row in rows]
                external = dict(rows)
                images = session.execute(
                    select(ProductImage.id, ProductImage.product_id).where(
                        ProductImage.product_id.in_(row_ids)
                    )
                ).all()
                _log_removals(session, [(image_id, external[pid]) for image_id, pid in images], revision)
                session.execute(delete(ProductImage).where(ProductImage.product_id.in_(row_ids)))
                session.execute(delete(ProductAttribute).where(ProductAttribute.product_id.in_(row_ids)))
                session.execute(delete(Product).where(Product.id.in_(row_ids)))
            return revision, [ext for _, ext in rows]


def _next_revision(session: Session) -> int:
    # The first statement of every write transaction: it takes the write lock, so revisions are
    # handed out in commit order and no reader can see revision R before R's rows.
    session.execute(
        update(CatalogState).where(CatalogState.id == 1).values(revision=CatalogState.revision + 1)
    )
    return int(session.scalar(select(CatalogState.revision).where(CatalogState.id == 1)))


def _log_removals(session: Session, images: Sequence[tuple[int, str]], revision: int) -> None:
    if images:
        now = utcnow()
        session.execute(
            insert(RemovedImage),
            [
                {"image_id": image_id, "external_id": ext, "revision": revision, "removed_at": now}
                for image_id, ext in images
            ],
        )


def _replace_images(session: Session, row: Product, write: ProductWrite, revision: int) -> None:
    """The product's images become exactly ``write.images``: kept ones keep their vector (and id)."""
    stored = {
        image.id: image
        for image in session.scalars(select(ProductImage).where(ProductImage.product_id == row.id))
    }
    kept = {image.keep_id for image in write.images or () if image.keep_id is not None}
    missing = kept - set(stored)
    if missing:
        # Planned against images another writer has since replaced: the plan is stale.
        raise ConcurrentChange(f"product {row.external_id!r} changed while it was being written; retry")
    dropped = [image_id for image_id in stored if image_id not in kept]
    _log_removals(session, [(image_id, row.external_id) for image_id in dropped], revision)
    for image_id in dropped:
        session.delete(stored[image_id])
    for position, image in enumerate(write.images or ()):
        if image.keep_id is not None:
            target = stored[image.keep_id]
        else:
            if image.embedding is None:
                raise ValueError(f"a new image of {row.external_id!r} needs an embedding")
            target = ProductImage(product_id=row.id)
            session.add(target)
        target.position = position
        target.image_ref = image.image_ref
        target.image_file = image.image_file
        target.image_sha256 = image.image_sha256
        if image.embedding is not None:
            target.embedding = vector_to_bytes(image.embedding)
            target.embedding_dim = int(image.embedding.shape[-1])
            target.embedding_model = image.embedding_model
            target.revision = revision
        elif target.revision is None:
            raise ValueError(f"image of {row.external_id!r} has no vector")


def _replace_attributes(session: Session, rows: Sequence[Product]) -> None:
    session.execute(delete(ProductAttribute).where(ProductAttribute.product_id.in_([row.id for row in rows])))
    values = [item for row in rows for item in attribute_rows(row.id, row.attributes or {})]
    if values:
        session.execute(insert(ProductAttribute), values)


def _stack(rows: Sequence[tuple[int, bytes]]) -> tuple[np.ndarray, np.ndarray]:
    if not rows:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    blobs = [row[1] for row in rows]
    if len({len(blob) for blob in blobs}) != 1:
        return ids, np.stack([bytes_to_vector(blob) for blob in blobs]).astype(np.float32)  # raises
    # One copy of the joined blobs instead of a small array per row: a million rows are read in builds.
    vectors = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(rows), -1)
    return ids, vectors.astype(np.float32)
