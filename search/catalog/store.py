"""The catalog store: products, their images and embeddings, and the revision log, through SQLAlchemy.

Plain values in and out (dataclasses, numpy arrays); sessions never leave the store. The reads are
here; each write is one transaction of ``transactions.py``, run in a write session opened here.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    bindparam,
    cast,
    func,
    literal,
    null,
    select,
    union_all,
    update,
)
from sqlalchemy.orm import sessionmaker

from search.catalog import transactions
from search.catalog.db import WRITE_OPTION, create_db_engine
from search.catalog.filters import tag_field
from search.catalog.lexical import LexicalResult, exact_match_statement, query_words, ranking_statement
from search.catalog.records import (
    Changes,
    ChangesPruned,
    ImageRecord,
    ProductRecord,
    ProductWrite,
    bytes_to_vector,
)
from search.catalog.replicas import ReadRouting, safe_url
from search.catalog.schema import (
    CatalogSpace,
    CatalogState,
    DuplicateMember,
    ImageBlob,
    Product,
    ProductAttribute,
    ProductImage,
    ProductTag,
    RemovedImage,
)
from search.catalog.tag_store import TAG_COLUMNS, TaggerCache, tag_views, tags_of

if TYPE_CHECKING:
    from search.catalog.pgvector.table import VectorRows

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
# One round trip for a page of hits: each product's columns, then (LEFT JOIN) one row per image, and
# (UNION ALL) one row per tag, whose product and image columns are NULL.
_PAGE_IDS = bindparam("ids", expanding=True)
_PRODUCTS_WITH_IMAGES = union_all(
    select(
        *_PRODUCT_COLUMNS,
        ProductImage.product_id,
        *_IMAGE_COLUMNS[1:],
        *(cast(null(), column.type) for column in TAG_COLUMNS),
    )
    .outerjoin(ProductImage, ProductImage.product_id == Product.id)
    .where(Product.id.in_(_PAGE_IDS)),
    select(
        ProductTag.product_id,
        *(cast(null(), column.type) for column in (*_PRODUCT_COLUMNS[1:], *_IMAGE_COLUMNS)),
        *TAG_COLUMNS,
    ).where(ProductTag.product_id.in_(_PAGE_IDS)),
)
_CHUNK = 500  # ids per IN (...) list: under every backend's parameter limit


class Catalog:
    def __init__(self, engine: Engine, routing: ReadRouting | None = None) -> None:
        self.engine = engine  # the primary: every write, and every read without a standby
        self.dialect = engine.dialect.name
        # With a standby (VITRINE_DATABASE_READ_URL), reads go where ``routing`` says (replicas.py).
        self.routing = routing
        self._read = sessionmaker(expire_on_commit=False)
        self._write = sessionmaker(engine.execution_options(**{WRITE_OPTION: True}), expire_on_commit=False)
        self._local = threading.local()  # a connection pinned by reading()
        # The stored taxonomy's tagger: every product write re-tags what it writes, in its transaction.
        self.tags = TaggerCache()
        # The pgvector backend's table writer (search/catalog/pgvector): every write keeps it in step.
        self.vector_rows: VectorRows | None = None

    @classmethod
    def open(cls, url: str, read_url: str | None = None, *, read_your_writes_wait_s: float = 1.0) -> Catalog:
        """The catalog at ``url``; with ``read_url`` (a streaming standby of it) reads go there."""
        engine = create_db_engine(url)
        if not read_url:
            return cls(engine)
        routing = ReadRouting(engine, create_db_engine(read_url), wait_s=read_your_writes_wait_s)
        # What the primary holds now (a migration, the recorded space) is this process's first write:
        # reads wait for the standby to replay it, or go to the primary.
        routing.wrote()
        return cls(engine, routing)

    def _read_engine(self) -> Engine:
        return self.routing.engine() if self.routing is not None else self.engine

    def on_primary(self) -> AbstractContextManager[None]:
        """Reads of this thread inside the block go to the primary: a write plans against what it replaces."""
        return self.routing.on_primary() if self.routing is not None else nullcontext()

    def _wrote(self) -> None:
        if self.routing is not None:
            self.routing.wrote()

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Every read of this thread inside the block shares one connection and one transaction: a
        search's statements are one BEGIN ... ROLLBACK (one snapshot on SQLite) instead of a
        connection checkout, BEGIN and reset each. Reads nest; writes never use it."""
        if getattr(self._local, "connection", None) is not None:
            yield
            return
        with self._read_engine().connect() as connection:
            self._local.connection = connection
            try:
                yield
            finally:
                self._local.connection = None

    @contextmanager
    def writing(self) -> Iterator[Connection]:
        """One write transaction (SQLite: BEGIN IMMEDIATE) for the writers of tags and the taxonomy."""
        with self._write() as session, session.begin():
            yield session.connection()

    def connection(self) -> AbstractContextManager[Connection]:
        """A read connection: the one ``reading()`` pinned, else a fresh one (for the pgvector
        backend's statements, which live with the backend)."""
        return self._connect()

    def _connect(self) -> AbstractContextManager[Connection]:
        pinned = getattr(self._local, "connection", None)
        return nullcontext(pinned) if pinned is not None else self._read_engine().connect()

    def describe_database(self) -> dict[str, object]:
        """Which database serves (for /info and /metrics): the backend, the primary, where reads go."""
        facts: dict[str, object] = {
            "backend": self.dialect,
            "primary": safe_url(self.engine.url.render_as_string(hide_password=False)),
        }
        return facts | (self.routing.describe() if self.routing is not None else {"reads": "primary"})

    def close(self) -> None:
        self.engine.dispose()
        if self.routing is not None:
            self.routing.standby.dispose()

    # Reads --------------------------------------------------------------------------------------------

    def revision(self) -> int:
        # Asked before every search: a Core query on a pooled connection, without ORM bookkeeping.
        with self._connect() as connection:
            return int(connection.scalar(_REVISION_QUERY) or 0)

    def count(self, where: ColumnElement[bool] | None = None) -> int:
        """Products (matching ``where``)."""
        query = select(func.count()).select_from(Product)
        if where is not None:
            query = query.where(where)
        with self._connect() as connection:
            return int(connection.scalar(query) or 0)

    def count_images(self, model: str | None = None) -> int:
        query = select(func.count()).select_from(ProductImage)
        if model is not None:
            query = query.where(ProductImage.embedding_model == model)
        with self._connect() as connection:
            return int(connection.scalar(query) or 0)

    def changed_images(self, revision: int) -> int:
        """Images written after ``revision`` (to choose between catching up and rebuilding)."""
        query = select(func.count()).select_from(ProductImage).where(ProductImage.revision > revision)
        with self._connect() as connection:
            return int(connection.scalar(query) or 0)

    def count_by_model(self) -> dict[str, int]:
        """Images by the model that embedded them."""
        query = select(ProductImage.embedding_model, func.count()).group_by(ProductImage.embedding_model)
        with self._connect() as connection:
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
        """Products by row id with their images, in one statement: plain rows (no ORM objects, no
        embedding blobs) on the hot path."""
        if not len(ids):
            return {}
        with self._connect() as connection:
            rows = connection.execute(_PRODUCTS_WITH_IMAGES, {"ids": [int(i) for i in ids]}).all()
        images: dict[int, list[ImageRecord]] = {}
        products: dict[int, Any] = {}
        tag_rows = []
        for row in rows:
            if row[1] is None:  # a tag row (every product row has its external id)
                tag_rows.append((row[0], *row[15:]))
                continue
            products.setdefault(row[0], row)
            if row[8] is not None:  # the LEFT JOIN's image columns
                images.setdefault(row[0], []).append(ImageRecord(*row[9:15]))
        tags = tag_views(tag_rows)
        return {
            pid: _record(row, sorted(images.get(pid, ()), key=lambda i: i.position), tags.get(pid))
            for pid, row in products.items()
        }

    def _records(
        self, where: ColumnElement[bool], connection: Connection | None = None
    ) -> dict[int, ProductRecord]:
        if connection is None:
            with self._connect() as own:
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
        tags = tags_of(connection, query_ids["ids"])
        return {row[0]: _record(row, images.get(row[0], ()), tags.get(row[0])) for row in rows}

    def list_ids(self, where: ColumnElement[bool], offset: int, limit: int) -> list[int]:
        """Row ids of matching products in external-id order (a stable order for paging)."""
        query = select(Product.id).where(where).order_by(Product.external_id).offset(offset).limit(limit)
        with self._connect() as connection:
            return list(connection.scalars(query))

    def owners(self, image_ids: Sequence[int], where: ColumnElement[bool] | None = None) -> dict[int, int]:
        """Image id -> product row id, for the images that still exist and, with ``where`` (a filter's
        per-row clause), whose product passes it: a filter checked on a search's candidates in the same
        statement that names their products, instead of listing every product the filter allows."""
        if not len(image_ids):
            return {}
        query = _OWNERS_QUERY
        if where is not None:
            # EXISTS per image, not a join: a join lets SQLite start from an indexed filter column (all
            # 10,000 products of a category) instead of the few images given.
            owner_passes = select(Product.id).where(Product.id == ProductImage.product_id, where).exists()
            query = query.where(owner_passes)
        found: dict[int, int] = {}
        with self._connect() as connection:
            for start in range(0, len(image_ids), _CHUNK):
                chunk = [int(i) for i in image_ids[start : start + _CHUNK]]
                found.update((int(i), int(p)) for i, p in connection.execute(query, {"ids": chunk}))
        return found

    def image_ids(self, where: ColumnElement[bool]) -> np.ndarray:
        """Vector ids of the images of the products matching ``where`` (a filter's allow-list)."""
        query = select(ProductImage.id).where(ProductImage.product_id.in_(select(Product.id).where(where)))
        with self._connect() as connection:
            return np.fromiter(connection.scalars(query), dtype=np.int64)

    def product_ids(self, where: ColumnElement[bool]) -> list[int]:
        with self._connect() as connection:
            return list(connection.scalars(select(Product.id).where(where)))

    def lexical(
        self, query: str, where: ColumnElement[bool] | None, limit: int, *, exact: bool = False
    ) -> LexicalResult:
        """The full-text ranking of ``query`` over the products matching ``where`` (at most ``limit``,
        best first), and with ``exact`` the products whose id or ``sku`` attribute is exactly the query
        (in id order): both in one statement."""
        words = query_words(query)
        parts = []
        if words and limit > 0:
            ranked = ranking_statement(self.dialect, words, where, limit).subquery()
            parts.append(select(ranked.c.id, ranked.c.score, null().label("external_id")))
        exact_query = exact_match_statement(query, where) if exact else None
        if exact_query is not None:
            matched = exact_query.subquery()
            parts.append(select(matched.c.id, null().label("score"), matched.c.external_id))
        if not parts:
            return LexicalResult([], [])
        ranking: list[tuple[int, float]] = []
        exact_ids: list[tuple[str, int]] = []
        with self._connect() as connection:
            for pid, score, external_id in connection.execute(union_all(*parts)):
                if external_id is None:
                    ranking.append((int(pid), float(score)))
                else:
                    exact_ids.append((external_id, int(pid)))
        ranking.sort(key=lambda item: (-item[1], item[0]))  # a UNION keeps no order: restore it
        return LexicalResult(ranking, [pid for _, pid in sorted(exact_ids)])

    def sort_values(self, ids: Sequence[int], field: str) -> dict[int, tuple[int, float, str]]:
        """Each product's value of ``field`` as a sort key (search/catalog/sorting.py): (0, number, "")
        for numbers and times, (1, 0, text) for text; products without it are left out."""
        if field in ("created_at", "updated_at"):
            column = getattr(Product, field)
            query = select(Product.id, column, null(), null()).where(column.is_not(None))
            owner = Product.id
        elif field == "category":
            query = select(Product.id, null(), null(), Product.category).where(Product.category.is_not(None))
            owner = Product.id
        else:
            query = select(
                ProductAttribute.product_id, null(), ProductAttribute.number, ProductAttribute.value
            ).where(ProductAttribute.key == field)
            owner = ProductAttribute.product_id
        found: dict[int, tuple[int, float, str]] = {}
        with self._connect() as connection:
            for start in range(0, len(ids), _CHUNK):
                chunk = [int(i) for i in ids[start : start + _CHUNK]]
                for pid, moment, number, text in connection.execute(query.where(owner.in_(chunk))):
                    if moment is not None:
                        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # SQLite: naive UTC
                        found[int(pid)] = (0, moment.timestamp(), "")
                    elif number is not None:
                        found[int(pid)] = (0, float(number), "")
                    else:
                        found[int(pid)] = (1, 0.0, str(text))
        return found

    def embeddings_of(self, external_ids: Sequence[str]) -> dict[str, list[tuple[int, np.ndarray]]]:
        """(image id, vector) of every image of each product that exists, in position order: one
        statement for a composed query's product examples."""
        ids = list(dict.fromkeys(external_ids))
        if not ids:
            return {}
        query = (
            select(Product.external_id, ProductImage.id, ProductImage.embedding)
            .join(ProductImage, ProductImage.product_id == Product.id, isouter=True)
            .where(Product.external_id.in_(ids))
            .order_by(Product.external_id, ProductImage.position)
        )
        found: dict[str, list[tuple[int, np.ndarray]]] = {}
        with self._connect() as connection:
            for external_id, image_id, blob in connection.execute(query):
                images = found.setdefault(external_id, [])
                if image_id is not None:
                    images.append((int(image_id), bytes_to_vector(blob)))
        return found

    def embeddings(self, external_id: str) -> list[tuple[int, np.ndarray]] | None:
        """(image id, vector) of every image of a product, in order; None if there is no such product."""
        query = (
            select(ProductImage.id, ProductImage.embedding)
            .join(Product, Product.id == ProductImage.product_id)
            .where(Product.external_id == external_id)
            .order_by(ProductImage.position)
        )
        with self._connect() as connection:
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
        with self._connect() as connection:
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
            with self._connect() as connection:
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

    def sample_texts(self, limit: int) -> list[str]:
        """Up to ``limit`` distinct titles and categories of random products (text-side tuning queries)."""
        with self._connect() as connection:
            rows = connection.execute(
                select(Product.title, Product.category).order_by(func.random()).limit(limit)
            ).all()
        # Categories first (few, each a query in its own right), then titles; each text once.
        texts = [category for _, category in rows] + [title for title, _ in rows]
        return list(dict.fromkeys(text.strip() for text in texts if text and text.strip()))[:limit]

    def references_image(self, image_file: str) -> bool:
        """Whether any product's stored image is this file."""
        query = select(ProductImage.id).where(ProductImage.image_file == image_file).limit(1)
        # On the primary: asked before a failed write's file is removed, which a lagging standby's
        # answer ("no row names it") could make wrong.
        with self.engine.connect() as connection:
            return connection.execute(query).first() is not None

    def image_blob(self, name: str) -> bytes | None:
        """The bytes of a stored image kept in the database (VITRINE_IMAGE_STORE=database)."""
        with self._connect() as connection:
            return connection.scalar(select(ImageBlob.data).where(ImageBlob.name == name))

    def blob_names(self, names: Sequence[str]) -> set[str]:
        """Which of ``names`` are stored as blobs."""
        found: set[str] = set()
        with self._connect() as connection:
            for start in range(0, len(names), _CHUNK):
                chunk = list(names[start : start + _CHUNK])
                found.update(connection.scalars(select(ImageBlob.name).where(ImageBlob.name.in_(chunk))))
        return found

    def stored_images(self) -> list[tuple[str, str]]:
        """(external id, stored file name) of every image that is a stored copy."""
        query = (
            select(Product.external_id, ProductImage.image_file)
            .join(Product, Product.id == ProductImage.product_id)
            .where(ProductImage.image_file.is_not(None))
        )
        with self._connect() as connection:
            return [(row[0], row[1]) for row in connection.execute(query)]

    def facet_counts(
        self,
        where: ColumnElement[bool] | None,
        fields: Sequence[str],
        limit: int = 100,
        *,
        collapse: bool = False,
    ) -> dict[str, dict[str, int]]:
        """For each field, value -> number of products matching ``where`` (None: all), most frequent first;
        with ``collapse``, the products of one duplicate group count once.

        One statement for every field, so a filter is evaluated once (a CTE read by each field's count),
        not once per facet; without a filter the counts come straight from the indexes.
        """
        if not fields:
            return {}
        matching = select(Product.id).where(where).cte("matching") if where is not None else None
        parts, corrections = [], []
        for name in dict.fromkeys(fields):
            if name == "category":
                value, tests, owner = Product.category, [Product.category.is_not(None)], Product.id
            elif (tag := tag_field(name)) is not None:
                value, tests, owner = ProductTag.value, [ProductTag.key == tag], ProductTag.product_id
            else:
                value, tests = ProductAttribute.value, [ProductAttribute.key == name]
                owner = ProductAttribute.product_id
            if matching is not None:
                tests.append(owner.in_(select(matching.c.id)))
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
            if collapse:
                # Read over grouped products only (few): a group with k members of a value counts
                # k - 1 less. Counting distinct groups over every product cost 4x a plain search.
                surplus = func.count() - func.count(func.distinct(DuplicateMember.group_id))
                # The IN names the small side: without it SQLite walked every product of the facet's
                # index and probed the groups for each (70 ms at 100k products; 20 ms this way).
                grouped = owner.in_(select(DuplicateMember.product_id))
                corrections.append(
                    select(literal(name).label("field"), value.label("value"), surplus.label("n"))
                    .select_from(owner.table.join(DuplicateMember, DuplicateMember.product_id == owner))
                    .where(grouped, *tests)
                    .group_by(value)
                )
        out: dict[str, dict[str, int]] = {name: {} for name in fields}
        with self._connect() as connection:
            for name, found, n in connection.execute(union_all(*parts)):
                out[name][str(found)] = int(n)
            if corrections:
                for name, found, n in connection.execute(union_all(*corrections)):
                    if str(found) in out[name]:
                        out[name][str(found)] -= int(n)
        if corrections:
            out = {
                name: dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))
                for name, counts in out.items()
            }
        return out

    def changes_since(self, revision: int, model: str) -> Changes:
        """Everything written after ``revision``, read in one snapshot."""
        with self._read(bind=self._read_engine()) as session, session.begin():
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
            with self._connect() as connection:
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

    # The embedding space ------------------------------------------------------------------------------

    def recorded_space(self) -> tuple[str, str, int] | None:
        """(fingerprint, name, dimension) of the catalog's recorded embedding space."""
        with self._connect() as connection:
            row = connection.execute(select(CatalogSpace.key, CatalogSpace.name, CatalogSpace.dim)).first()
        return (row.key, row.name, row.dim) if row else None

    def record_space(self, key: str, name: str, dim: int) -> None:
        with self.engine.begin() as connection:
            connection.execute(CatalogSpace.__table__.delete())
            connection.execute(CatalogSpace.__table__.insert().values(id=1, key=key, name=name, dim=dim))
        self._wrote()

    def relabel_model(self, old: str, new: str) -> None:
        """Images labelled ``old`` are labelled ``new`` (the same weights, named by their fingerprint)."""
        with self.engine.begin() as connection:
            connection.execute(
                update(ProductImage).where(ProductImage.embedding_model == old).values(embedding_model=new)
            )
        self._wrote()

    def product_ids_outside(self, model: str) -> list[int]:
        """Row ids of the products with an image not embedded by ``model``, in order."""
        query = (
            select(ProductImage.product_id)
            .where(ProductImage.embedding_model != model)
            .distinct()
            .order_by(ProductImage.product_id)
        )
        with self._connect() as connection:
            return [int(row_id) for row_id in connection.execute(query).scalars()]

    # Writes -------------------------------------------------------------------------------------------

    def upsert(self, writes: Sequence[ProductWrite]) -> tuple[int, list[ProductRecord]]:
        """Insert or update products (and their images) in one transaction; returns (revision, records)."""
        revision, records, _ = self.upsert_reporting(writes)
        return revision, records

    def upsert_reporting(
        self, writes: Sequence[ProductWrite], blobs: Mapping[str, bytes] | None = None
    ) -> tuple[int, list[ProductRecord], list[bool]]:
        """``upsert``, also saying which products were created. Decided inside the transaction, after
        the revision row's lock: of concurrent creates of one id, exactly one is told "created".
        ``blobs``: stored images (name -> bytes) to keep in the database with the rows.
        The written products are re-tagged by the stored taxonomy in the same transaction."""
        with self._write() as session, session.begin():
            revision, ids, created = transactions.upsert(session, writes, blobs, self.tags, self.vector_rows)
            # Read inside the transaction: the commit is the last thing that happens.
            records = self._records(Product.id.in_(ids), session.connection())
        self._wrote()
        return revision, [records[i] for i in ids], created

    def prune_removals(self, through_revision: int) -> int:
        """Forget removals up to ``through_revision`` (indexes older than it will rebuild); returns how many."""
        with self._write() as session, session.begin():
            pruned = transactions.prune_removals(session, through_revision)
        self._wrote()
        return pruned

    def remove(self, external_ids: Iterable[str]) -> tuple[int, list[str]]:
        """Remove products and all their images; returns (revision, the external ids that existed)."""
        with self._write() as session, session.begin():
            removed = transactions.remove(session, list(dict.fromkeys(external_ids)))
        self._wrote()
        return removed


def _record(row: Any, images: Sequence[ImageRecord], tags: dict[str, Any] | None = None) -> ProductRecord:
    """A record of a ``_PRODUCT_COLUMNS`` row, its images and its tags."""
    return ProductRecord(
        id=row[0],
        external_id=row[1],
        title=row[2],
        category=row[3],
        attributes=dict(row[4] or {}),
        images=tuple(images),
        revision=row[5],
        created_at=row[6],
        updated_at=row[7],
        tags=tags or {},
    )


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
